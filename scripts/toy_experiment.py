"""The paper's comparison at toy scale: SFT vs DPO vs DPO (data-equal) vs SCDPO, several seeds.

    python scripts/toy_experiment.py [--seeds 0 1 2 3 4] [--settings short long] [--n-test 4000]
                                     [--jobs 2] [--output-dir runs/toy_experiment] [quickstart options]

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

``--jobs N`` runs N seeds at a time in their own processes, each with one BLAS thread: the toy
model's matrices are too small for two threads to share one matmul well, so two single-threaded
seeds finish sooner than two seeds one after the other (``scripts/bench/toy_jobs.py``). Each
seed's outputs are the same either way (a seed's work is seeded and runs in one process).

The 95% interval (``mlx_scdpo.toy.evaluate.mean_with_interval``) combines the two sources of noise, the
seeds and the finite test set; differences use it on per-(seed, problem) differences, so
they are paired.
"""

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np

import mlx_scdpo  # noqa: F401
from mlx_scdpo.blas import set_openblas_threads
from mlx_scdpo.config import check_values
from mlx_scdpo.errors import CommandError
from mlx_scdpo.jsonl import write_text_atomic
from mlx_scdpo.run_state import folder_lock
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


def _seed_worker_init(parent: int):
    """A parallel seed's process: one BLAS thread, unless the user chose a number; and it ends
    with the experiment (a kill -9 of the parent would otherwise leave it running, holding its
    seed folder's lock against the rerun). A watcher thread, as macOS has no PR_SET_PDEATHSIG."""
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        set_openblas_threads(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_seed(name: str, seed: int, out: Path, options: dict, sft_eval: dict) -> None:
    """One seed of one setting: ``quickstart --data-equal`` in ``out/seed{seed}``."""
    lo, hi = SETTINGS[name]
    print(f"== {name} seed {seed}", flush=True)
    run_quickstart(
        QuickstartArgs(
            **options,
            output_dir=str(out / f"seed{seed}"),
            seed=seed,
            data_equal=True,
            progress=False,
            min_steps=lo,
            max_steps=hi,
        ),
        sft_eval=sft_eval,
    )


def sft_evaluation(name: str, out: Path, options: dict) -> dict:
    """The SFT model's test summary, computed once per setting (greedy decoding is deterministic)."""
    lo, hi = SETTINGS[name]
    out.mkdir(parents=True, exist_ok=True)
    sft_file = out / "sft_eval.json"
    if not sft_file.exists():
        test = toy_splits(0, 0, options["n_test"], min_steps=lo, max_steps=hi).test
        t = time.perf_counter()
        summary = evaluate_on(options.get("model") or default_model(hi), test, out / "sft_eval.jsonl")
        summary["seconds"] = round(time.perf_counter() - t, 1)
        write_text_atomic(sft_file, json.dumps(summary, indent=2))
    return json.loads(sft_file.read_text())


def run_seeds(todo: list[tuple[str, int]], out: Path, options: dict, sft: dict, jobs: int) -> None:
    """Every (setting, seed) in ``todo``, ``jobs`` at a time in their own processes (one pool for
    both settings, so no core idles while the other finishes a setting's last seed)."""
    if jobs == 1 or len(todo) == 1:
        for name, seed in todo:
            run_seed(name, seed, out / name, options, sft[name])
        return
    with ProcessPoolExecutor(
        min(jobs, len(todo)),
        multiprocessing.get_context("spawn"),
        initializer=_seed_worker_init,
        initargs=(os.getpid(),),
    ) as pool:
        running = [pool.submit(run_seed, n, s, out / n, options, sft[n]) for n, s in todo]
        for done in running:
            done.result()  # a failed seed raises here, after the others finished


def collect_setting(name: str, seeds: list[int], out: Path, sft_eval: dict) -> dict:
    """A setting's finished seeds: their results and each method's (seeds, problems) scores."""
    runs = {s: json.loads((out / f"seed{s}" / "results.json").read_text()) for s in seeds}
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
    ap.add_argument("--jobs", type=int, default=2, help="seeds run at a time, in their own processes")
    skip = ("seed", "output_dir", "data_equal", "min_steps", "max_steps", "progress", "skip_scdpo")
    hints = get_type_hints(QuickstartArgs)
    for f in fields(QuickstartArgs):
        if f.name not in skip and not isinstance(f.default, bool):
            # "float | None" -> float: unset options keep quickstart's own per-setting defaults
            typ = next(t for t in get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
            ap.add_argument(
                "--" + f.name.replace("_", "-"),
                type=typ,
                default=4000 if f.name == "n_test" else f.default,
            )
    ns = vars(ap.parse_args())
    seeds, settings, out = ns.pop("seeds"), ns.pop("settings"), Path(ns.pop("output_dir"))
    jobs = ns.pop("jobs")
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1 (got {jobs})")
    if not 1 <= ns["n_test"] <= 4000:  # checked before any folder is made
        raise ValueError(f"--n-test must be 1..4000 (at most 4000 test problems; got {ns['n_test']})")
    check_values(QuickstartArgs(**ns, output_dir=str(out)))  # quickstart's ranges, before any folder
    t0 = time.perf_counter()
    parts, summaries = [], []
    with folder_lock(out, "toy_experiment"):  # a second run on this folder: one line, exit 2
        sft = {name: sft_evaluation(name, out / name, ns) for name in settings}
        # Finished seeds are kept (resumable); the longer setting's seeds first, for an even finish.
        todo = [(n, s) for n in sorted(settings, key=lambda n: -SETTINGS[n][1]) for s in seeds]
        run_seeds(
            [(n, s) for n, s in todo if not (out / n / f"seed{s}" / "results.json").exists()],
            out,
            ns,
            sft,
            jobs,
        )
        for name in settings:
            md, summary = table(name, collect_setting(name, seeds, out / name, sft[name]), out / name, seeds)
            parts.append(md)
            summaries.append(summary)
        wall = (time.perf_counter() - t0) / 60
        md = "\n\n".join(parts) + f"\n\nThis invocation: {wall:.1f} minutes of wall time, --jobs {jobs}."
        write_text_atomic(out / "results.md", md + "\n")
        report = {"options": ns, "jobs": jobs, "wall_minutes": wall, "settings": summaries}
        write_text_atomic(out / "results.json", json.dumps(report, indent=2))
    print(md)


if __name__ == "__main__":
    try:
        main()
    except (CommandError, ValueError) as e:  # a seed folder in use, a bad size: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
