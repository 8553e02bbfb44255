"""The memory preflight: its estimate against measured peaks, its refusal, the machine's memory."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlx_lm import load

from mlx_scdpo.cli import main
from mlx_scdpo.training.memory import GB, TrainShape, estimate_peak, machine_memory
from mlx_scdpo.training.train import TrainArgs

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "scripts" / "bench" / "memory.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
QWEN05, estimate_for = bench.QWEN05, bench.estimate_for

RESULTS = ROOT / "scripts" / "bench" / "memory_results.json"


def test_estimate_is_within_25_percent_of_the_measured_peaks():
    """Peak RSS of `train` on the Qwen2.5-0.5B-shaped model at 512 + 512 tokens (scripts/bench/memory.py)."""
    saved = json.loads(RESULTS.read_text())
    runs = {name: r for name, r in saved["runs"].items() if r["exit"] == 0}
    assert {"b8-gc", "b1", "b1-gc", "b2-gc", "b1-unchunked"} <= runs.keys()
    for name, r in runs.items():
        est = estimate_for(r["options"], saved["prompt_len"], saved["response_len"])
        assert abs(est - r["peak_rss_gb"]) <= 0.25 * r["peak_rss_gb"], (name, est, r["peak_rss_gb"])
    assert runs["b8-gc"]["peak_rss_gb"] <= 8.0  # the target on a 24 GB machine
    # chunked logits: the measured saving of the head at batch 1
    assert runs["b1-unchunked"]["peak_rss_gb"] - runs["b1"]["peak_rss_gb"] > 1.0


def test_estimate_follows_the_settings():
    shape = TrainShape.from_config(QWEN05, dtype_bytes=4)
    base = TrainArgs(model="m", data="d", batch_size=8)
    peak = lambda **kw: estimate_peak(shape, replace(base, **kw), 512, 512).total / GB  # noqa: E731
    # The run (batch 8, defaults) was OOM-killed at 24.3 GB RSS on a 24 GB machine.
    assert peak() > 24
    assert peak(grad_checkpoint=True) < peak(grad_checkpoint_layers=16) < peak()
    assert peak(batch_size=1) < peak(batch_size=2) < peak()
    assert peak(batch_size=1) < peak(batch_size=1, logits_chunk=0)
    assert peak(grad_checkpoint=True) < 8
    assert 1.9 < shape.weight_bytes / GB < 2.0  # 494M float32 parameters


def test_machine_memory_is_found():
    total, source = machine_memory()
    assert 2**28 < total < 2**50 and source


@pytest.fixture(scope="module")
def long_pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    rows = [
        {
            "prompt": "",
            "chosen": "",
            "rejected": "",
            "prompt_ids": [10 + (i + j) % 900 for j in range(200)],
            "chosen_ids": [20 + (i * j) % 900 for j in range(150)],
            "rejected_ids": [30 + j % 900 for j in range(150)],
        }
        for i in range(8)
    ]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.mark.slow
def test_preflight_refuses_naming_settings_that_fit(tiny_model, long_pairs, tmp_path):
    model, _ = load(str(tiny_model))
    shape = TrainShape.from_model(model)
    args = TrainArgs(model="m", data="d", batch_size=8, num_layers=-1)
    big = estimate_peak(shape, args, 200, 151).total
    small = estimate_peak(shape, replace(args, batch_size=2, grad_accumulation_steps=4), 200, 151).total
    assert small < big
    limit = (big + small) / 2 / GB
    out = tmp_path / "ad"
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(long_pairs),
            "--adapter-path",
            str(out),
            "--batch-size",
            "8",
            "--num-layers",
            "-1",
            "--iters",
            "1",
            "--memory-limit-gb",
            f"{limit:.6f}",
            "--ref-cache-dir",
            str(tmp_path / "ref"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2, res.output
    line = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "exceeds" in line[0] and "settings that fit: --batch-size" in line[0], (
        res.output
    )
    assert "estimated peak memory" in res.output.splitlines()[0]  # printed first, before any work
    assert not (tmp_path / "ref").exists() and not (out / "adapters.safetensors").exists()
    # the named settings do run under the same limit
    fit = line[0].split("settings that fit: ")[1].split(" (")[0].split()
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(long_pairs),
            "--adapter-path",
            str(out),
            "--num-layers",
            "-1",
            "--iters",
            "1",
            "--memory-limit-gb",
            f"{limit:.6f}",
            "--ref-cache-dir",
            str(tmp_path / "ref"),
            "--no-progress",
            *fit,
        ],
    )
    assert res.exit_code == 0, res.output
