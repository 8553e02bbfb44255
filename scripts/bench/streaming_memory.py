"""Memory of streaming `sample` / `step-control` against dataset size, and the throughput cost of
step control, each side by side with its baseline:

1. peak RSS of `sample` and of `step-control` on the toy world (embedded toy model) with
   ``--small`` and ``--large`` problems, each run in its own child process; the ratio
   large / small should be about 1 (memory is set by the batch, not the dataset);
2. generated tokens/s of step-controlled sampling (``mlx_scdpo.generation.windows.stream_completions`` with each
   prefix's ramp, its own PRNG stream and its prefilled KV cache, as `step-control`) against raw
   mlx-lm ``BatchGenerator`` (one shared temperature sampler, no processors, no cache reuse) on
   the same prefixes, alternating, every continuation exactly ``--max-tokens`` tokens.

    python scripts/bench/streaming_memory.py [--small 100 --large 800] [--size 50m]

`step-control` reads toy solutions written here (each problem's correct solution, as if
sampled), so its run does not wait on a sampling run of the same size.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX on Linux)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def child(args) -> None:
    """One command in this process; prints its peak RSS and counts as JSON."""
    from mlx_scdpo.toy.sft import ASSET_DIR

    t = time.perf_counter()
    if args.child == "sample":
        from mlx_scdpo.method.sampling import SampleArgs, run_sample

        res = run_sample(
            SampleArgs(
                model=str(ASSET_DIR),
                output_dir=args.out,
                task="gsm8k",
                data_files=args.data,
                samples_per_round=2,
                budget=2,
                max_tokens=48,
                batch_size=args.batch_size,
                problems_per_batch=args.batch_size // 2,
                progress=False,
            )
        )
    else:
        from mlx_scdpo.method.step_control import StepControlArgs, run_step_control

        res = run_step_control(
            StepControlArgs(
                model=str(ASSET_DIR),
                solutions=args.data,
                output_dir=args.out,
                rounds=2,
                max_tokens=48,
                batch_size=args.batch_size,
                progress=False,
            )
        )
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - t, **res}))


def toy_solutions(problems, path: Path) -> None:
    from mlx_lm import load

    from mlx_scdpo.toy.sft import ASSET_DIR

    _, tok = load(str(ASSET_DIR))
    with open(path, "w") as f:
        for i, p in enumerate(problems):
            prompt, text = f"Q: {p.question}\n", p.solution()
            f.write(
                json.dumps(
                    {
                        "problem_id": f"toy/{i}",
                        "task": "gsm8k",
                        "question": p.question,
                        "gold": str(p.answer),
                        "prompt": prompt,
                        "prompt_ids": tok.encode(prompt, add_special_tokens=False),
                        "samples": [
                            {"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}
                        ],
                    }
                )
                + "\n"
            )


def run_child(command: str, data: Path, out: Path, batch_size: int) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            command,
            "--data",
            str(data),
            "--out",
            str(out),
            "--batch-size",
            str(batch_size),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"{command} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(args) -> None:
    from mlx_scdpo.toy.world import make_splits, write_jsonl

    train, _ = make_splits(args.large, 0, seed=0)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for command in args.commands:
            peaks = {}
            for n in (args.small, args.large):
                data = d / f"{command}_{n}.jsonl"
                if command == "sample":
                    write_jsonl(train[:n], data)
                else:
                    toy_solutions(train[:n], data)
                r = run_child(command, data, d / f"out_{command}_{n}", args.batch_size)
                peaks[n] = r["peak_rss_mb"]
                units = f"{r['problems']} problems" + (
                    f", {r['prefixes']} prefixes" if "prefixes" in r else ""
                )
                print(
                    f"{command:>12} {n:>5} problems: peak RSS {r['peak_rss_mb']:7.0f} MB ({units}, "
                    f"{r['seconds']:.0f} s)",
                    flush=True,
                )
            print(
                f"{command:>12} peak RSS {args.large} / {args.small} problems: "
                f"{peaks[args.large] / peaks[args.small]:.3f}x",
                flush=True,
            )


def throughput(args) -> None:
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    from mlx_scdpo.generation.batched import prefill_cache
    from mlx_scdpo.generation.ramp import StepRamp
    from mlx_scdpo.generation.windows import Request, item_noise, stream_completions
    from mlx_scdpo.toy.tiny_model import make_tiny_model

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
        caches = [prefill_cache(model, p) for p in prompts]
        reqs = [
            Request(i, p, [ramp.processor(), item_noise(1.0, 0, "bench", i, 1)], cache=c)
            for i, (p, c) in enumerate(zip(prompts, caches))
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
        gen = BatchGenerator(
            model,
            max_tokens=args.max_tokens,
            sampler=make_sampler(temp=1.1),
            completion_batch_size=args.batch_size,
            prefill_batch_size=min(args.batch_size, 8),
        )
        gen.insert(prompts, [args.max_tokens] * len(prompts))
        n = 0
        while responses := gen.next_generated():
            n += len(responses)
        gen.close()
        return n

    ours(), raw()  # warm-up (compilation, allocations)
    rates = {"raw": [], "ours": []}
    for _ in range(args.repeats):
        for name, fn in (("raw", raw), ("ours", ours)):
            t = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t))
    ratios = [o / r for o, r in zip(rates["ours"], rates["raw"])]
    print(
        f"raw BatchGenerator: {statistics.median(rates['raw']):.0f} tokens/s; step-controlled (ours): "
        f"{statistics.median(rates['ours']):.0f} tokens/s (medians of {args.repeats}, {args.prefixes} prefixes x "
        f"{args.max_tokens} tokens, {args.size} model)"
    )
    print(
        f"ours / raw: median {statistics.median(ratios):.2f}x (runs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", default="50m", help="random model for the throughput comparison")
    ap.add_argument("--prefixes", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", choices=["memory", "throughput"], default=None)
    ap.add_argument(
        "--commands", nargs="+", choices=["sample", "step-control"], default=["sample", "step-control"]
    )
    ap.add_argument("--child", choices=["sample", "step-control"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.skip != "memory":
        memory(args)
    if args.skip != "throughput":
        throughput(args)


if __name__ == "__main__":
    main()
