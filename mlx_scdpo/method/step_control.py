"""``mlx-scdpo step-control``: erring continuations of correct solutions (SCDPO's negatives).

For each problem in ``solutions.jsonl`` (from ``mlx-scdpo sample``), take its first
correct solution (or up to ``solutions_per_problem``), split it into steps
(``mlx_scdpo.method.steps``: lines or paragraphs for chain-of-thought, blocks for code-integrated
solutions), and for each eligible prefix length k (all, or a seeded random subset of
``prefixes_per_solution``) keep the first k steps and sample a continuation whose i-th
generated step runs at ``min(T0 + i * dT, Tmax)``. Code-integrated continuations run
through the sandboxed code loop; the kept code blocks are replayed first so the
sandbox holds the prefix's variables, and execution outputs never count as steps.

Rounds: a continuation that still reaches the right answer re-queues its prefix for the
next round (up to ``rounds``); the first wrong (or answer-less) continuation that passes
the noise filter becomes the rejected side of a pair and retires the prefix. Once a
problem has ``max_pairs_per_problem`` pairs (reference intent: 2 GSM8K, 3 MATH) its later
prefixes retire as ``capped`` (decided in input order, so resumed runs agree).

Streaming (``mlx_scdpo.generation.windows``): the solutions are read one record at a time and at most
``batch_size`` prefixes are live, each with one continuation in flight; round r of a prefix
draws from its own PRNG stream (seed, prefix, r). For chain-of-thought, the prompt + prefix
is prefilled once when the prefix enters; its KV cache is copied into every round's
continuation and dropped when it retires. Prefix token ids are the solution's own ids up to
the step boundary; a boundary that falls inside a token is skipped (counted in the summary).

Output, one line per retired prefix, appended in input order (resumable by ``prefix_id``):
``OUT/step_control.jsonl``; pairs in ``OUT/pairs_step_control.jsonl`` (rewritten from it).
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from eval.blocks import FORMATS, block_format, grade_format, parse
from eval.records import check_record, iter_lines
from eval.score import grade_sample
from mlx_scdpo.config import check_values
from mlx_scdpo.errors import UserError, where
from mlx_scdpo.generation.ramp import StepRamp, stable_seed, step_temperatures
from mlx_scdpo.generation.windows import (
    RELEASE_EVERY,
    InOrder,
    Request,
    item_noise,
    release_memory,
    sandbox_pool,
    stream_completions,
)
from mlx_scdpo.jsonl import (
    SOLUTION_OPTIONAL,
    SOLUTION_SCHEMA,
    check_solution_record,
    iter_finished,
    write_jsonl_atomic,
)
from mlx_scdpo.method.pairs import TRUNCATED, make_pair
from mlx_scdpo.method.steps import (
    DT,
    T0,
    TMAX,
    Steps,
    eligible_prefix_lengths,
    is_noisy,
    solution_steps,
    step_style,
)
from mlx_scdpo.models import config_vocab_size, load_model
from mlx_scdpo.prompts import stop_strings
from mlx_scdpo.run_state import (
    adapter_identity,
    check_identity,
    data_identity,
    folder_lock,
    kill_point,
    model_identity,
    refuse_overwriting,
)


@dataclass
class StepControlArgs:
    model: str = field(metadata={"help": "SFT model folder or hub id (the one that sampled)."})
    solutions: str = field(metadata={"help": "solutions.jsonl written by `mlx-scdpo sample`."})
    output_dir: str = field(metadata={"help": "Where step_control.jsonl and its pairs go."})
    adapter_path: str | None = field(default=None, metadata={"help": "LoRA adapter folder."})
    solutions_per_problem: int = field(
        default=1, metadata={"help": "Correct solutions used per problem (M)."}
    )
    prefixes_per_solution: int | None = field(
        default=None, metadata={"help": "Random subset of eligible k (all)."}
    )
    step_unit: str = field(default="line", metadata={"help": "Chain-of-thought steps: line or paragraph."})
    rounds: int = field(default=8, metadata={"help": "Continuations per prefix at most (R)."})
    max_pairs_per_problem: int | None = field(
        default=None, metadata={"help": "Cap (default 2 GSM8K, 3 MATH)."}
    )
    t0: float = field(default=T0, metadata={"help": "Temperature of the first generated step."})
    dt: float = field(default=DT, metadata={"help": "Temperature increase per generated step."})
    tmax: float = field(default=TMAX, metadata={"help": "Temperature ceiling."})
    max_steps: int = field(default=24, metadata={"help": "Noise filter: most steps in a solution."})
    max_step_chars: int = field(default=3000, metadata={"help": "Noise filter: longest step."})
    max_tokens: int = field(default=512, metadata={"help": "Most new tokens per continuation."})
    batch_size: int = field(default=64, metadata={"help": "Sequences decoded together."})
    max_code_rounds: int = field(
        default=8, metadata={"help": "Code executions per continuation (code format)."}
    )
    timeout: float = field(default=6.0, metadata={"help": "Seconds per code block (code format)."})
    seed: int = field(default=0, metadata={"help": "Seed for prefixes and sampling."})
    stop: list[str] | None = field(
        default=None,
        metadata={"help": "Text stop string, repeatable (default: those `sample` used; '' for none)."},
    )
    include_truncated: bool = field(
        default=False, metadata={"help": "Continuations cut off by --max-tokens may be rejected sides."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def record_format(record: dict):
    """The block format of a problem's solutions (None for chain-of-thought)."""
    return block_format(record.get("solution_format"), record.get("block_format"))


@dataclass
class Prefix:
    prefix_id: str
    record: dict
    solution: dict
    k: int
    steps: Steps
    prefix_text: str
    n_prefix_tokens: int
    fmt: object = None
    cache: object = None  # chain-of-thought: KV cache of the prompt + prefix, while the prefix is live
    round: int = 1
    rounds_done: int = 0
    seq: int = 0  # position in the run's input order
    cancelled: bool = False  # its problem reached the cap: the outcome no longer matters
    ramp: object = None  # the running continuation's temperature ramp (read back for the pair)

    @property
    def code_blocks(self) -> list[str]:
        """Code of the kept steps, replayed to rebuild the sandbox state."""
        if self.fmt is None:
            return []
        return [b.content for b in parse(self.prefix_text, self.fmt) if b.kind == "code"]

    @property
    def prompt_ids(self) -> list[int]:
        return self.record["prompt_ids"] + self.solution["ids"][: self.n_prefix_tokens]


def token_boundary(tokenizer, ids: list[int], text: str, n_chars: int) -> int | None:
    """Smallest t with ``decode(ids[:t]) == text[:n_chars]``; None if the boundary splits a token."""
    lo, hi = 0, len(ids)
    while lo < hi:  # first t whose decoded length reaches n_chars
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid])) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo if tokenizer.decode(ids[:lo]) == text[:n_chars] else None


def iter_prefixes(records, tokenizer, args: StepControlArgs, done, stats: dict, fmt_name: str | None = None):
    """Every (problem, correct solution, k) to continue, in input order, minus those in ``done``.

    Lazy (one record at a time). The subset of k (``prefixes_per_solution``) is drawn from the
    solution's own seeded stream, so it does not depend on the records before it.
    """
    for rec in records:
        if fmt_name is not None and _format_name(rec) != fmt_name:
            continue
        correct = [s for s in rec["samples"] if s["correct"]][: args.solutions_per_problem]
        if correct:
            stats["problems"] += 1
        fmt = record_format(rec)
        for si, sol in enumerate(correct):
            steps = solution_steps(sol["text"], fmt, args.step_unit)
            ks = eligible_prefix_lengths(steps)
            if args.prefixes_per_solution is not None and len(ks) > args.prefixes_per_solution:
                rng = random.Random(stable_seed(args.seed, rec["problem_id"], si))
                ks = sorted(rng.sample(ks, args.prefixes_per_solution))
            for k in ks:
                pid = f"{rec['problem_id']}#{si}#{k}"
                if pid in done:
                    continue
                prefix_text = "".join(steps.steps[:k])
                t = token_boundary(tokenizer, sol["ids"], sol["text"], len(prefix_text))
                if t is None:
                    stats["split_token"] += 1
                    continue
                yield Prefix(pid, rec, sol, k, steps, prefix_text, t, fmt)


def plan_prefixes(records: list[dict], tokenizer, args: StepControlArgs, done) -> tuple[list[Prefix], dict]:
    """``iter_prefixes`` as a list, with its counts."""
    stats = {"split_token": 0, "problems": 0}
    return list(iter_prefixes(records, tokenizer, args, done, stats)), stats


def iter_solutions(path: str, vocab_size: int | None = None):
    """Records of ``solutions.jsonl`` one at a time, each checked (schema, token ids) as it is read.

    A bad line is one ``UserError`` naming file, line and field (``eval.records``' rules).
    """
    seen: dict = {}
    for lineno, row in iter_lines(path):
        rec = check_solution_record(
            check_record(row, path, lineno, SOLUTION_SCHEMA, SOLUTION_OPTIONAL), where(path, lineno), seen
        )
        if vocab_size is not None:
            top = max([*rec["prompt_ids"], *(t for s in rec["samples"] for t in s["ids"])], default=-1)
            if top >= vocab_size:
                raise UserError(
                    f"{where(path, lineno)}: token id {top} is beyond the model's vocabulary of "
                    f"{vocab_size} (solutions from another tokenizer?)"
                )
        yield rec


def check_solutions(path: str, vocab_size: int | None) -> list[str]:
    """Read the whole input once before anything loads (one record in memory at a time); its formats."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    n = any_correct = 0
    formats = []
    try:
        for rec in iter_solutions(path, vocab_size):
            n += 1
            any_correct = any_correct or any(s["correct"] for s in rec["samples"])
            name = _format_name(rec)
            if name not in formats:
                formats.append(name)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if not n:
        raise UserError(f"{path}: file is empty")
    if not any_correct:
        raise UserError(f"{path}: no correct solution to continue from")
    return formats


def _format_name(record: dict) -> str:
    return grade_format(record_format(record))


def run_step_control(args: StepControlArgs) -> dict:
    """Sample erring continuations in rounds; write outcomes and pairs; return counts."""
    check_values(args)  # before anything loads
    formats = check_solutions(args.solutions, config_vocab_size(args.model))
    out = Path(args.output_dir)
    refuse_overwriting(
        [args.solutions],
        out,
        (
            "step_control.jsonl",
            "step_control.jsonl.damaged",
            "pairs_step_control.jsonl",
            "step_control_config.json",
            "step_control_run.json",
        ),
    )
    with folder_lock(out, "step-control"):
        check_identity(out, "step_control_run", step_control_identity(args), ("step_control.jsonl",))
        return _run_step_control(args, out, formats)


def step_control_identity(args: StepControlArgs) -> dict:
    """What defines a step-control run (a folder holds one): model, adapters, solutions, settings."""
    settings = {k: v for k, v in asdict(args).items() if k not in ("progress", "batch_size", "output_dir")}
    return {
        **settings,
        "model": model_identity(args.model),
        "adapter_path": adapter_identity(args.adapter_path),
        "solutions": data_identity(args.solutions),
    }


class PrefixWindow:
    """Live prefixes (at most ``size``, each with one continuation in flight), their rounds, and
    their outcomes committed in input order.

    Round r of a prefix samples from its own PRNG stream (seed, prefix, r), so its outcome does
    not depend on what else is in the batch. The per-problem cap is applied in input order
    when an outcome is committed: a prefix is ``capped`` when the prefixes before it gave the
    problem its pairs, whatever it drew itself; once that is known, live prefixes of the
    problem are dropped (their outcome can no longer matter). So a killed and resumed run
    writes exactly the lines of an uninterrupted one.
    """

    def __init__(self, prefixes, size: int, cap, pairs_of: dict, prepare, request, commit):
        self.prefixes, self.size, self.cap, self.pairs_of = prefixes, size, cap, pairs_of
        self.prepare, self.request, self.commit = prepare, request, commit
        self.queue: list = []
        self.live: dict[int, Prefix] = {}
        self.order = InOrder()
        self.admitted = 0
        self.more = True
        self.peak_live = 0

    def capped(self, p: Prefix) -> bool:
        problem = p.record["problem_id"]
        return self.pairs_of.get(problem, 0) >= self.cap(p.record)

    def pull(self, n: int) -> list:
        while (
            self.more
            and len(self.queue) < n
            and len(self.live) < self.size
            and len(self.order) < 4 * self.size
        ):
            p = next(self.prefixes, None)
            if p is None:
                self.more = False
                break
            p.seq, self.admitted = self.admitted, self.admitted + 1
            self.live[p.seq] = p
            if self.capped(p):
                self.finish(p, "capped")
                continue
            self.prepare(p)
            self.queue.append(p)
            self.peak_live = max(self.peak_live, len(self.live))
        take, self.queue = self.queue[:n], self.queue[n:]
        return [self.request(p) for p in take]

    def again(self, p: Prefix) -> None:
        self.queue.append(p)

    def finish(self, p: Prefix, status: str, extra: dict | None = None) -> None:
        del self.live[p.seq]
        p.cache = None
        self.order.put(p.seq, (p, status, extra or {}))
        for q, status, extra in self.order.pop_ready():
            problem = q.record["problem_id"]
            if self.capped(q):
                status, extra = "capped", {}
            self.commit(q, status, extra)
            if status == "pair":
                self.pairs_of[problem] = self.pairs_of.get(problem, 0) + 1
                if self.capped(q):
                    for other in self.live.values():
                        if other.record["problem_id"] == problem:
                            other.cancelled = True


def _run_step_control(args: StepControlArgs, out: Path, formats: list[str]) -> dict:
    from mlx_scdpo.generation.batched import prefill_cache  # mlx-lm (heavy): only when generating

    sc_path = out / "step_control.jsonl"
    done, pairs_of = _finished_prefixes(sc_path)
    (out / "step_control_config.json").write_text(json.dumps(asdict(args), indent=2))
    model, tokenizer = load_model(args.model, args.adapter_path)
    stop = run_stop_strings(args, iter_solutions(args.solutions))
    stats = {"split_token": 0, "problems": 0}
    cap_default = {"gsm8k": 2, "math": 3}

    def cap(record: dict) -> int:
        return args.max_pairs_per_problem or cap_default.get(record["task"], 3)

    ramps = {}

    def ramp_for(fmt):
        key = grade_format(fmt)
        if key not in ramps:
            ramps[key] = StepRamp(tokenizer, step_style(fmt), fmt, args.step_unit)
        return ramps[key]

    def prepare(p: Prefix) -> None:
        if p.fmt is None:  # chain-of-thought: the prompt + prefix is prefilled once, copied into every round
            p.cache = prefill_cache(model, p.prompt_ids)

    def request(p: Prefix) -> Request:
        p.ramp = ramp_for(p.fmt).processor(
            args.t0, args.dt, args.tmax
        )  # read back when the continuation is done
        return Request(
            p,
            p.prompt_ids,
            [p.ramp, item_noise(1.0, args.seed, p.prefix_id, p.round)],
            cache=p.cache,
            setup_code=p.code_blocks,
        )

    bar = tqdm(desc="step-control", unit="prefix", initial=len(done), disable=not args.progress)
    counts = {"written": 0}
    peak = 0
    with open(sc_path, "a", encoding="utf-8") as f, ExitStack() as pools:

        def commit(p: Prefix, status: str, extra: dict):
            row = {
                "prefix_id": p.prefix_id,
                "problem_id": p.record["problem_id"],
                "k": p.k,
                "status": status,
                "round": 0 if status == "capped" else p.rounds_done,
                **extra,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            counts["written"] += 1
            kill_point("step-control-write")
            bar.update(1)
            if counts["written"] % RELEASE_EVERY == 0:
                release_memory()

        # A file from ``sample`` holds one format; a mixed one is worked through one format after another.
        for fmt_name in formats:
            window = PrefixWindow(
                iter_prefixes(iter_solutions(args.solutions), tokenizer, args, done, stats, fmt_name),
                args.batch_size,
                cap,
                pairs_of,
                prepare,
                request,
                commit,
            )
            fmt = FORMATS.get(fmt_name)
            pool = pools.enter_context(sandbox_pool(fmt, args.batch_size, args.timeout))
            for p, c in stream_completions(
                model,
                tokenizer,
                window.pull,
                fmt=fmt,
                pool=pool,
                max_tokens=args.max_tokens,
                batch_size=args.batch_size,
                max_rounds=args.max_code_rounds,
                stop_strings=stop,
            ):
                _continuation_done(p, c, window, args, tokenizer)
            peak = max(peak, window.peak_live)
    bar.close()
    n_pairs = write_jsonl_atomic(
        out / "pairs_step_control.jsonl", step_control_pairs(args.solutions, sc_path, tokenizer, args)
    )
    return {
        **_outcome_counts(sc_path),
        "pairs": n_pairs,
        "problems": stats["problems"],
        "skipped_mid_token": stats["split_token"],
        "peak_live_prefixes": peak,
    }


def _finished_prefixes(sc_path: Path) -> tuple[set, dict]:
    """(prefix ids already in the outcome log, pairs per problem so far): where a resumed run starts."""
    done, pairs_of = set(), {}
    for row in iter_finished(sc_path, "prefix_id"):
        done.add(row["prefix_id"])
        if row["status"] == "pair":
            pairs_of[row["problem_id"]] = pairs_of.get(row["problem_id"], 0) + 1
    return done, pairs_of


def _outcome_counts(sc_path: Path) -> dict:
    """Prefixes in the outcome log, and how many never erred (``exhausted``) or were ``capped``."""
    counts = {"prefixes": 0, "exhausted": 0, "capped": 0}
    for row in iter_finished(sc_path):
        counts["prefixes"] += 1
        if row["status"] in ("exhausted", "capped"):
            counts[row["status"]] += 1
    return counts


def _continuation_done(p: Prefix, c, window: PrefixWindow, args: StepControlArgs, tokenizer) -> None:
    """Grade a prefix's continuation: a pair, another round, or the prefix is exhausted."""
    kill_point("step-control-draw")
    p.rounds_done = p.round
    ramp, p.ramp = p.ramp, None
    if p.cancelled or window.capped(p):
        window.finish(p, "capped")
        return
    grade = grade_sample(p.record["task"], p.prefix_text + c.text, p.record["gold"], grade_format(p.fmt))
    steps = solution_steps(p.prefix_text + c.text, p.fmt, args.step_unit)
    if (
        grade["correct"]
        or is_noisy(steps, p.fmt, args.max_steps, args.max_step_chars)
        or not args.include_truncated
        and c.finish_reason in TRUNCATED
    ):
        if p.round < args.rounds:  # right (or unusable): this prefix tries again
            p.round += 1
            window.again(p)
        else:
            window.finish(p, "exhausted")
        return
    temps = step_temperatures(tokenizer, c.tokens, ramp, step_style(p.fmt), p.fmt, args.step_unit)
    window.finish(
        p,
        "pair",
        {
            "rejected": c.text,
            "rejected_ids": c.tokens,
            "temperatures": temps,
            "extracted": grade["extracted"],
            "finish_reason": c.finish_reason,
            "solution_index": p.prefix_id.split("#")[1],
        },
    )


def run_stop_strings(args: StepControlArgs, records) -> tuple[str, ...]:
    """``--stop`` when given, else the stop strings ``sample`` recorded (the defaults for older files)."""
    if args.stop is not None:
        return stop_strings(args.stop)
    lists = [r["stop"] for r in records if isinstance(r.get("stop"), list)]
    return (
        stop_strings([s for stop in lists for s in stop if isinstance(s, str)]) if lists else stop_strings()
    )


def step_control_pairs(solutions: str, sc_path: Path, tokenizer, args: StepControlArgs):
    """Pairs (TRL format) from the step-control outcomes: chosen = the rest of the correct solution.

    Streamed: the outcome log is indexed by byte offset per problem, then the solutions are
    read one record at a time, so neither file is held in memory.
    """
    offsets: dict[str, list[int]] = {}
    pos = 0
    with open(sc_path, "rb") as log:
        for raw in log:
            row = json.loads(raw)
            if row["status"] == "pair":
                offsets.setdefault(row["problem_id"], []).append(pos)
            pos += len(raw)
    with open(sc_path, "rb") as log:
        for rec in iter_solutions(solutions):
            for off in offsets.pop(rec["problem_id"], ()):
                log.seek(off)
                row = json.loads(log.readline())
                sol = [s for s in rec["samples"] if s["correct"]][int(row["solution_index"])]
                steps = solution_steps(sol["text"], record_format(rec), args.step_unit)
                prefix_text = "".join(steps.steps[: row["k"]])
                t = token_boundary(tokenizer, sol["ids"], sol["text"], len(prefix_text))
                chosen = {
                    "text": sol["text"][len(prefix_text) :],
                    "ids": sol["ids"][t:],
                    "finish_reason": sol.get("finish_reason"),
                }
                rejected = {
                    "text": row["rejected"],
                    "ids": row["rejected_ids"],
                    "finish_reason": row.get("finish_reason"),
                }
                yield make_pair(
                    rec,
                    prefix_text=prefix_text,
                    prefix_ids=sol["ids"][:t],
                    chosen=chosen,
                    rejected=rejected,
                    source="step_control",
                    k=row["k"],
                    temperatures=row["temperatures"],
                    round=row["round"],
                )
