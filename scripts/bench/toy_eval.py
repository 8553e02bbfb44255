"""Toy greedy evaluation: ``mlx_scdpo.toy.evaluate.greedy_texts`` vs ``eval``'s continuous batching, one process.

    python scripts/bench/toy_eval.py [--n 1024] [--repeats 3]

Both decode the same prompts of the embedded toy model greedily (same tokens, checked); the
baseline is ``mlx_scdpo.generation.batched.generate_batched`` at its best batch size here (128), ours batches
prompts of equal length (512). Prints the median wall time of each and the ratio.
"""

import argparse
import statistics
import time

from mlx_lm import load

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX)
from mlx_scdpo.generation.batched import generate_batched
from mlx_scdpo.toy.evaluate import greedy_texts, toy_prompt_ids
from mlx_scdpo.toy.sft import ASSET_DIR
from mlx_scdpo.toy.world import held_out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model, tok = load(str(ASSET_DIR))
    prompts = [toy_prompt_ids(tok, p.question) for p in held_out(2, 3)[1][: args.n]]
    times = {"generate_batched (batch 128)": [], "toy_eval.greedy_texts (batch 512)": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        t = time.perf_counter()
        ref = {c.index: c.text for c in generate_batched(model, tok, prompts, max_tokens=96, batch_size=128)}
        times["generate_batched (batch 128)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = greedy_texts(model, tok, prompts, max_tokens=96, batch_size=512)
        times["toy_eval.greedy_texts (batch 512)"].append(time.perf_counter() - t)
        assert ours == [ref[i] for i in range(len(prompts))], "the two decoders disagree"
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k}: {v:.1f} s for {args.n} problems")
    base, fast = med.values()
    print(f"speed-up {base / fast:.2f}x (median of {args.repeats}, same tokens)")


if __name__ == "__main__":
    main()
