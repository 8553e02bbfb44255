"""Data-parallel training: 2 local processes (mlx.launch, ring backend) equal 1 process on the whole batch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest


def _train_cmd(model, data, out):
    return [
        sys.executable,
        "-m",
        "mlx_scdpo.cli",
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--adapter-path",
        str(out),
        "--batch-size",
        "4",
        "--iters",
        "3",
        "--learning-rate",
        "1e-3",
        "--num-layers",
        "2",
        "--lora-rank",
        "4",
        "--warmup-ratio",
        "0",
        "--steps-per-eval",
        "0",
        "--steps-per-report",
        "1",
        "--no-progress",
        "--ref-cache-dir",
        str(out) + "-ref",
    ]


@pytest.mark.skipif(
    shutil.which("mlx.launch") is None and not (Path(sys.executable).parent / "mlx.launch").exists(),
    reason="mlx.launch not installed",
)
@pytest.mark.slow
def test_two_processes_equal_one_process(tiny_model, tmp_path):
    rows = [
        {"prompt": f"Q: {i} + {i} =", "chosen": f" {2 * i}.", "rejected": f" {2 * i + 1}!"} for i in range(10)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    subprocess.run(_train_cmd(tiny_model, data, tmp_path / "one"), check=True, capture_output=True)
    launch = str(Path(sys.executable).parent / "mlx.launch")
    out = subprocess.run(
        [launch, "-n", "2", "--backend", "ring", "--", *_train_cmd(tiny_model, data, tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    a = mx.load(str(tmp_path / "one" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "two" / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        # Equal up to float32 rounding (the shards pad to different lengths). Adam divides by
        # sqrt(v): where a gradient is ~0, rounding can move an element by a fraction of one
        # step (lr 1e-3), hence the absolute tolerance; the losses below must agree closely.
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), rtol=1e-3, atol=5e-4)
        assert np.mean(np.abs(np.array(a[k]) - np.array(b[k])) > 5e-5) < 0.01
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [round(r["loss"], 5) for r in one] == [round(r["loss"], 5) for r in two]
