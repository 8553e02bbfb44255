"""Small-block throughput: the warm sandbox vs a fresh ``python -c`` per block, side by side.

    python scripts/bench/executor.py [--blocks 200]

"warm": blocks run one after another in a ``Sandbox`` taken from a ``SandboxPool`` (the
stateful worker is already started). "fresh": each block is its own ``python -c``
subprocess, which is what a naive executor pays (and it cannot keep state between blocks).
"""

import argparse
import subprocess
import sys
import time

import mlx_scdpo  # noqa: F401
from mlx_scdpo.sandbox import SandboxPool

BLOCKS = ["x = 3 * 7", "y = x ** 2 + 1", "print(y)", "from fractions import Fraction\nFraction(y, 6)",
          "sum(i * i for i in range(100))"]


def bench_warm(n):
    with SandboxPool(size=1) as pool:
        with pool.sandbox() as sb:
            sb.run("0")  # take the started worker
            t = time.perf_counter()
            for i in range(n):
                r = sb.run(BLOCKS[i % len(BLOCKS)])
                assert r.error is None, r
            return n / (time.perf_counter() - t)


def bench_fresh(n):
    t = time.perf_counter()
    for i in range(n):
        code = "x = 3 * 7\ny = x ** 2 + 1\n" + BLOCKS[i % len(BLOCKS)].replace("\nFraction", "\nprint(Fraction")
        subprocess.run([sys.executable, "-c", code.replace("(y, 6)", "(y, 6))")], check=True, capture_output=True)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=200)
    args = ap.parse_args()
    warm = bench_warm(args.blocks)
    fresh = bench_fresh(max(20, args.blocks // 5))
    print(f"warm sandbox: {warm:.0f} blocks/s; fresh python -c: {fresh:.1f} blocks/s; ratio {warm / fresh:.0f}x")


if __name__ == "__main__":
    main()
