"""``mlx-scdpo sample``: initial solutions of training problems, graded, and naive DPO pairs.

Problems are sampled in rounds, batched through ``BatchGenerator``, until each has at
least ``min_correct`` correct and ``min_wrong`` wrong distinct solutions or its budget of
``budget`` samples is spent (reference: 1-4 each, ~100 samples). Filters (reference):
a correct solution whose text contains "error" or "apolog" (a traceback, an apology) is
not used; duplicates (same text up to whitespace) are dropped.

Output, appended one line per finished problem (resumable by ``problem_id``):
``OUT/solutions.jsonl`` with the prompt, its token ids, and every kept sample's text,
token ids *as generated* (never re-tokenized), extracted answer and verdict. Naive pairs
(first correct x first ``naive_wrong`` wrong; reference 1x1 GSM8K, 1x2 MATH) go to
``OUT/pairs_naive.jsonl`` in the format of ``mlx_scdpo.method.pairs``. A wrong solution cut off by
``max_tokens`` (or the code-execution budget) is no rejected side, and does not count as
one of the ``min_wrong`` wanted, unless ``include_truncated``.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from eval.blocks import block_format, grade_format
from eval.data import load_problems
from eval.score import grade_sample
from mlx_scdpo.config import GenerationArgs, check_values
from mlx_scdpo.errors import UserError
from mlx_scdpo.generation.windows import (
    RELEASE_EVERY,
    InOrder,
    Request,
    item_noise,
    release_memory,
    sandbox_pool,
    stream_completions,
)
from mlx_scdpo.jsonl import iter_finished, write_jsonl_atomic
from mlx_scdpo.method.pairs import is_truncated, make_pair
from mlx_scdpo.models import load_model
from mlx_scdpo.prompts import build_prompt_tokens, prompt_settings, stop_strings
from mlx_scdpo.run_state import (
    adapter_identity,
    check_identity,
    data_identity,
    folder_lock,
    kill_point,
    model_identity,
    refuse_overwriting,
)

_BAD_CORRECT = re.compile(r"error|apolog", re.IGNORECASE)


@dataclass(kw_only=True)
class SampleArgs(GenerationArgs):
    model: str = field(metadata={"help": "SFT model folder or hub id."})
    output_dir: str = field(metadata={"help": "Where solutions.jsonl and pairs_naive.jsonl go."})
    task: str = field(default="gsm8k", metadata={"help": "gsm8k or math (grading rules)."})
    data_files: str | None = field(
        default=None, metadata={"help": "Local problems file (question + answer)."}
    )
    dataset: str | None = field(default=None, metadata={"help": "Hub dataset (default: the task's)."})
    num_shots: int | None = field(default=None, metadata={"help": "Few-shot examples."})
    chat_template: bool | None = field(default=None, metadata={"help": "Chat prompt (default: if any)."})
    max_tokens: int = field(default=512, metadata={"help": "Most new tokens per solution."})
    batch_size: int = field(default=64, metadata={"help": "Sequences decoded together."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (same seed, same samples)."})
    split: str = field(default="train", metadata={"help": "Hub split."})
    samples_per_round: int = field(default=4, metadata={"help": "Samples per open problem per round."})
    min_correct: int = field(default=1, metadata={"help": "Distinct correct solutions wanted (P)."})
    min_wrong: int = field(default=1, metadata={"help": "Distinct wrong solutions wanted (Q)."})
    budget: int = field(default=100, metadata={"help": "Most samples per problem."})
    naive_wrong: int | None = field(
        default=None,
        metadata={"help": "Wrong solutions paired with the first correct (default 1 GSM8K, 2 MATH)."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (reference 1.0)."})
    problems_per_batch: int = field(
        default=16,
        metadata={
            "help": "Problems open at once (memory; keep >= batch"
            " size / samples per round); results do not"
            " depend on it."
        },
    )
    include_truncated: bool = field(
        default=False, metadata={"help": "Wrong solutions cut off by --max-tokens may be rejected sides."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def normalize_for_dedup(text: str) -> str:
    return " ".join(text.split())


def usable_correct(text: str) -> bool:
    """Reference filter: correct solutions that mention an error or apologise are not used."""
    return not _BAD_CORRECT.search(text)


@dataclass
class ProblemState:
    problem: object
    prompt_ids: list[int]
    prompt_text: str
    pid: str = ""
    samples: list[dict] = field(default_factory=list)
    seen: set = field(default_factory=set)
    n_sampled: int = 0
    seq: int = 0  # position in the run's input order
    draws: list[int] = field(default_factory=list)  # this round's draw numbers
    got: dict = field(default_factory=dict)  # draw number -> result, until the round is complete

    def count(self, correct: bool, include_truncated: bool = True) -> int:
        return sum(
            1 for s in self.samples if s["correct"] == correct and (include_truncated or not is_truncated(s))
        )

    def add(
        self, text: str, ids: list[int], grade: dict, finish_reason: str, gen_mask: list[int] | None = None
    ) -> None:
        self.n_sampled += 1
        key = normalize_for_dedup(text)
        if key in self.seen:
            return
        if grade["correct"] and not usable_correct(text):
            return
        self.seen.add(key)
        sample = {
            "text": text,
            "ids": ids,
            "extracted": grade["extracted"],
            "correct": grade["correct"],
            "finish_reason": finish_reason,
        }
        if gen_mask is not None:  # 0 marks execution-output tokens (inserted, not generated)
            sample["gen_mask"] = gen_mask
        self.samples.append(sample)

    def is_done(self, args: SampleArgs) -> bool:
        enough = (
            self.count(True) >= args.min_correct
            and self.count(False, args.include_truncated) >= args.min_wrong
        )
        return enough or self.n_sampled >= args.budget


class ProblemWindow:
    """Open problems and their draws; finished problems are written in input order.

    At most ``problems_per_batch`` problems are open, and finished ones waiting for an
    earlier one to finish are bounded too, so memory does not grow with the dataset. Draw
    ``j`` of a problem samples from its own PRNG stream (seed, problem, j), and a round's
    results are added in draw order once all are back, so the samples kept (and the pairs)
    are those of an uninterrupted run, whatever the batch held and wherever a run was killed.
    """

    def __init__(self, problems, build, args: SampleArgs, write):
        self.problems, self.build, self.args, self.write = problems, build, args, write
        self.requests: deque = deque()
        self.order = InOrder()
        self.open = 0
        self.admitted = 0
        self.more = True

    def pull(self, n: int) -> list:
        limit = self.args.problems_per_batch
        while self.more and len(self.requests) < n and self.open < limit and len(self.order) < 4 * limit:
            p = next(self.problems, None)
            if p is None:
                self.more = False
                break
            s = self.build(p)
            s.seq, self.admitted, self.open = self.admitted, self.admitted + 1, self.open + 1
            self._next_round(s)
        return [self.requests.popleft() for _ in range(min(n, len(self.requests)))]

    def _next_round(self, s: ProblemState) -> None:
        if s.is_done(self.args):
            self.open -= 1
            self.order.put(s.seq, s)
            for ready in self.order.pop_ready():
                self.write(ready)
            return
        n = min(self.args.samples_per_round, self.args.budget - s.n_sampled)
        s.draws = list(range(s.n_sampled, s.n_sampled + n))
        for j in s.draws:
            noise = item_noise(self.args.temperature, self.args.seed, s.pid, j)
            self.requests.append(Request((s, j), s.prompt_ids, [noise]))

    def finished(self, s: ProblemState, draw: int, result: tuple) -> None:
        s.got[draw] = result
        if len(s.got) < len(s.draws):
            return
        for j in s.draws:
            s.add(*s.got.pop(j))
        self._next_round(s)


def problem_id(task: str, problem) -> str:
    return problem.unique_id or f"{task}/{problem.doc_id}"


def naive_pairs(record: dict, n_wrong: int, include_truncated: bool = False) -> list[dict]:
    """First correct solution x first ``n_wrong`` wrong ones (truncated ones only if ``include_truncated``)."""
    correct = [s for s in record["samples"] if s["correct"]]
    wrong = [s for s in record["samples"] if not s["correct"] and (include_truncated or not is_truncated(s))]
    if not correct:
        return []
    return [
        make_pair(
            record,
            prefix_text="",
            prefix_ids=[],
            chosen=correct[0],
            rejected=w,
            source="naive",
            k=0,
            temperatures=[],
            round=0,
        )
        for w in wrong[:n_wrong]
    ]


def solution_record(s: ProblemState, args: SampleArgs, fmt, stop) -> dict:
    """A finished problem's line of ``solutions.jsonl`` (``mlx_scdpo.jsonl.SOLUTION_SCHEMA``)."""
    return {
        "problem_id": s.pid,
        "task": args.task,
        "question": s.problem.question,
        "gold": s.problem.gold,
        "prompt": s.prompt_text,
        "prompt_ids": s.prompt_ids,
        "n_sampled": s.n_sampled,
        "seed": args.seed,
        "solution_format": args.solution_format,
        "block_format": fmt.name if fmt else None,
        "stop": list(stop),
        "samples": s.samples,
    }


def run_sample(args: SampleArgs) -> dict:
    """Sample, grade, write solutions and naive pairs; returns counts."""
    check_values(args)  # before anything loads
    out = Path(args.output_dir)
    refuse_overwriting(
        [args.data_files],
        out,
        (
            "solutions.jsonl",
            "solutions.jsonl.damaged",
            "pairs_naive.jsonl",
            "sample_config.json",
            "sample_run.json",
        ),
    )
    with folder_lock(out, "sample"):
        check_identity(out, "sample_run", sample_identity(args), ("solutions.jsonl",))
        return _run_sample(args)


def sample_identity(args: SampleArgs) -> dict:
    """What defines a sampling run (a folder holds one; --limit may grow): model, adapters, data, settings."""
    skip = (
        "progress",
        "batch_size",
        "problems_per_batch",
        "output_dir",
        "limit",
    )  # results do not depend on them
    settings = {k: v for k, v in asdict(args).items() if k not in skip}
    return {
        **settings,
        "model": model_identity(args.model),
        "adapter_path": adapter_identity(args.adapter_path),
        "data_files": data_identity(args.data_files) or args.data_files,
    }


def _run_sample(args: SampleArgs) -> dict:
    if args.task not in ("gsm8k", "math"):
        raise UserError(f"--task {args.task}: sampling supports gsm8k and math")
    fmt = block_format(args.solution_format, args.block_format)
    problems = load_problems(
        args.task, data_files=args.data_files, dataset=args.dataset, split=args.split, limit=args.limit
    )
    if not problems:
        raise UserError(f"{args.data_files or args.task}: no problems")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sol_path, pair_path = out / "solutions.jsonl", out / "pairs_naive.jsonl"
    done = {r["problem_id"] for r in iter_finished(sol_path, "problem_id")}
    todo = [p for p in problems if problem_id(args.task, p) not in done]
    model, tokenizer = load_model(args.model, args.adapter_path)
    chat, shots = prompt_settings(
        tokenizer, args.model, args.task, args.chat_template, args.num_shots, fmt is not None
    )
    stop = stop_strings(args.stop)
    n_wrong = args.naive_wrong if args.naive_wrong is not None else (1 if args.task == "gsm8k" else 2)
    (out / "sample_config.json").write_text(json.dumps(asdict(args), indent=2))

    bar = tqdm(
        total=len(problems),
        initial=len(problems) - len(todo),
        desc="sample",
        unit="problem",
        disable=not (args.progress and todo),
    )
    counts = {"problems": 0, "pairs": 0, "samples": 0}
    with (
        open(sol_path, "a", encoding="utf-8") as fs,
        sandbox_pool(fmt, args.batch_size, args.timeout) as pool,
    ):

        def write(s: ProblemState):
            fs.write(json.dumps(solution_record(s, args, fmt, stop), ensure_ascii=False) + "\n")
            fs.flush()
            counts["problems"] += 1
            kill_point("sample-write")
            bar.update(1)
            if counts["problems"] % RELEASE_EVERY == 0:
                release_memory()

        def build(p) -> ProblemState:
            ids, text = build_prompt_tokens(tokenizer, args.task, p.question, shots, chat, fmt)
            return ProblemState(p, ids, text, pid=problem_id(args.task, p))

        window = ProblemWindow(iter(todo), build, args, write)
        for (state, draw), c in stream_completions(
            model,
            tokenizer,
            window.pull,
            fmt=fmt,
            pool=pool,
            max_tokens=args.max_tokens,
            batch_size=args.batch_size,
            max_rounds=args.max_rounds,
            stop_strings=stop,
        ):
            grade = grade_sample(args.task, c.text, state.problem.gold, grade_format(fmt))
            counts["samples"] += 1
            kill_point("sample-draw")
            window.finished(
                state, draw, (c.text, c.tokens, grade, c.finish_reason, getattr(c, "gen_mask", None))
            )
    bar.close()
    # Naive pairs are derived from the solutions file as a whole (so a resumed run never
    # duplicates them), read line by line, and rewritten atomically.
    counts["pairs"] = write_jsonl_atomic(
        pair_path,
        (p for r in iter_finished(sol_path) for p in naive_pairs(r, n_wrong, args.include_truncated)),
    )
    return counts
