"""``mlx-scdpo eval``: greedy GSM8K / MATH benchmarks with MLX, resumable.

Completions are appended to ``OUTPUT_DIR/generations_<task>.jsonl`` as each problem
finishes (the same format ``mlx-scdpo score`` reads); a re-run with the same settings
skips finished ``doc_id``s, so a killed run loses at most what was in flight. The run's
identity (model, adapters, prompt and decoding settings) is kept in
``generations_<task>.meta.json``; a different run in the same folder is refused, and a
lock stops a second run on the folder. ``--limit`` may grow between runs, and every run
grades against the data's current gold answers.
Grading and reports come from ``eval.score``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from eval.blocks import block_format, grade_format
from eval.data import load_problems
from eval.score import aggregate, score_rows, write_report
from mlx_scdpo.config import GenerationArgs, check_values
from mlx_scdpo.errors import UserError
from mlx_scdpo.jsonl import read_finished
from mlx_scdpo.models import load_model
from mlx_scdpo.prompts import build_prompt_tokens, prompt_settings, prompts_hash, stop_strings
from mlx_scdpo.run_state import (
    adapter_identity,
    check_identity,
    folder_lock,
    model_identity,
    refuse_overwriting,
)


@dataclass(kw_only=True)
class EvalArgs(GenerationArgs):
    task: str = field(metadata={"help": "gsm8k, math or math500."})
    max_tokens: int = field(default=1024, metadata={"help": "Maximum new tokens per problem."})
    batch_size: int = field(default=32, metadata={"help": "Sequences decoded together."})
    output_dir: str = field(default="runs/eval", metadata={"help": "Where generations and reports go."})
    seed: int = field(default=0, metadata={"help": "Recorded; decoding is greedy."})
    schedule: str = field(default="continuous", metadata={"help": "Code loop: continuous or rounds."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def run_identity(args: EvalArgs) -> dict:
    """What defines an eval run (a folder holds one per task). ``--limit`` may grow, and golds are
    re-read each time, so neither is part of it; each finished row's prompt is checked instead."""
    code = args.solution_format == "code"
    return {
        "model": model_identity(args.model),
        "adapter_path": adapter_identity(args.adapter_path),
        "task": args.task,
        "dataset": args.dataset,
        "chat_template": args.chat_template,
        "num_shots": args.num_shots,
        "max_tokens": args.max_tokens,
        "solution_format": args.solution_format,
        "block_format": args.block_format if code else None,
        "max_rounds": args.max_rounds if code else None,
        "timeout": args.timeout if code else None,
        "stop": args.stop,
    }


def run_eval(args: EvalArgs):
    """Generate (resuming), grade and report; returns (metrics, results_path, samples_path)."""
    check_values(args)  # before anything loads
    fmt = block_format(args.solution_format, args.block_format)
    logs = (f"generations_{args.task}.jsonl", f"generations_{args.task}.meta.json")
    refuse_overwriting([args.data_files], args.output_dir, logs + (f"generations_{args.task}.jsonl.damaged",))
    problems = load_problems(args.task, data_files=args.data_files, dataset=args.dataset, limit=args.limit)
    if not problems:
        raise UserError(f"{args.data_files or args.task}: no problems to evaluate")
    out = Path(args.output_dir)
    with folder_lock(out, f"eval {args.task}"):
        check_identity(
            out, f"generations_{args.task}.meta", run_identity(args), (f"generations_{args.task}.jsonl",)
        )
        return _run_eval(args, problems, fmt)


def _run_eval(args: EvalArgs, problems, fmt):
    model, tokenizer = load_model(args.model, args.adapter_path)
    chat, num_shots = prompt_settings(
        tokenizer, args.model, args.task, args.chat_template, args.num_shots, fmt is not None
    )
    built = [build_prompt_tokens(tokenizer, args.task, p.question, num_shots, chat, fmt) for p in problems]
    p_hash = prompts_hash([text for _, text in built])

    out = Path(args.output_dir)
    gen_path = out / f"generations_{args.task}.jsonl"
    done = _finished(gen_path, problems, [text for _, text in built])
    todo = [i for i, p in enumerate(problems) if p.doc_id not in done]
    stop = stop_strings(args.stop)
    _generate(model, tokenizer, args, fmt, stop, problems, built, todo, gen_path, done)

    # Graded against the golds as they are now (a corrected data file re-grades old generations).
    rows = [{**done[p.doc_id], "target": p.gold} for p in problems]
    samples = score_rows(args.task, rows, problems, solution_format=grade_format(fmt))
    config = {
        **asdict(args),
        "chat_template": chat,
        "num_shots": num_shots,
        "prompt_hash": p_hash,
        "decoding": "greedy",
        "stop_strings": list(stop),
    }
    config.pop("progress")
    res_path, sam_path = write_report(out, args.task, samples, config)
    return aggregate(args.task, samples), res_path, sam_path


def _finished(gen_path: Path, problems, prompts: list[str]) -> dict:
    """Rows already generated, by ``doc_id``; one generated from another prompt is refused (one line)."""
    done = read_finished(gen_path, "doc_id")
    for p, prompt in zip(problems, prompts):
        if p.doc_id in done and done[p.doc_id].get("prompt") != prompt:
            raise UserError(
                f"{gen_path}: doc_id {p.doc_id} was generated from another prompt (the question or "
                f"the prompt settings changed); use another --output-dir"
            )
    return done


def _generate(
    model, tokenizer, args: EvalArgs, fmt, stop, problems, built, todo: list[int], gen_path: Path, done: dict
) -> None:
    """Greedy completions of the ``todo`` problems, each appended to ``gen_path`` (and ``done``) as it ends."""
    from mlx_scdpo.generation.batched import solution_stream  # mlx-lm (heavy): only when generating

    stats = {"tokens": 0, "t0": time.perf_counter()}
    bar = tqdm(
        total=len(problems),
        initial=len(problems) - len(todo),
        desc=f"eval {args.task}",
        unit="problem",
        disable=not (args.progress and todo),
    )

    def on_token(n):
        stats["tokens"] += n

    stream = solution_stream(
        model,
        tokenizer,
        [built[i][0] for i in todo],
        fmt=fmt,
        sampler=None,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        max_rounds=args.max_rounds,
        timeout=args.timeout,
        stop_strings=stop,
        schedule=args.schedule,
        on_token=on_token,
    )
    with open(gen_path, "a", encoding="utf-8") as f, stream as completions:
        for c in completions:
            p = problems[todo[c.index]]
            row = {
                "doc_id": p.doc_id,
                "prompt": built[todo[c.index]][1],
                "response": c.text,
                "target": p.gold,
                "subject": p.subject,
                "level": p.level,
                "num_tokens": len(c.tokens),
                "finish_reason": c.finish_reason,
            }
            if fmt is not None:
                row["executions"] = c.executions
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done[p.doc_id] = row
            elapsed = time.perf_counter() - stats["t0"]
            bar.set_postfix(tok_s=f"{stats['tokens'] / max(elapsed, 1e-9):.0f}")
            bar.update(1)
    bar.close()
