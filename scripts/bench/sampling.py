"""Step-controlled sampling throughput (generated tokens/s), side by side on the same prefixes:

* ours: ``mlx_scdpo.generation.windows.stream_completions`` with the temperature-ramp processor and its own PRNG
  stream (``ItemNoise``) per sequence, and each prefix's KV cache prefilled once and copied
  in (as ``step-control``);
* (a) a plain loop of ``mlx_lm.generate`` (``stream_generate``) per continuation, with the
  same ramp as a logits processor (what a naive driver does);
* (b) raw ``BatchGenerator`` (``generate_batched`` with a plain temperature-1.1 sampler,
  no processors, no cache reuse) on the same prompts and token budget.

    python scripts/bench/sampling.py [--size 50m] [--prefixes 64] [--max-tokens 64]

Every continuation runs exactly ``--max-tokens`` tokens (no EOS stop), so all three do the
same work per token; (a) is timed on ``--loop-prefixes`` continuations (it is slow).
"""

import argparse
import tempfile
import time

import mlx.core as mx
from mlx_lm import load, stream_generate

import mlx_scdpo  # noqa: F401
from mlx_scdpo.generation.batched import generate_batched, prefill_cache
from mlx_scdpo.generation.ramp import SeededSampler, StepRamp
from mlx_scdpo.generation.windows import Request, item_noise, stream_completions
from mlx_scdpo.toy.tiny_model import make_tiny_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="50m")
    ap.add_argument("--prefixes", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--loop-prefixes", type=int, default=8, help="continuations timed for the slow loop (a)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model, tok = load(str(make_tiny_model(d, args.size)))
    ramp = StepRamp(tok)
    prompts = [
        tok.encode(
            f"Question {i}: what is {i} * {i + 3}?\nStep 1: {i} * {i + 3} = {i * (i + 3)}\nStep 2: add {i}\n",
            add_special_tokens=False,
        )
        for i in range(args.prefixes)
    ]

    def ours():
        reqs = [
            Request(i, p, [ramp.processor(), item_noise(1.0, 0, i)], cache=prefill_cache(model, p))
            for i, p in enumerate(prompts)
        ]

        def pull(n):
            out, reqs[:] = reqs[:n], reqs[n:]
            return out

        return sum(
            len(c.tokens)
            for _, c in stream_completions(
                model, tok, pull, max_tokens=args.max_tokens, batch_size=args.batch_size, stop_tokens=[]
            )
        )

    def raw():
        return sum(
            len(c.tokens)
            for c in generate_batched(
                model,
                tok,
                prompts,
                max_tokens=args.max_tokens,
                batch_size=args.batch_size,
                sampler=SeededSampler(0, temp=1.1),
                stop_tokens=[],
            )
        )

    def loop():
        n = 0
        eos = tok._eos_token_ids
        tok._eos_token_ids = set()  # run to max_tokens, like the others
        try:
            for p in prompts[: args.loop_prefixes]:
                proc = ramp.processor()
                for _ in stream_generate(
                    model,
                    tok,
                    mx.array(p),
                    max_tokens=args.max_tokens,
                    sampler=SeededSampler(0),
                    logits_processors=[proc],
                ):
                    n += 1
        finally:
            tok._eos_token_ids = eos
        return n

    ours()  # warm-up (compilation, allocations)
    results = {}
    for name, fn in (
        ("raw BatchGenerator (b)", raw),
        ("step-controlled (ours)", ours),
        ("mlx_lm.generate loop (a)", loop),
    ):
        t = time.perf_counter()
        n = fn()
        results[name] = n / (time.perf_counter() - t)
        print(f"{name:>26}: {n} tokens, {results[name]:.0f} tokens/s")
    ours_tps = results["step-controlled (ours)"]
    print(
        f"ours / loop (a): {ours_tps / results['mlx_lm.generate loop (a)']:.1f}x; "
        f"ours / raw (b): {ours_tps / results['raw BatchGenerator (b)']:.2f}x"
    )


if __name__ == "__main__":
    main()
