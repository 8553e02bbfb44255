"""DPO step throughput and peak memory: mlx-scdpo vs mlx-lm-lora, same model, pairs, batch, rank, lengths.

    python scripts/bench/train.py [--size 50m] [--batch-size 8] [--prompt-len 64] [--response-len 64]
                                  [--checkpoint-layers N] [--no-fast-swiglu]

Each implementation runs in its own subprocess (clean peak-memory reading) on a random
Qwen2-shaped model from ``scripts/make_tiny_model.py`` with identical token sequences.
Throughput = sequence tokens per optimizer step (chosen + rejected rows) / median step time
after warm-up steps. mlx-lm-lora (``bench`` extra) keeps a second full model as reference
and runs chosen and rejected in separate passes; its ``mx.device_info()`` memory lookup is
patched on Linux, where MLX's CPU backend has no such key. mlx-scdpo's one-time reference
pass (cached on disk) is reported separately.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pairs(n, vocab, prompt_len, response_len, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        prompt = rng.integers(10, vocab, prompt_len).tolist()
        pairs.append(
            {
                "prompt_ids": prompt,
                "chosen_ids": rng.integers(10, vocab, response_len).tolist(),
                "rejected_ids": rng.integers(10, vocab, response_len).tolist(),
                "prompt": "",
                "chosen": "",
                "rejected": "",
            }
        )
    return pairs


def run_ours(cfg):
    import mlx.core as mx

    import mlx_scdpo  # noqa: F401
    from mlx_scdpo.training.train import TrainArgs, run_train

    times = []
    args = TrainArgs(
        model=cfg["model"],
        data=cfg["pairs"],
        adapter_path=cfg["out"],
        num_layers=-1,
        lora_rank=cfg["rank"],
        batch_size=cfg["batch_size"],
        iters=cfg["iters"],
        steps_per_report=1,
        steps_per_eval=0,
        save_every=10**6,
        warmup_ratio=0.0,
        max_length=4096,
        max_prompt_length=4096,
        ref_cache_dir=cfg["out"] + "/ref",
        progress=False,
        grad_checkpoint_layers=cfg["checkpoint_layers"],
        fast_swiglu=cfg["fast_swiglu"],
    )
    t0 = time.perf_counter()
    mx.reset_peak_memory()
    run_train(args, on_report=lambda r: times.append(time.perf_counter()))
    return {"times": times, "total_s": time.perf_counter() - t0, "peak_gb": mx.get_peak_memory() / 1e9}


def run_theirs(cfg):
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    import mlx_scdpo  # noqa: F401  (same BLAS for both)

    mx.device_info = lambda: {"max_recommended_working_set_size": 0}  # Linux CPU has no memory keys
    mx.set_wired_limit = lambda *a, **k: 0
    from mlx_lm_lora.trainer.dpo_trainer import DPOTrainingArgs, train_dpo

    class Callback:
        def __init__(self):
            self.times = []

        def on_train_loss_report(self, info):
            self.times.append(time.perf_counter())

        def on_val_loss_report(self, info):
            pass

    t0 = time.perf_counter()
    mx.reset_peak_memory()
    model, _ = load(cfg["model"])
    ref_model, _ = load(cfg["model"])
    ref_model.freeze()
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {"rank": cfg["rank"], "scale": 20.0, "dropout": 0.0})
    data = []
    for p in map(json.loads, Path(cfg["pairs"]).read_text().splitlines()):
        data.append(
            {
                "chosen": p["prompt_ids"] + p["chosen_ids"] + [2],
                "rejected": p["prompt_ids"] + p["rejected_ids"] + [2],
                "chosen_prompt_length": len(p["prompt_ids"]),
                "rejected_prompt_length": len(p["prompt_ids"]),
            }
        )
    args = DPOTrainingArgs(
        batch_size=cfg["batch_size"],
        iters=cfg["iters"],
        steps_per_report=1,
        steps_per_eval=10**6,
        steps_per_save=10**6,
        max_seq_length=4096,
        adapter_file=cfg["out"] + "/a.safetensors",
        beta=0.1,
    )
    cb = Callback()
    train_dpo(model, ref_model, optim.AdamW(learning_rate=1e-5), data, None, args, training_callback=cb)
    return {"times": cb.times, "total_s": time.perf_counter() - t0, "peak_gb": mx.get_peak_memory() / 1e9}


def summarize(res, tokens_per_step, warmup):
    diffs = np.diff(res["times"])[warmup:]
    step = statistics.median(diffs)
    return {
        "step_s": step,
        "tokens_per_s": tokens_per_step / step,
        "peak_gb": res["peak_gb"],
        "total_s": res["total_s"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="50m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=64)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--checkpoint-layers",
        type=int,
        nargs="+",
        default=[0],
        help="ours: --grad-checkpoint-layers (-1: all); several values run ours once each",
    )
    ap.add_argument("--no-fast-swiglu", action="store_true", help="ours: --no-fast-swiglu")
    ap.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cfg", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.impl:
        cfg = json.loads(args.cfg)
        print("RESULT " + json.dumps(run_ours(cfg) if args.impl == "ours" else run_theirs(cfg)))
        return
    with tempfile.TemporaryDirectory() as d:
        from mlx_scdpo.toy.tiny_model import make_tiny_model

        model = str(make_tiny_model(Path(d) / "model", args.size))
        pairs = make_pairs(args.batch_size * args.iters, 1000, args.prompt_len, args.response_len)
        (Path(d) / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
        tokens_per_step = args.batch_size * 2 * (args.prompt_len + args.response_len + 1)
        results = {}
        runs = [("mlx-lm-lora", "theirs", 0)] + [
            ("ours" if n == 0 else f"ours ckpt {'all' if n == -1 else n}", "ours", n)
            for n in args.checkpoint_layers
        ]
        for name, impl, n in runs:
            cfg = {
                "model": model,
                "pairs": str(Path(d) / "pairs.jsonl"),
                "out": str(Path(d) / f"run{len(results)}"),
                "rank": args.rank,
                "batch_size": args.batch_size,
                "iters": args.iters,
                "checkpoint_layers": n,
                "fast_swiglu": not args.no_fast_swiglu,
            }
            Path(cfg["out"]).mkdir()
            out = subprocess.run(
                [sys.executable, __file__, "--impl", impl, "--cfg", json.dumps(cfg)],
                capture_output=True,
                text=True,
            )
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name] = summarize(json.loads(line[7:]), tokens_per_step, args.warmup)
            print(
                f"{name:>14}: {results[name]['tokens_per_s']:.0f} tokens/s, step {results[name]['step_s']:.2f} s, "
                f"peak {results[name]['peak_gb']:.2f} GB, whole run {results[name]['total_s']:.1f} s",
                flush=True,
            )
    theirs = results.pop("mlx-lm-lora")
    for name, ours in results.items():
        print(
            f"{name}: tokens/s {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x; "
            f"peak memory {ours['peak_gb'] / theirs['peak_gb']:.2f}x"
        )


if __name__ == "__main__":
    main()
