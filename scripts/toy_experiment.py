"""The paper's comparison at toy scale: SFT vs DPO vs DPO (data-equal) vs SCDPO, several seeds.

    python scripts/toy_experiment.py [--seeds 0 1 2 3 4] [--settings short long] [--n-test 4000]
                                     [--output-dir runs/toy_experiment] [quickstart options]

For each setting (``short``: 2-3-step problems, ``long``: 4-6 steps) and seed, runs
``mlx-scdpo quickstart --data-equal`` (training problems, sampling, pairs and training
seeded; the same embedded SFT model, whose checkpoint was chosen on validation problems)
and scores greedy solutions on the same ``--n-test`` held-out test problems. The SFT model
is evaluated once per setting (greedy decoding is deterministic).

Reported per method: mean accuracy over seeds with a 95% interval, paired differences
(SCDPO - DPO, SCDPO - data-equal DPO, each method - SFT) on the same test problems, the
share of solutions whose every step is right, where the first wrong step falls, and where
step-controlled negatives start erring. Written to ``OUTPUT_DIR/results.md`` and
``results.json``; finished seeds are kept (resumable).

The 95% interval (``mlx_scdpo.toy.evaluate.mean_with_interval``) combines the two sources of noise, the
seeds and the finite test set; differences use it on per-(seed, problem) differences, so
they are paired.
"""

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

import mlx_scdpo  # noqa: F401
from mlx_scdpo.errors import CommandError
from mlx_scdpo.toy.evaluate import mean_with_interval as interval
from mlx_scdpo.toy.evaluate import step_control_error_positions
from mlx_scdpo.toy.quickstart import METHODS, QuickstartArgs, default_model, evaluate_on, run_quickstart
from mlx_scdpo.toy.world import SETTINGS, toy_splits

COMPARISONS = [
    ("scdpo", "dpo"),
    ("scdpo", "dpo_equal"),
    ("dpo", "sft"),
    ("dpo_equal", "sft"),
    ("scdpo", "sft"),
]
LABELS = dict(METHODS)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_setting(name: str, seeds: list[int], out: Path, options: dict) -> dict:
    lo, hi = SETTINGS[name]
    out.mkdir(parents=True, exist_ok=True)
    model = options.get("model") or default_model(hi)
    sft_file = out / "sft_eval.json"
    if not sft_file.exists():
        test = toy_splits(0, 0, options["n_test"], min_steps=lo, max_steps=hi).test
        t = time.perf_counter()
        summary = evaluate_on(model, test, out / "sft_eval.jsonl")
        summary["seconds"] = round(time.perf_counter() - t, 1)
        sft_file.write_text(json.dumps(summary, indent=2))
    sft_eval = json.loads(sft_file.read_text())
    runs = {}
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        if not (seed_dir / "results.json").exists():  # resumable: finished seeds are kept
            print(f"== {name} seed {seed}", flush=True)
            run_quickstart(
                QuickstartArgs(
                    **options,
                    output_dir=str(seed_dir),
                    seed=seed,
                    data_equal=True,
                    progress=False,
                    min_steps=lo,
                    max_steps=hi,
                ),
                sft_eval=sft_eval,
            )
        runs[seed] = json.loads((seed_dir / "results.json").read_text())
    # Each method's per-problem rows, read once: (seeds, problems) arrays and the first-wrong-step profile.
    scored = {m: [read_rows(eval_file(out, m, s)) for s in seeds] for m, _ in METHODS}
    return {
        "sft_eval": sft_eval,
        "runs": runs,
        "rows": {
            m: np.array([[r["correct"] for r in rows] for rows in per_seed], float)
            for m, per_seed in scored.items()
        },
        "all_steps": {
            m: np.array([[r["all_steps_right"] for r in rows] for rows in per_seed], float)
            for m, per_seed in scored.items()
        },
        "profile": {
            m: first_wrong_profile([r for rows in per_seed for r in rows]) for m, per_seed in scored.items()
        },
    }


def eval_file(out: Path, method: str, seed: int) -> Path:
    """Scored test rows: the SFT model's once per setting, each adapter's per seed."""
    return out / "sft_eval.jsonl" if method == "sft" else out / f"seed{seed}" / "eval" / f"{method}.jsonl"


def first_wrong_profile(rows: list[dict]) -> str:
    wrong = [r["first_wrong_step"] for r in rows if r["first_wrong_step"] is not None]
    if not wrong:
        return "-"
    return ", ".join(f"{k}: {100 * wrong.count(k) / len(wrong):.0f}%" for k in sorted(set(wrong)))


def table(name: str, res: dict, out: Path, seeds: list[int]) -> tuple[str, dict]:
    lo, hi = SETTINGS[name]
    runs = res["runs"]
    n_test = res["rows"]["sft"].shape[1]
    summary = {
        "setting": name,
        "steps": [lo, hi],
        "seeds": seeds,
        "n_test": n_test,
        "methods": {},
        "differences": {},
    }
    pair_keys = {"dpo": "pairs_dpo", "dpo_equal": "pairs_data_equal", "scdpo": "pairs_scdpo"}
    lines = [
        f"**{name}: {lo}-{hi}-step problems**, {len(seeds)} seeds, {n_test} test problems",
        "",
        "| model | accuracy % (95% CI) | per seed | all steps right % | first wrong step (share of wrong) "
        "| train pairs (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for m, label in METHODS:
        mean, half = interval(res["rows"][m])
        steps_mean, steps_half = interval(res["all_steps"][m])
        per_seed = res["rows"][m].mean(axis=1) * 100
        pairs = f"{np.mean([runs[s][pair_keys[m]]['train'] for s in seeds]):.0f}" if m in pair_keys else "-"
        summary["methods"][m] = {
            "accuracy": mean,
            "ci95": half,
            "per_seed": per_seed.tolist(),
            "all_steps_right": steps_mean,
            "all_steps_ci95": steps_half,
        }
        lines.append(
            f"| {label} | {100 * mean:.1f} ± {100 * half:.1f} | "
            f"{', '.join(f'{v:.1f}' for v in (per_seed if m != 'sft' else per_seed[:1]))} | "
            f"{100 * steps_mean:.1f} ± {100 * steps_half:.1f} | {res['profile'][m]} | {pairs} |"
        )
    lines += [
        "",
        "| paired difference | accuracy, points (95% CI) | all steps right, points (95% CI) | seeds ahead |",
        "|---|---|---|---|",
    ]
    for a, b in COMPARISONS:
        diff = res["rows"][a] - res["rows"][b]
        mean, half = interval(diff)
        s_mean, s_half = interval(res["all_steps"][a] - res["all_steps"][b])
        ahead = int((diff.mean(axis=1) > 0).sum())
        summary["differences"][f"{a}-{b}"] = {
            "accuracy": mean,
            "ci95": half,
            "all_steps_right": s_mean,
            "all_steps_ci95": s_half,
            "seeds_ahead": ahead,
        }
        lines.append(
            f"| {LABELS[a]} − {LABELS[b]} | {100 * mean:+.1f} ± {100 * half:.1f} | "
            f"{100 * s_mean:+.1f} ± {100 * s_half:.1f} | {ahead} of {len(seeds)} |"
        )
    where = [
        step_control_error_positions(out / f"seed{s}" / "data" / "pairs_step_control.jsonl") for s in seeds
    ]
    k1 = np.mean([w.get("k+1", 0) for w in where])
    later = np.mean([w.get("later", 0) for w in where])
    credit = {
        m: [
            runs[s]["credit"][m]["negative_share_after_error"]
            for s in seeds
            if runs[s]["credit"].get(m, {}).get("negative_share_after_error") is not None
        ]
        for m in ("dpo", "dpo_equal", "scdpo")
    }
    minutes = (
        sum(sum(runs[s]["seconds"].values()) for s in seeds) / 60 + res["sft_eval"].get("seconds", 0) / 60
    )
    summary.update(
        negatives_err_at_k_plus_1=float(k1),
        negatives_err_later=float(later),
        minutes=minutes,
        credit={m: float(np.mean(v)) for m, v in credit.items() if v},
    )
    lines += [
        "",
        f"Step-controlled negatives: {100 * k1:.0f}% first go wrong right after the kept prefix "
        f"(step k+1), {100 * later:.0f}% later. Share of negative reward on/after the first wrong step "
        f"(64 probe pairs): "
        + ", ".join(f"{LABELS[m]} {100 * v:.1f}%" for m, v in summary["credit"].items())
        + f". {minutes:.1f} minutes in all.",
    ]
    return "\n".join(lines), summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--output-dir", default="runs/toy_experiment")
    skip = ("seed", "output_dir", "data_equal", "min_steps", "max_steps", "progress", "skip_scdpo")
    for f in fields(QuickstartArgs):
        if f.name not in skip and not isinstance(f.default, bool):
            ap.add_argument(
                "--" + f.name.replace("_", "-"),
                type=type(f.default) if f.default is not None else str,
                default=4000 if f.name == "n_test" else f.default,
            )
    ns = vars(ap.parse_args())
    seeds, settings, out = ns.pop("seeds"), ns.pop("settings"), Path(ns.pop("output_dir"))
    t0 = time.perf_counter()
    parts, summaries = [], []
    for name in settings:
        md, summary = table(name, run_setting(name, seeds, out / name, ns), out / name, seeds)
        parts.append(md)
        summaries.append(summary)
    md = "\n\n".join(parts)
    (out / "results.md").write_text(md + "\n")
    (out / "results.json").write_text(json.dumps({"options": ns, "settings": summaries}, indent=2))
    print(md)
    print(f"\n{(time.perf_counter() - t0) / 60:.1f} minutes (this invocation)")


if __name__ == "__main__":
    try:
        main()
    except (CommandError, ValueError) as e:  # a seed folder in use, a bad size: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
