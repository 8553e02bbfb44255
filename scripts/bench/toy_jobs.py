"""Toy experiment seeds one after the other (``--jobs 1``) vs two at a time (``--jobs 2``), one command.

    python scripts/bench/toy_jobs.py [--setting short] [--n-train 60] [--n-test 400] [--iters 16]
                                     [--repeats 2]

Runs ``scripts/toy_experiment.py`` on two seeds, small sizes, in fresh temporary folders, with
``--jobs 1`` (one process, OpenBLAS's default threads) and ``--jobs 2`` (two processes, one BLAS
thread each), interleaved; checks that both give the same per-problem test rows (a seed's work
does not depend on how many seeds run beside it) and prints the median wall times and their
ratio. The SFT evaluation, shared by both, is computed once beforehand and copied in.
"""

import argparse
import filecmp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "toy_experiment.py"


def run(jobs: int, out: Path, args) -> float:
    cmd = [sys.executable, str(SCRIPT), "--seeds", "0", "1", "--settings", args.setting]
    cmd += ["--n-train", str(args.n_train), "--n-test", str(args.n_test), "--iters", str(args.iters)]
    cmd += ["--jobs", str(jobs), "--output-dir", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="short", choices=["short", "long"])
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--iters", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = tmp / "warm"
        run(1, warm, argparse.Namespace(**{**vars(args), "n_train": 8, "iters": 2}))  # SFT eval, caches
        times = {1: [], 2: []}
        for r in range(args.repeats):  # interleaved, so machine noise hits both alike
            for jobs in (1, 2):
                out = tmp / f"jobs{jobs}_{r}"
                (out / args.setting).mkdir(parents=True)
                for name in ("sft_eval.json", "sft_eval.jsonl"):
                    shutil.copy(warm / args.setting / name, out / args.setting / name)
                times[jobs].append(run(jobs, out, args))
        for seed in (0, 1):
            for method in ("dpo", "dpo_equal", "scdpo"):
                a, b = (
                    tmp / f"jobs{j}_0" / args.setting / f"seed{seed}" / "eval" / f"{method}.jsonl"
                    for j in (1, 2)
                )
                assert filecmp.cmp(a, b, shallow=False), (
                    f"seed {seed} {method}: rows differ between --jobs 1 and 2"
                )
    med = {j: statistics.median(v) for j, v in times.items()}
    print(f"2 seeds, {args.setting}, n_train {args.n_train}, n_test {args.n_test}, iters {args.iters}")
    print(f"--jobs 1: {med[1]:.1f} s   --jobs 2: {med[2]:.1f} s   ratio {med[1] / med[2]:.2f}x")
    print("runs (s):", {f"jobs {j}": [round(t, 1) for t in v] for j, v in times.items()})


if __name__ == "__main__":
    main()
