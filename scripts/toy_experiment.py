"""The paper's comparison at toy scale: SFT vs DPO vs DPO (data-equal) vs SCDPO, several seeds.

    python scripts/toy_experiment.py [--seeds 0 1 2] [--output-dir runs/toy_experiment] [quickstart options]

Each seed runs ``mlx-scdpo quickstart --data-equal`` (sampling, pairs, training and
evaluation all seeded) from the same embedded SFT model and reports greedy accuracy on
the toy test set, then a markdown table of mean and standard deviation over seeds,
written to ``OUTPUT_DIR/results.md``.
"""

import argparse
import json
import statistics
from dataclasses import fields
from pathlib import Path

import mlx_scdpo  # noqa: F401
from mlx_scdpo.quickstart import QuickstartArgs, run_quickstart

VARIANTS = [("SFT", "sft_accuracy"), ("DPO (naive pairs)", "dpo_accuracy"),
            ("DPO (data-equal naive pairs)", "dpo_equal_accuracy"), ("SCDPO (naive + step-controlled)", "scdpo_accuracy")]


def table(runs: list[dict]) -> str:
    lines = ["| model | accuracy (mean ± sd) | per seed | pairs |", "|---|---|---|---|"]
    pair_counts = {
        "dpo_accuracy": lambda r: r["pairs_dpo"]["train"],
        "dpo_equal_accuracy": lambda r: r["pairs_data_equal"]["train"],
        "scdpo_accuracy": lambda r: r["pairs_scdpo"]["train"],
    }
    for label, key in VARIANTS:
        vals = [100 * r[key] for r in runs]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        pairs = "/".join(str(pair_counts[key](r)) for r in runs) if key in pair_counts else "-"
        lines.append(f"| {label} | {statistics.mean(vals):.1f} ± {sd:.1f} | "
                     f"{', '.join(f'{v:.1f}' for v in vals)} | {pairs} |")
    shares = {name: [r["credit"][name]["negative_share_after_error"] for r in runs
                     if r["credit"].get(name, {}).get("negative_share_after_error") is not None]
              for name in ("dpo", "dpo_equal", "scdpo")}
    lines += ["", "| model | share of negative reward on/after the first wrong step (mean over seeds) |", "|---|---|"]
    for name, vals in shares.items():
        if vals:
            lines.append(f"| {name.upper()} | {100 * statistics.mean(vals):.1f}% |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output-dir", default="runs/toy_experiment")
    for f in fields(QuickstartArgs):
        if f.name not in ("seed", "output_dir", "data_equal", "model") and not isinstance(f.default, bool):
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default) if f.default is not None else int,
                            default=f.default)
    ns = vars(ap.parse_args())
    seeds, out = ns.pop("seeds"), Path(ns.pop("output_dir"))
    runs = []
    for seed in seeds:
        res_path = out / f"seed{seed}" / "results.json"
        if res_path.exists():  # resumable: finished seeds are kept
            runs.append(json.loads(res_path.read_text()))
            continue
        runs.append(run_quickstart(QuickstartArgs(output_dir=str(out / f"seed{seed}"), seed=seed, data_equal=True,
                                                  progress=False, **ns)))
    md = table(runs)
    (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
