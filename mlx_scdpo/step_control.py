"""``mlx-scdpo step-control``: erring continuations of correct solutions (SCDPO's negatives).

For each problem in ``solutions.jsonl`` (from ``mlx-scdpo sample``), take its first
correct solution (or up to ``solutions_per_problem``), split it into steps
(``mlx_scdpo.steps``: lines or paragraphs for chain-of-thought, blocks for code-integrated
solutions), and for each eligible prefix length k (all, or a seeded random subset of
``prefixes_per_solution``) keep the first k steps and sample a continuation whose i-th
generated step runs at ``min(T0 + i * dT, Tmax)``. Code-integrated continuations run
through the sandboxed code loop; the kept code blocks are replayed first so the
sandbox holds the prefix's variables, and execution outputs never count as steps.

Rounds: a continuation that still reaches the right answer re-queues its prefix for the
next round (up to ``rounds``); the first wrong (or answer-less) continuation that passes
the noise filter becomes the rejected side of a pair and retires the prefix. Once a
problem has ``max_pairs_per_problem`` pairs (reference intent: 2 GSM8K, 3 MATH) its other
prefixes retire.

For chain-of-thought, the prompt + prefix is prefilled once per prefix; its KV cache is
copied into every round's continuation. Prefix token ids are the solution's own ids up to the step
boundary; a boundary that falls inside a token is skipped (counted in the summary).

Output, one line per retired prefix, appended (resumable by ``prefix_id``):
``OUT/step_control.jsonl``; pairs in ``OUT/pairs_step_control.jsonl`` (rewritten from it).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eval.errors import UserError
from eval.score import grade_sample
from mlx_scdpo.jsonl import read_finished, read_solutions, write_jsonl_atomic
from mlx_scdpo.models import config_vocab_size
from mlx_scdpo.pairs import TRUNCATED, make_pair
from mlx_scdpo.preference_data import check_solution_ids
from mlx_scdpo.config import check_values
from mlx_scdpo.run_state import check_identity, folder_lock
from mlx_scdpo.steps import DT, T0, TMAX, Steps, eligible_prefix_lengths, is_noisy, split_steps


@dataclass
class StepControlArgs:
    model: str = field(metadata={"help": "SFT model folder or hub id (the one that sampled)."})
    solutions: str = field(metadata={"help": "solutions.jsonl written by `mlx-scdpo sample`."})
    output_dir: str = field(metadata={"help": "Where step_control.jsonl and its pairs go."})
    adapter_path: str | None = field(default=None, metadata={"help": "LoRA adapter folder."})
    solutions_per_problem: int = field(default=1, metadata={"help": "Correct solutions used per problem (M)."})
    prefixes_per_solution: int | None = field(default=None, metadata={"help": "Random subset of eligible k (all)."})
    step_unit: str = field(default="line", metadata={"help": "Chain-of-thought steps: line or paragraph."})
    rounds: int = field(default=8, metadata={"help": "Continuations per prefix at most (R)."})
    max_pairs_per_problem: int | None = field(default=None, metadata={"help": "Cap (default 2 GSM8K, 3 MATH)."})
    t0: float = field(default=T0, metadata={"help": "Temperature of the first generated step."})
    dt: float = field(default=DT, metadata={"help": "Temperature increase per generated step."})
    tmax: float = field(default=TMAX, metadata={"help": "Temperature ceiling."})
    max_steps: int = field(default=24, metadata={"help": "Noise filter: most steps in a solution."})
    max_step_chars: int = field(default=3000, metadata={"help": "Noise filter: longest step."})
    max_tokens: int = field(default=512, metadata={"help": "Most new tokens per continuation."})
    batch_size: int = field(default=64, metadata={"help": "Sequences decoded together."})
    max_code_rounds: int = field(default=8, metadata={"help": "Code executions per continuation (code format)."})
    timeout: float = field(default=6.0, metadata={"help": "Seconds per code block (code format)."})
    seed: int = field(default=0, metadata={"help": "Seed for prefixes and sampling."})
    stop: list[str] | None = field(default=None, metadata={"help": "Text stop string, repeatable (default: those "
                                                                    "`sample` used; '' for none)."})
    include_truncated: bool = field(default=False, metadata={"help": "Continuations cut off by --max-tokens may be "
                                                                     "rejected sides."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def record_format(record: dict):
    """The block format of a problem's solutions (None for chain-of-thought)."""
    from eval.blocks import FORMATS

    if record.get("solution_format", "cot") == "code":
        return FORMATS[record.get("block_format") or "markdown"]
    return None


def solution_steps(text: str, fmt, unit: str) -> Steps:
    return split_steps(text, "code", fmt) if fmt is not None else split_steps(text, "cot", unit=unit)


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
    cache: object = None
    rounds_done: int = 0

    @property
    def code_blocks(self) -> list[str]:
        """Code of the kept steps, replayed to rebuild the sandbox state."""
        from eval.blocks import parse

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


def plan_prefixes(records: list[dict], tokenizer, args: StepControlArgs, done: dict) -> tuple[list[Prefix], dict]:
    """Every (problem, correct solution, k) to continue, minus those already finished."""
    rng = random.Random(args.seed)
    prefixes, stats = [], {"split_token": 0, "problems": 0}
    for rec in records:
        correct = [s for s in rec["samples"] if s["correct"]][: args.solutions_per_problem]
        if correct:
            stats["problems"] += 1
        fmt = record_format(rec)
        for si, sol in enumerate(correct):
            steps = solution_steps(sol["text"], fmt, args.step_unit)
            ks = eligible_prefix_lengths(steps)
            if args.prefixes_per_solution is not None and len(ks) > args.prefixes_per_solution:
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
                prefixes.append(Prefix(pid, rec, sol, k, steps, prefix_text, t, fmt))
    return prefixes, stats


def run_step_control(args: StepControlArgs) -> dict:
    """Sample erring continuations in rounds; write outcomes and pairs; return counts."""
    check_values(args)  # before anything loads
    records = read_solutions(args.solutions)
    if not any(s["correct"] for r in records for s in r["samples"]):
        raise UserError(f"{args.solutions}: no correct solution to continue from")
    check_solution_ids(records, config_vocab_size(args.model), args.solutions)
    out = Path(args.output_dir)
    with folder_lock(out, "step-control"):
        check_identity(out, "step_control_run", step_control_identity(args), ("step_control.jsonl",))
        return _run_step_control(args, records, out)


def step_control_identity(args: StepControlArgs) -> dict:
    """What defines a step-control run (a folder holds one): model, adapters, solutions, settings."""
    from mlx_scdpo.run_state import adapter_identity, data_identity, model_identity

    settings = {k: v for k, v in asdict(args).items() if k not in ("progress", "batch_size", "output_dir")}
    return {**settings, "model": model_identity(args.model), "adapter_path": adapter_identity(args.adapter_path),
            "solutions": data_identity(args.solutions)}


def _run_step_control(args: StepControlArgs, records: list[dict], out: Path) -> dict:
    from mlx_scdpo.code_generation import solution_stream
    from mlx_scdpo.generation import prefill_cache
    from mlx_scdpo.models import load_model
    from mlx_scdpo.ramp import RowNoise, SeededSampler, StepRamp, stable_seed, step_temperatures

    sc_path = out / "step_control.jsonl"
    done = read_finished(sc_path, "prefix_id")
    (out / "step_control_config.json").write_text(json.dumps(asdict(args), indent=2))
    model, tokenizer = load_model(args.model, args.adapter_path)
    stop = run_stop_strings(args, records)
    prefixes, stats = plan_prefixes(records, tokenizer, args, done)
    task_of = {r["problem_id"]: r["task"] for r in records}
    cap_default = {"gsm8k": 2, "math": 3}
    pairs_of: dict[str, int] = {}
    for row in done.values():
        if row["status"] == "pair":
            pairs_of[row["problem_id"]] = pairs_of.get(row["problem_id"], 0) + 1

    def cap(problem: str) -> int:
        return args.max_pairs_per_problem or cap_default.get(task_of[problem], 3)

    ramps = {}

    def ramp_for(fmt):
        key = fmt.name if fmt else "cot"
        if key not in ramps:
            ramps[key] = StepRamp(tokenizer, "code" if fmt else "cot", fmt, args.step_unit)
        return ramps[key]

    bar = None
    if args.progress and prefixes:
        from tqdm import tqdm

        bar = tqdm(total=len(prefixes), desc="step-control", unit="prefix")
    active = list(prefixes)
    with open(sc_path, "a", encoding="utf-8") as f:

        def retire(p: Prefix, status: str, extra: dict | None = None):
            row = {"prefix_id": p.prefix_id, "problem_id": p.record["problem_id"], "k": p.k, "status": status,
                   "round": p.rounds_done, **(extra or {})}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            p.cache = None
            if bar is not None:
                bar.update(1)

        for round_ in range(1, args.rounds + 1):
            still = []
            for p in active:
                if pairs_of.get(p.record["problem_id"], 0) >= cap(p.record["problem_id"]):
                    retire(p, "capped")
                else:
                    still.append(p)
            active = still
            if not active:
                break
            results = {}
            for fmt in {p.fmt for p in active}:
                group = [p for p in active if p.fmt is fmt]
                if fmt is None:  # chain-of-thought: reuse each prefix's prefilled KV cache
                    for p in group:
                        if p.cache is None:
                            p.cache = prefill_cache(model, p.prompt_ids)
                sampler = SeededSampler(0, 0.0)  # argmax over RowNoise: each prefix's draw is its own
                ramp, applied = ramp_for(fmt), {}  # applied: each continuation's ramp, read back below

                def ramp_processor(i, ramp=ramp, applied=applied):
                    applied[i] = ramp.processor(args.t0, args.dt, args.tmax)
                    return [applied[i], RowNoise(stable_seed(args.seed, round_, group[i].prefix_id))]

                with solution_stream(
                        model, tokenizer, [p.prompt_ids for p in group], fmt=fmt, sampler=sampler,
                        max_tokens=args.max_tokens, batch_size=args.batch_size, max_rounds=args.max_code_rounds,
                        timeout=args.timeout, caches=[p.cache for p in group] if fmt is None else None,
                        logits_processors=ramp_processor,
                        setup_code=lambda i: group[i].code_blocks, stop_strings=stop) as stream:
                    for c in stream:
                        results[group[c.index].prefix_id] = c
                        c.ramp = applied[c.index]
            still = []
            for p in active:
                c = results[p.prefix_id]
                p.rounds_done = round_
                grade_format = p.fmt.name if p.fmt else "cot"
                grade = grade_sample(p.record["task"], p.prefix_text + c.text, p.record["gold"], grade_format)
                steps = solution_steps(p.prefix_text + c.text, p.fmt, args.step_unit)
                problem = p.record["problem_id"]
                if grade["correct"] or is_noisy(steps, p.fmt, args.max_steps, args.max_step_chars) \
                        or pairs_of.get(problem, 0) >= cap(problem) \
                        or not args.include_truncated and c.finish_reason in TRUNCATED:
                    still.append(p)  # right (or unusable): try this prefix again next round
                    continue
                temps = step_temperatures(tokenizer, c.tokens, c.ramp, "code" if p.fmt else "cot", p.fmt,
                                          args.step_unit)
                pairs_of[problem] = pairs_of.get(problem, 0) + 1
                retire(p, "pair", {"rejected": c.text, "rejected_ids": c.tokens, "temperatures": temps,
                                   "extracted": grade["extracted"], "finish_reason": c.finish_reason,
                                   "solution_index": p.prefix_id.split("#")[1]})
            active = still
        for p in active:
            retire(p, "exhausted")
    if bar is not None:
        bar.close()
    n_pairs = write_jsonl_atomic(out / "pairs_step_control.jsonl", step_control_pairs(records, sc_path, tokenizer,
                                                                                    args))
    rows = read_finished(sc_path, None)
    return {"prefixes": len(rows), "pairs": n_pairs, "problems": stats["problems"],
            "skipped_mid_token": stats["split_token"],
            "exhausted": sum(r["status"] == "exhausted" for r in rows),
            "capped": sum(r["status"] == "capped" for r in rows)}


def run_stop_strings(args: StepControlArgs, records: list[dict]) -> tuple[str, ...]:
    """``--stop`` when given, else the stop strings ``sample`` recorded (the defaults for older files)."""
    from mlx_scdpo.prompts import stop_strings

    if args.stop is not None:
        return stop_strings(args.stop)
    lists = [r["stop"] for r in records if isinstance(r.get("stop"), list)]
    return stop_strings([s for stop in lists for s in stop if isinstance(s, str)]) if lists else stop_strings()


def step_control_pairs(records: list[dict], sc_path: Path, tokenizer, args: StepControlArgs):
    """Pairs (TRL format) from the step-control outcomes: chosen = the rest of the correct solution."""
    by_id = {r["problem_id"]: r for r in records}
    for row in read_finished(sc_path, None):
        if row["status"] != "pair":
            continue
        rec = by_id[row["problem_id"]]
        sol = [s for s in rec["samples"] if s["correct"]][int(row["solution_index"])]
        steps = solution_steps(sol["text"], record_format(rec), args.step_unit)
        prefix_text = "".join(steps.steps[: row["k"]])
        t = token_boundary(tokenizer, sol["ids"], sol["text"], len(prefix_text))
        chosen = {"text": sol["text"][len(prefix_text):], "ids": sol["ids"][t:],
                  "finish_reason": sol.get("finish_reason")}
        rejected = {"text": row["rejected"], "ids": row["rejected_ids"], "finish_reason": row.get("finish_reason")}
        yield make_pair(rec, prefix_text=prefix_text, prefix_ids=sol["ids"][:t], chosen=chosen, rejected=rejected,
                        source="step_control", k=row["k"], temperatures=row["temperatures"], round=row["round"])
