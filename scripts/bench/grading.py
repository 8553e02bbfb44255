"""Grading throughput and worst-case latency: eval.is_equivalent vs Math-Verify, same pairs, one run.

    python scripts/bench/grading.py [--n 1000] [--data ../shared/data/math_test.jsonl]

Pairs (from MATH test gold answers): the gold against a reformatted copy of itself
(``\\dfrac``, spacing, ``$``, a ``\\text{ units}`` suffix: should be equal) and against the gold of
another problem (should differ). Both graders get the same strings wrapped the way
they expect (Math-Verify: ``\\boxed{}`` text through ``parse``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from eval import is_equivalent

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "math_test.jsonl"


def make_pairs(path: Path, n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    from eval.data import load_problems

    golds = [p.gold for p in load_problems("math", data_files=str(path))]
    rng = random.Random(seed)
    rng.shuffle(golds)
    golds = golds[:n]
    pairs = []
    for i, g in enumerate(golds):
        variant = g.replace("\\frac", "\\dfrac").replace("\\pi", "\\pi ")
        variant = f"${variant}$" if i % 2 else f"{variant}\\text{{ units}}" if i % 3 == 0 else variant
        pairs.append((variant, g, True))
        other = next(o for o in golds[i + 1:] + golds if o.strip() != g.strip())
        pairs.append((other, g, False))
    return pairs


def time_grader(name, fn, pairs):
    worst, worst_pair, verdicts = 0.0, None, []
    t0 = time.perf_counter()
    for pred, gold, _ in pairs:
        t = time.perf_counter()
        verdicts.append(bool(fn(pred, gold)))
        dt = time.perf_counter() - t
        if dt > worst:
            worst, worst_pair = dt, (pred, gold)
    total = time.perf_counter() - t0
    agree = sum(v == e for v, (_, _, e) in zip(verdicts, pairs)) / len(pairs)
    return {"grader": name, "pairs": len(pairs), "pairs_per_s": len(pairs) / total, "worst_s": worst,
            "worst_pair": worst_pair, "agreement_with_construction": agree}


def math_verify_fn():
    from math_verify import parse, verify

    def fn(pred, gold):
        return verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + pred + "}"))

    return fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="gold answers (2 pairs each)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    args = ap.parse_args()
    pairs = make_pairs(Path(args.data), args.n)
    is_equivalent("1", "2x")  # start the sympy worker outside the timed region (both get a warm-up)
    mv = math_verify_fn()
    mv("1", "2x")
    ours = time_grader("eval.is_equivalent", lambda p, g: is_equivalent(p, g, "math"), pairs)
    theirs = time_grader("math-verify", mv, pairs)
    for r in (ours, theirs):
        print(json.dumps(r))
    print(f"speedup (pairs/s): {ours['pairs_per_s'] / theirs['pairs_per_s']:.1f}x; "
          f"worst case: ours {ours['worst_s'] * 1e3:.0f} ms, math-verify {theirs['worst_s'] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
