"""Small-block throughput: the warm sandbox vs a fresh ``python -c`` per block, side by side;
and what starting one confined worker costs against an unconfined one.

    python scripts/bench/executor.py [--blocks 200] [--starts 5]

"warm": blocks run one after another in a ``Sandbox`` taken from a ``SandboxPool`` (the
stateful worker is already started). "fresh": each block is its own ``python -c``
subprocess, which is what a naive executor pays (and it cannot keep state between blocks).
"start": seconds from nothing to a worker ready for its first block, with this host's
isolation (bubblewrap on Linux, Seatbelt on macOS) and without any (``MLX_SCDPO_SANDBOX=unconfined``
with the isolation switched off), each with no preload and with the default preload.
"""

import argparse
import os
import subprocess
import sys
import time
import warnings

import mlx_scdpo  # noqa: F401
from mlx_scdpo.sandbox import isolation as sandbox_isolation
from mlx_scdpo.sandbox.pool import SandboxLimits, SandboxPool
from mlx_scdpo.sandbox.process import _Worker

BLOCKS = [
    "x = 3 * 7",
    "y = x ** 2 + 1",
    "print(y)",
    "from fractions import Fraction\nFraction(y, 6)",
    "sum(i * i for i in range(100))",
]


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
        code = "x = 3 * 7\ny = x ** 2 + 1\n" + BLOCKS[i % len(BLOCKS)].replace(
            "\nFraction", "\nprint(Fraction"
        )
        subprocess.run(
            [sys.executable, "-c", code.replace("(y, 6)", "(y, 6))")], check=True, capture_output=True
        )
    return n / (time.perf_counter() - t)


def bench_start(n, mode, **limits):
    """Median seconds to start one worker (killed again at once)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        w = _Worker(SandboxLimits(**limits), mode)
        times.append(time.perf_counter() - t)
        w.kill()
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    warm = bench_warm(args.blocks)
    fresh = bench_fresh(max(20, args.blocks // 5))
    print(
        f"warm sandbox: {warm:.0f} blocks/s; fresh python -c: {fresh:.1f} blocks/s; ratio {warm / fresh:.0f}x"
    )
    mode = sandbox_isolation.detect()
    os.environ[sandbox_isolation.UNCONFINED_ENV] = "unconfined"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sandbox_isolation.detect(("bwrap", "seatbelt"))
    for preload, label in (((), "no preload"), (None, "default preload")):
        confined = bench_start(args.starts, mode, preload=preload)
        bare = bench_start(args.starts, "unconfined", preload=preload)
        print(
            f"worker start ({label}): {mode} {confined * 1000:.0f} ms; unconfined {bare * 1000:.0f} ms; "
            f"isolation adds {(confined - bare) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
