"""fp32 matmul GFLOP/s with and without the OpenBLAS preload, side by side (two subprocesses).

python scripts/bench/blas.py [--n 1024] [--reps 5]
"""

import argparse
import os
import subprocess
import sys

SNIPPET = r"""
import sys, time
import mlx_scdpo, mlx_scdpo.blas as b
import mlx.core as mx
n, reps = int(sys.argv[1]), int(sys.argv[2])
a = mx.random.normal((n, n)); c = mx.random.normal((n, n)); mx.eval(a, c)
mx.eval(a @ c)
t = time.perf_counter()
for _ in range(reps):
    mx.eval(a @ c)
dt = (time.perf_counter() - t) / reps
print(f"{2 * n ** 3 / dt / 1e9:.1f} {b.loaded_path}")
"""


def run(n, reps, opt_out):
    env = dict(os.environ, MLX_SCDPO_NO_OPENBLAS="1" if opt_out else "0")
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(n), str(reps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), out[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    fast, lib = run(args.n, args.reps, False)
    slow, _ = run(args.n, args.reps, True)
    print(
        f"OpenBLAS ({lib}): {fast:.1f} GFLOP/s; reference BLAS: {slow:.1f} GFLOP/s; ratio {fast / slow:.1f}x"
    )


if __name__ == "__main__":
    main()
