"""``mlx-scdpo quickstart``: the whole method, offline, on the toy world, in minutes.

Phases (each the same code path a real run uses):

1. toy problems: the SFT model's held-out test set and training problems to sample;
2. greedy evaluation of the SFT model on the held-out test split (``mlx_scdpo.toy.evaluate``: the same
   grading as ``eval``, plus step-level scores the toy generator makes possible);
3. ``sample`` (naive pairs) and ``step-control`` (step-controlled pairs);
4. ``build-pairs``: naive only (DPO) and naive + step-controlled (SCDPO);
5. ``train`` of a DPO and an SCDPO LoRA adapter with the same settings;
6. evaluation of each adapter, credit assignment on toy pairs, a table and ``report.html``.

Problems have ``--min-steps``..``--max-steps`` steps (2-3 by default; 4-6 is the setting
where a negative can start erring late). Test problems are used for the final table only.

The default model is the embedded toy SFT model (``mlx_scdpo/toy/assets/toy_model``). The
reference temperature ramp (1.1 -> 1.4) is too hot for a tiny character-level model
(its continuations become malformed text, i.e. easy negatives), so the toy run uses
0.8 -> 1.1 by default.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mlx_scdpo.errors import UserError
from mlx_scdpo.jsonl import write_text_atomic


@dataclass
class QuickstartArgs:
    output_dir: str = field(default="quickstart", metadata={"help": "Where pairs, adapters and report go."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "SFT model (default: the embedded toy model for "
            "2-3 steps, or the one for 4-6 steps when "
            "--max-steps is over 3)."
        },
    )
    n_train: int = field(default=300, metadata={"help": "Toy training problems to sample."})
    n_test: int = field(
        default=1000, metadata={"help": "Toy test problems (at most 4000; the final table only)."}
    )
    min_steps: int = field(default=2, metadata={"help": "Fewest steps per toy problem."})
    max_steps: int = field(
        default=3, metadata={"help": "Most steps per toy problem (4-6: the harder setting)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling, pairs and training."})
    samples_per_round: int = field(default=4, metadata={"help": "Samples per problem per round."})
    budget: int = field(default=8, metadata={"help": "Samples per problem at most."})
    rounds: int = field(default=3, metadata={"help": "Step-control rounds."})
    t0: float = field(default=0.8, metadata={"help": "Ramp start (toy; reference 1.1)."})
    dt: float = field(default=0.1, metadata={"help": "Ramp step."})
    tmax: float = field(default=1.1, metadata={"help": "Ramp ceiling (toy; reference 1.4)."})
    iters: int = field(default=80, metadata={"help": "Training steps of each adapter."})
    batch_size: int = field(default=16, metadata={"help": "Pairs per step."})
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate (default: chosen per setting on validation "
            "problems, 5e-6 for 2-3 steps, 5e-7 for 4-6: docs/toy-world.md)."
        },
    )
    beta: float | None = field(
        default=None, metadata={"help": "DPO beta (default: chosen on validation, 0.1 in both settings)."}
    )
    rpo_alpha: float = field(default=1.0, metadata={"help": "NLL weight on chosen (helped on the toy)."})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank."})
    max_naive: int | None = field(default=None, metadata={"help": "Cap on naive pairs (data-equal control)."})
    skip_scdpo: bool = field(default=False, metadata={"help": "Train only the DPO adapter."})
    verified_chosen: bool = field(
        default=True,
        metadata={
            "help": "Count a toy solution as correct only if every step is right (not just the final answer)."
        },
    )
    data_equal: bool = field(
        default=False,
        metadata={
            "help": "Also train DPO on as many naive pairs as SCDPO has "
            "pairs (the paper's data-equal control)."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


#: Learning rate and beta per setting, each chosen on 512 validation problems of its setting
#: (``scripts/toy_ablation.py``; docs/toy-world.md), never on test problems.
TOY_HYPERPARAMETERS = {"short": (5e-6, 0.1), "long": (5e-7, 0.1)}


def toy_setting(max_steps: int = 3) -> str:
    """Which embedded setting serves problems of up to ``max_steps`` steps: "short" (2-3) or "long"."""
    return "short" if max_steps <= 3 else "long"


def default_hyperparameters(max_steps: int = 3) -> tuple[float, float]:
    """The validation-chosen (learning rate, beta) for problems of up to ``max_steps`` steps."""
    return TOY_HYPERPARAMETERS[toy_setting(max_steps)]


def default_model(max_steps: int = 3) -> str:
    """The embedded toy SFT model for problems of up to ``max_steps`` steps (2-3 or 4-6)."""
    from mlx_scdpo.toy.sft import ASSET_DIR, LONG_ASSET_DIR

    path = {"short": ASSET_DIR, "long": LONG_ASSET_DIR}[toy_setting(max_steps)]
    if not (path / "model.safetensors").is_file():
        raise UserError(f"{path}: the embedded toy model is missing (python scripts/train_toy_model.py)")
    return str(path)


def toy_max_tokens(max_steps: int) -> int:
    """Room for a toy solution of ``max_steps`` lines (each <= 22 characters) and the answer."""
    return 24 * max_steps + 40


def evaluate_on(model: str, problems: list, out_path: Path, adapter: str | None = None) -> dict:
    """Greedy test summary (accuracy, all-steps-right share, first wrong step); rows in ``out_path``."""
    from mlx_lm import load

    from mlx_scdpo.toy.evaluate import evaluate_toy

    m, tok = load(model, adapter_path=adapter)
    summary = evaluate_toy(m, tok, problems, out_path)
    summary.pop("rows")
    return summary


def run_quickstart(args: QuickstartArgs, log=print, sft_eval: dict | None = None) -> dict:
    """The whole pipeline; one run per output folder (a second one would rewrite the first's problems).

    ``sft_eval``: the SFT model's test summary when already known (greedy decoding is
    deterministic, so a multi-seed experiment evaluates it once).
    """
    from mlx_scdpo.config import check_values
    from mlx_scdpo.run_state import folder_lock

    check_values(args)  # arguments built in Python (scripts) get the CLI's ranges too
    if args.n_test > 4000 or not 1 <= args.min_steps <= args.max_steps <= 12:
        raise UserError(
            f"--n-test at most 4000 and 1 <= --min-steps <= --max-steps <= 12 "
            f"(got {args.n_test}, {args.min_steps}..{args.max_steps})"
        )
    lr, beta = default_hyperparameters(args.max_steps)
    args = replace(
        args,
        learning_rate=lr if args.learning_rate is None else args.learning_rate,
        beta=beta if args.beta is None else args.beta,
    )
    with folder_lock(args.output_dir, "quickstart"):
        return _run_quickstart(args, log, sft_eval)


class _Phases:
    """Announces each phase as it starts and keeps its wall time (the table's ``time:`` rows)."""

    def __init__(self, log):
        self.log, self.seconds = log, {}

    @contextmanager
    def __call__(self, name: str):
        self.log(f"== {name}")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def _run_quickstart(args: QuickstartArgs, log=print, sft_eval: dict | None = None) -> dict:
    from mlx_scdpo.method.sampling import run_sample
    from mlx_scdpo.method.step_control import run_step_control
    from mlx_scdpo.toy.world import toy_splits, write_jsonl
    from mlx_scdpo.training.train import run_train

    model = args.model or default_model(args.max_steps)
    out = Path(args.output_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    results, phase = {"config": asdict(args)}, _Phases(log)
    max_tokens = toy_max_tokens(args.max_steps)
    with phase("data"):
        splits = toy_splits(
            args.n_train, 0, args.n_test, min_steps=args.min_steps, max_steps=args.max_steps, seed=args.seed
        )
        write_jsonl(splits.train, out / "data" / "train_problems.jsonl")
        write_jsonl(splits.test, out / "data" / "test_problems.jsonl")

    def evaluate(name, adapter=None):
        results[f"{name}_eval"] = evaluate_on(model, splits.test, out / "eval" / f"{name}.jsonl", adapter)
        results[f"{name}_accuracy"] = results[f"{name}_eval"]["accuracy"]

    with phase("eval SFT"):
        if sft_eval is not None:
            results["sft_eval"], results["sft_accuracy"] = sft_eval, sft_eval["accuracy"]
        else:
            evaluate("sft")
    with phase("sample"):
        results["sample"] = run_sample(_sample_args(args, model, out, max_tokens))
        if args.verified_chosen:
            results["lucky_correct"] = verify_toy_chains(out / "data")
    with phase("step-control"):
        results["step_control"] = run_step_control(_step_control_args(args, model, out, max_tokens))
    with phase("build-pairs"):
        variants = _build_variant_pairs(args, out, results)
    for name, data in variants:
        with phase(f"train {name}"):
            results[f"train_{name}"] = run_train(_train_args(args, model, out / "adapters" / name, data, out))
        with phase(f"eval {name}"):
            evaluate(name, str(out / "adapters" / name))
    with phase("credit"):
        results["credit"] = credit_comparison(
            model, out, [n for n, _ in variants], args.beta, splits.test[:256]
        )
    results["seconds"] = {k: round(v, 1) for k, v in phase.seconds.items()}
    # Written last and whole: its presence marks a finished run (toy_experiment.py keeps those seeds).
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str))
    write_report(out, results)
    return results


def _sample_args(args: QuickstartArgs, model: str, out: Path, max_tokens: int):
    from mlx_scdpo.method.sampling import SampleArgs

    return SampleArgs(
        model=model,
        output_dir=str(out / "data"),
        task="gsm8k",
        data_files=str(out / "data" / "train_problems.jsonl"),
        samples_per_round=args.samples_per_round,
        budget=args.budget,
        max_tokens=max_tokens,
        batch_size=128,
        problems_per_batch=64,
        seed=args.seed,
        progress=args.progress,
    )


def _step_control_args(args: QuickstartArgs, model: str, out: Path, max_tokens: int):
    from mlx_scdpo.method.step_control import StepControlArgs

    return StepControlArgs(
        model=model,
        solutions=str(out / "data" / "solutions.jsonl"),
        output_dir=str(out / "data"),
        rounds=args.rounds,
        t0=args.t0,
        dt=args.dt,
        tmax=args.tmax,
        max_tokens=max_tokens,
        batch_size=128,
        seed=args.seed,
        progress=args.progress,
    )


def _train_args(args: QuickstartArgs, model: str, adapter_path: Path, data: Path, out: Path):
    from mlx_scdpo.training.train import TrainArgs

    return TrainArgs(
        model=model,
        data=str(data),
        adapter_path=str(adapter_path),
        num_layers=-1,
        lora_rank=args.lora_rank,
        iters=args.iters,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        beta=args.beta,
        rpo_alpha=args.rpo_alpha,
        steps_per_report=max(1, args.iters // 20),  # about 20 points on every curve, however short the run
        steps_per_eval=args.iters,
        save_every=args.iters,
        seed=args.seed,
        ref_cache_dir=str(out / "ref_cache"),
        progress=args.progress,
    )


def _build_variant_pairs(args: QuickstartArgs, out: Path, results: dict) -> list[tuple[str, Path]]:
    """Naive pairs (DPO), naive + step-controlled (SCDPO) and, with ``data_equal``, as many naive pairs
    as SCDPO has (first correct x every distinct wrong solution). Returns ``(name, pairs folder)``."""
    from mlx_scdpo.jsonl import read_finished, write_jsonl_atomic
    from mlx_scdpo.method.pairs import build_pairs
    from mlx_scdpo.method.sampling import naive_pairs

    naive, sc = str(out / "data" / "pairs_naive.jsonl"), str(out / "data" / "pairs_step_control.jsonl")
    if not Path(naive).is_file() or not Path(naive).read_text().strip():
        raise UserError(
            f"{naive}: no naive pairs: no problem got both a right and a wrong sample (the model solves "
            f"these problems); use more --n-train or --budget"
        )
    results["pairs_dpo"] = build_pairs(
        [naive], str(out / "pairs" / "naive"), 0.02, args.seed, max_naive=args.max_naive
    )
    results["pairs_scdpo"] = build_pairs([naive, sc], str(out / "pairs"), 0.02, args.seed)
    variants = [("dpo", out / "pairs" / "naive")] + ([] if args.skip_scdpo else [("scdpo", out / "pairs")])
    if args.data_equal:
        records = read_finished(out / "data" / "solutions.jsonl", None)
        many = out / "data" / "pairs_naive_all.jsonl"
        write_jsonl_atomic(many, (p for r in records for p in naive_pairs(r, args.budget)))
        n_scdpo = results["pairs_scdpo"]["train"] + results["pairs_scdpo"]["valid"]
        results["pairs_data_equal"] = build_pairs(
            [str(many)], str(out / "pairs" / "data_equal"), 0.02, args.seed, max_naive=n_scdpo
        )
        variants.insert(1, ("dpo_equal", out / "pairs" / "data_equal"))
    return variants


def verify_toy_chains(data_dir: Path) -> int:
    """Mark final-answer-correct toy solutions with a wrong step as not correct; rebuild naive pairs.

    With answers in 0..99 a wrong step can still end at the right answer; such "lucky"
    solutions would teach wrong arithmetic as the chosen side. Returns how many there were.
    """
    from mlx_scdpo.jsonl import read_finished, write_jsonl_atomic
    from mlx_scdpo.method.sampling import naive_pairs
    from mlx_scdpo.toy.world import first_wrong_step, parse_question

    records, lucky = read_finished(data_dir / "solutions.jsonl", None), 0
    for rec in records:
        problem = parse_question(rec["question"])
        for sample in rec["samples"]:
            if (
                sample["correct"]
                and problem is not None
                and first_wrong_step(problem, sample["text"]) is not None
            ):
                sample["correct"], sample["answer_correct"] = False, True
                lucky += 1
    write_jsonl_atomic(data_dir / "solutions.jsonl", records)
    write_jsonl_atomic(data_dir / "pairs_naive.jsonl", (p for r in records for p in naive_pairs(r, 1)))
    return lucky


def credit_probe_pairs(tokenizer, problems, n_pairs: int = 64, seed: int = 0) -> list[dict]:
    """Held-out toy pairs: the true solution vs one whose first error is at step >= 2.

    The rejected side has correct steps before its known first wrong step, so where a model
    puts its negative reward can be measured (on test problems neither model trained on).
    """
    import random

    from mlx_scdpo.toy.world import erring_solution

    rng = random.Random(seed)
    pairs = []
    for p in problems:
        if len(p.ops) < 1 or len(pairs) >= n_pairs:
            continue
        wrong = rng.randint(2, len(p.ops) + 1)
        rejected = erring_solution(p, wrong, rng.choice([-3, -2, -1, 1, 2, 3]))
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": p.question}], add_generation_prompt=True, tokenize=False
        )
        eos = tokenizer.eos_token_id
        pairs.append(
            {
                "question": p.question,
                "prompt": prompt,
                "chosen": p.solution(),
                "rejected": rejected,
                "prompt_ids": tokenizer.encode(prompt, add_special_tokens=False),
                "chosen_ids": tokenizer.encode(p.solution(), add_special_tokens=False) + [eos],
                "rejected_ids": tokenizer.encode(rejected, add_special_tokens=False) + [eos],
                "problem_id": f"probe/{len(pairs)}",
                "source": "probe",
                "k": 0,
            }
        )
    return pairs


def credit_comparison(
    model: str, out: Path, variants: list[str], beta: float, test: list, n_pairs: int = 64
) -> dict:
    """Share of negative reward on/after the first wrong step, per adapter, on held-out probe pairs."""
    from mlx_lm import load

    from mlx_scdpo.training.credit import TokenRewards, credit_report, to_html

    summary, html_parts = {}, []
    for name in variants:
        m, tok = load(model, adapter_path=str(out / "adapters" / name))
        pairs = credit_probe_pairs(tok, test, n_pairs)
        rep = credit_report(m, tok, pairs, beta)
        summary[name] = {
            "negative_share_after_error": rep["mean_negative_share_after_error"],
            "pairs": rep["n_measured"],
        }
        if rep["pairs"]:
            pair, chosen, rejected, share = rep["pairs"][0]
            shown = f"{share:.2f}" if share is not None else "n/a"
            html_parts.append(
                to_html(
                    [
                        ("prompt", TokenRewards([pair["prompt"]], [0.0])),
                        ("chosen", chosen),
                        (f"rejected (negative reward on/after the first wrong step: {shown})", rejected),
                    ],
                    title=f"{name.upper()} adapter",
                )
            )
    summary["html"] = "\n".join(html_parts)
    return summary


def _svg_curve(series: dict[str, list[tuple[int, float]]], title: str, w: int = 420, h: int = 180) -> str:
    pts = [v for s in series.values() for v in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1
    x1 = x1 if x1 > x0 else x0 + 1
    colours = ["#d62728", "#1f77b4", "#2ca02c"]
    lines = []
    for (name, s), c in zip(series.items(), colours):
        xy = [(30 + (x - x0) / (x1 - x0) * (w - 40), h - 20 - (y - y0) / (y1 - y0) * (h - 40)) for x, y in s]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        dots = "".join(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{c}"/>' for x, y in xy
        )  # one point shows
        lines.append(
            f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>{dots}'
            f'<text x="{w - 90}" y="{20 + 14 * len(lines)}" fill="{c}" font-size="12">{name}</text>'
        )
    return (
        f'<svg width="{w}" height="{h}" style="border:1px solid #ccc;margin:4px">'
        f'<text x="30" y="14" font-size="12">{title} ({y0:.3g} .. {y1:.3g})</text>{"".join(lines)}</svg>'
    )


METHODS = [("sft", "SFT"), ("dpo", "DPO"), ("dpo_equal", "DPO (data-equal)"), ("scdpo", "SCDPO")]


def _pair_count(results: dict, name: str) -> int | None:
    key = {"dpo": "pairs_dpo", "dpo_equal": "pairs_data_equal", "scdpo": "pairs_scdpo"}.get(name)
    return results[key]["train"] if key in results else None


def _svg_bars(
    bars: list[tuple[str, float, float]], title: str, unit: str = "", w: int = 420, h: int = 200
) -> str:
    """A bar chart with +-error whiskers: ``(label, value, half_width)`` per bar."""
    if not bars:
        return ""
    top = max(v + e for _, v, e in bars) or 1.0
    slot = (w - 40) / len(bars)
    body = []
    for i, (label, v, e) in enumerate(bars):
        x, scale = 30 + i * slot, (h - 60) / top
        y, bh = h - 30 - v * scale, v * scale
        body.append(
            f'<rect x="{x + slot * 0.2:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" height="{bh:.1f}" '
            f'fill="#4c78a8"/><text x="{x + slot / 2:.1f}" y="{h - 14}" font-size="11" '
            f'text-anchor="middle">{label}</text><text x="{x + slot / 2:.1f}" y="{y - 4 - e * scale:.1f}" '
            f'font-size="11" text-anchor="middle">{v:.1f}{unit}</text>'
        )
        if e:
            cx = x + slot / 2
            body.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y - e * scale:.1f}" y2="{y + e * scale:.1f}" '
                f'stroke="black"/>'
            )
    return (
        f'<svg width="{w}" height="{h}" style="border:1px solid #ccc;margin:4px">'
        f'<text x="30" y="14" font-size="12">{title}</text>{"".join(body)}</svg>'
    )


def headline_charts(results: dict) -> str:
    """Test accuracy per method with 95% intervals (binomial, n test problems), and pairs per method."""
    acc, pairs = [], []
    for name, label in METHODS:
        ev = results.get(f"{name}_eval")
        if ev:
            p, n = ev["accuracy"], ev["n"]
            acc.append((label, 100 * p, 100 * 1.96 * (p * (1 - p) / n) ** 0.5))
        if _pair_count(results, name) is not None:
            pairs.append((label, float(_pair_count(results, name)), 0.0))
    n = results.get("sft_eval", {}).get("n", "?")
    return _svg_bars(acc, f"greedy test accuracy, % (95% interval, {n} problems)", "%") + _svg_bars(
        pairs, "training pairs per method"
    )


def write_report(out: Path, results: dict) -> None:
    from mlx_scdpo.jsonl import read_finished

    curves = {}
    for name in ("dpo", "dpo_equal", "scdpo"):
        path = out / "adapters" / name / "metrics.jsonl"
        if path.exists():
            curves[name] = [r for r in read_finished(path, None) if "loss" in r]
    charts = "".join(
        _svg_curve({n: [(r["step"], r[key]) for r in rows] for n, rows in curves.items()}, key)
        for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen")
    )
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in summary_rows(results))
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mlx-scdpo quickstart</title></head>"
        f"<body style='font-family:sans-serif'><h2>mlx-scdpo quickstart (toy world)</h2>"
        f"{headline_charts(results)}<table border=1 cellpadding=4>{rows}</table>"
        f"<h3>Training curves</h3>{charts}"
        f"<h3>Credit assignment</h3><p>Per-token implicit reward beta*(log pi - log ref); red negative, "
        f"green positive.</p>{results.get('credit', {}).get('html', '')}</body></html>"
    )
    (out / "report.html").write_text(html)


def summary_rows(results: dict) -> list[tuple[str, str]]:
    rows = []
    for name, label in METHODS:
        ev = results.get(f"{name}_eval")
        if ev:
            rows.append(
                (
                    f"{label} accuracy / all steps right",
                    f"{100 * ev['accuracy']:.1f}% / {100 * ev['all_steps_right']:.1f}%",
                )
            )
    rows.append(("naive pairs", str(results["pairs_dpo"]["by_source"].get("naive", 0))))
    if "pairs_data_equal" in results:
        rows.append(
            ("naive pairs (data-equal)", str(results["pairs_data_equal"]["by_source"].get("naive", 0)))
        )
    rows.append(("step-controlled pairs", str(results["pairs_scdpo"]["by_source"].get("step_control", 0))))
    for name, c in results.get("credit", {}).items():
        if isinstance(c, dict) and c.get("negative_share_after_error") is not None:
            rows.append(
                (
                    f"{name.upper()} negative reward on/after first wrong step",
                    f"{100 * c['negative_share_after_error']:.1f}% ({c['pairs']} pairs)",
                )
            )
    rows += [(f"time: {k}", f"{v} s") for k, v in results.get("seconds", {}).items()]
    return rows


def format_table(results: dict) -> str:
    rows = summary_rows(results)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
