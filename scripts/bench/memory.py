"""Peak memory of `mlx-scdpo train` at real lengths, measured, next to the preflight estimate.

    python scripts/bench/memory.py [--runs b8-gc:1,b1:2,b1-unchunked:2] [--work-dir /tmp/scdpo-mem]
    python scripts/bench/memory.py --compare scripts/bench/memory_results.json  # today's estimator
    python scripts/bench/memory.py --project   # the estimate for Qwen2.5-Math-1.5B and -7B

A random model of Qwen2.5-0.5B's shape (``mlx_lm.models.qwen2``: vocabulary 151,936, hidden
896, 24 layers, 14 heads, 2 KV heads, intermediate 4,864, tied embeddings; float32 on disk)
and pairs of 512 prompt + 512 response tokens (511 + EOS; random ids). Each run is one
`mlx-scdpo train` subprocess with default settings but the run's own; its peak RSS comes
from ``wait4`` (the kernel's figure for the whole process, MLX's buffer cache included), and
the estimate is what the preflight printed (``mlx_scdpo.training.memory``). The reference log-probs
are written beforehand (as zeros: ``write_zero_reference``), so a run measures the
preflight and the training steps, whose peak is above the reference pass's. The runs are
slow on a CPU (a batch-8 step is tens of CPU-minutes): pick them with ``--runs``.
Results go to ``--out`` (JSON) and a table; ``--compare`` prints that table again with the
current estimator's figures, for calibration without new runs.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

QWEN05 = dict(
    model_type="qwen2",
    architectures=["Qwen2ForCausalLM"],
    hidden_size=896,
    num_hidden_layers=24,
    intermediate_size=4864,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    torch_dtype="float32",
)

#: name -> extra `train` options (default settings otherwise).
RUNS = {
    "b8-gc": ["--batch-size", "8", "--grad-checkpoint"],
    "b8": ["--batch-size", "8"],
    "b2-gc": ["--batch-size", "2", "--grad-checkpoint"],
    "b1": ["--batch-size", "1"],
    "b1-gc": ["--batch-size", "1", "--grad-checkpoint"],
    "b1-unchunked": ["--batch-size", "1", "--logits-chunk", "0"],
    "b2": ["--batch-size", "2"],
    "b2-unchunked": ["--batch-size", "2", "--logits-chunk", "0"],
}


def make_model(folder: Path) -> Path:
    """The random Qwen2.5-0.5B-shaped model folder (made once; ~2 GB of float32 weights)."""
    if (folder / "config.json").is_file():
        return folder
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    from mlx_scdpo.toy.tiny_model import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder, 1024, 0)  # ids come with the pairs: the tokenizer only names EOS and padding
    from tokenizers import Tokenizer

    eos = Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id("<|im_end|>")
    mx.random.seed(0)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(QWEN05))
    mx.save_safetensors(
        str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"}
    )
    (folder / "config.json").write_text(json.dumps({**QWEN05, "eos_token_id": eos}, indent=2))
    return folder


def make_pairs(path: Path, n: int, prompt_len: int, response_len: int, eos: int, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = lambda k: rng.integers(10, QWEN05["vocab_size"], k).tolist()  # noqa: E731
    rows = [
        {
            "prompt": "",
            "chosen": "",
            "rejected": "",
            "prompt_ids": ids(prompt_len),
            "chosen_ids": ids(response_len - 1) + [eos],
            "rejected_ids": ids(response_len - 1) + [eos],
        }
        for _ in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_zero_reference(model: Path, pairs: Path, ref_dir: Path, eos: int) -> None:
    """Reference log-probs of the pairs, as zeros, where `train` looks for them: their values do not change
    the memory of a training step, and each run skips the reference pass (many minutes on a CPU)."""
    from types import SimpleNamespace

    import numpy as np

    from mlx_scdpo.training.preference_data import load_pairs, tokenize_pair
    from mlx_scdpo.training.train import TrainArgs, _fingerprint

    rows, _ = load_pairs(str(pairs.parent))
    args = TrainArgs(model=str(model), data=str(pairs.parent))
    tokenized = [
        tokenize_pair(SimpleNamespace(eos_token_id=eos), r, args.max_length, args.max_prompt_length)
        for r in rows
    ]
    ref_dir.mkdir(parents=True, exist_ok=True)
    for fast in (False, True):  # whichever the run's SwiGLU setting is
        for suffix in ("", "-shared"):
            np.save(
                ref_dir / f"{_fingerprint(args, tokenized, fast)}{suffix}.npy",
                np.zeros((len(rows), 2), dtype=np.float32),
            )


def run_train(model: Path, pairs: Path, out: Path, extra: list[str], iters: int) -> dict:
    """One `train` subprocess: peak RSS (GB), the preflight's estimate, wall time."""
    cmd = [
        sys.executable,
        "-m",
        "mlx_scdpo.cli",
        "train",
        "--model",
        str(model),
        "--data",
        str(pairs),
        "--adapter-path",
        str(out),
        "--iters",
        str(iters),
        "--steps-per-eval",
        "0",
        "--steps-per-report",
        "1",
        "--ref-cache-dir",
        str(out.parent / "refcache"),
        "--memory-limit-gb",
        "0",
        "--no-progress",
        *extra,
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    est = re.search(r"estimated peak memory ([\d.]+) GB", text)
    return {
        "options": extra,
        "iters": iters,
        "exit": os.waitstatus_to_exitcode(status),
        "peak_rss_gb": rss / 1e9,
        "preflight_gb": float(est.group(1)) if est else None,
        "wall_s": time.time() - t0,
        "output_tail": text[-1500:],
    }


def estimate_for(options: list[str], prompt_len: int, response_len: int) -> float:
    """The current estimator's figure for a saved run (the same settings as its `train` options)."""
    from mlx_scdpo.training.memory import TrainShape, estimate_peak
    from mlx_scdpo.training.train import TrainArgs

    args = TrainArgs(model="", data="")
    it = iter(options)
    for flag in it:
        name = flag[2:].replace("-", "_")
        if name == "grad_checkpoint":
            args.grad_checkpoint = True
        else:
            setattr(args, name, type(getattr(args, name))(next(it)))
    shape = TrainShape.from_config(QWEN05, dtype_bytes=4)
    return estimate_peak(shape, args, prompt_len, response_len, shared=True).total / 1e9


#: Shapes of the models a Mac user trains (config.json of Qwen2.5-Math-1.5B / -7B), for --project.
QWEN_MATH = {
    "Qwen2.5-Math-1.5B": dict(
        hidden_size=1536,
        num_hidden_layers=28,
        intermediate_size=8960,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "Qwen2.5-Math-7B": dict(
        hidden_size=3584,
        num_hidden_layers=28,
        intermediate_size=18944,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
}


def projection(prompt_len: int, response_len: int) -> str:
    """The estimator's peak for 1.5B and 7B in bf16 and 4-bit (group 64: 0.5625 bytes a weight)."""
    from dataclasses import replace

    from mlx_scdpo.training.memory import TrainShape, estimate_peak
    from mlx_scdpo.training.train import TrainArgs

    settings = [
        ("batch 8", {}),
        ("batch 8, --grad-checkpoint", {"grad_checkpoint": True}),
        ("batch 2, --grad-checkpoint", {"batch_size": 2, "grad_checkpoint": True}),
        ("batch 1, --grad-checkpoint", {"batch_size": 1, "grad_checkpoint": True}),
    ]
    lines = [f"{'model':<20} {'weights':<8} " + " ".join(f"{name:>27}" for name, _ in settings)]
    for model, config in QWEN_MATH.items():
        bf16 = TrainShape.from_config(config, dtype_bytes=2)
        for label, shape in (
            ("bf16", bf16),
            ("4-bit", replace(bf16, weight_bytes=int(bf16.weight_bytes / 2 * 0.5625))),
        ):
            peaks = [
                estimate_peak(
                    shape, replace(TrainArgs(model="", data="", batch_size=8), **kw), prompt_len, response_len
                ).total
                / 1e9
                for _, kw in settings
            ]
            lines.append(f"{model:<20} {label:<8} " + " ".join(f"{p:>24.1f} GB" for p in peaks))
    return "\n".join(lines)


def table(results: dict, prompt_len: int, response_len: int) -> str:
    lines = [
        f"{'run':<14} {'options':<36} {'peak RSS GB':>11} {'preflight GB':>12} {'estimate GB':>11} "
        f"{'est/meas':>8} {'wall s':>7}"
    ]
    for name, r in results.items():
        est = estimate_for(r["options"], prompt_len, response_len)
        lines.append(
            f"{name:<14} {' '.join(r['options']):<36} {r['peak_rss_gb']:>11.2f} "
            f"{r['preflight_gb'] if r['preflight_gb'] is not None else float('nan'):>12.2f} {est:>11.2f} "
            f"{est / r['peak_rss_gb']:>8.2f} {r['wall_s']:>7.0f}"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--runs",
        default="b8-gc:1,b1:2,b1-unchunked:2",
        help=f"comma-separated NAME[:ITERS] (training steps, default 1), NAME of {', '.join(RUNS)}",
    )
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--response-len", type=int, default=512)
    p.add_argument(
        "--pairs", type=int, default=8, help="pairs in the data (the reference pass covers them all)"
    )
    p.add_argument("--work-dir", default="/tmp/scdpo-memory-bench")
    p.add_argument("--out", default="scripts/bench/memory_results.json")
    p.add_argument(
        "--compare", default=None, help="a saved --out file: print its table with today's estimator"
    )
    p.add_argument("--project", action="store_true", help="print the estimate for Qwen2.5-Math-1.5B and -7B")
    a = p.parse_args()
    if a.compare:
        saved = json.loads(Path(a.compare).read_text())
        print(table(saved["runs"], saved["prompt_len"], saved["response_len"]))
        return
    if a.project:
        print(projection(a.prompt_len, a.response_len))
        return
    work = Path(a.work_dir)
    model = make_model(work / "qwen2.5-0.5b-shape")
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    pairs = make_pairs(work / "pairs" / "train.jsonl", a.pairs, a.prompt_len, a.response_len, eos)
    write_zero_reference(model, pairs, work / "adapters" / "refcache", eos)
    out_path = Path(a.out)
    saved = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results = saved.get("runs", {}) if saved.get("prompt_len") == a.prompt_len else {}
    for run in a.runs.split(","):
        name, _, iters = run.partition(":")
        r = run_train(model, pairs.parent, work / "adapters" / name, RUNS[name], int(iters or 1))
        results[name] = r
        print(
            f"{name}: peak RSS {r['peak_rss_gb']:.2f} GB, preflight {r['preflight_gb']} GB, exit {r['exit']}, "
            f"{r['wall_s']:.0f} s",
            flush=True,
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(
            json.dumps(
                {
                    "prompt_len": a.prompt_len,
                    "response_len": a.response_len,
                    "model": QWEN05,
                    "runs": results,
                },
                indent=2,
            )
        )
    print(table(results, a.prompt_len, a.response_len))


if __name__ == "__main__":
    main()
