"""`train` under faults: kills inside checkpoint saves, damaged checkpoints, changed settings on
--resume, NaN losses, foreign token ids, two runs on one folder."""

import json
import os
import shutil
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    rows = [
        {"prompt": f"Question: {i} + 2 = ?\nAnswer:", "chosen": f" {i + 2}.", "rejected": f" {i + 5}."}
        for i in range(12)
    ]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    (d / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[10:]))
    return d


def _argv(tiny_model, data, out, *extra):
    return [
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(data),
        "--adapter-path",
        str(out),
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--num-layers",
        "2",
        "--lora-rank",
        "4",
        "--steps-per-report",
        "1",
        "--steps-per-eval",
        "2",
        "--val-batches",
        "1",
        "--warmup-ratio",
        "0",
        "--ref-cache-dir",
        str(out.parent / "refcache"),
        "--no-progress",
        "--iters",
        "6",
        "--save-every",
        "2",
        "--lora-dropout",
        "0.1",
        *extra,
    ]


def _cli(tiny_model, data, out, *extra):
    return CliRunner().invoke(main, _argv(tiny_model, data, out, *extra))


def _proc(tiny_model, data, out, *extra, kill_at=None):
    env = {**os.environ, **({"MLX_SCDPO_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run(
        [sys.executable, "-m", "mlx_scdpo.cli", *_argv(tiny_model, data, out, *extra)],
        env=env,
        capture_output=True,
        text=True,
    )


def _steps(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r], [r["step"] for r in rows if "eval/loss" in r]


def _same_adapters(a, b):
    wa, wb = mx.load(str(a / "adapters.safetensors")), mx.load(str(b / "adapters.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), atol=1e-6)


@pytest.fixture(scope="module")
def straight(tiny_model, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "ad"
    res = _cli(tiny_model, pairs, out)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("kill_at", ["checkpoint-files:3", "checkpoint-swap:2", "checkpoint-swap:3"])
def test_kill_inside_a_checkpoint_save_then_resume_equals_straight(
    tiny_model, pairs, straight, tmp_path, kill_at
):
    out = tmp_path / "ad"
    res = _proc(tiny_model, pairs, out, kill_at=kill_at)
    assert res.returncode == -9, res.stderr
    res = _cli(tiny_model, pairs, out, "--resume")
    assert res.exit_code == 0, res.output
    _same_adapters(out, straight)
    assert _steps(out) == _steps(straight) == ([1, 2, 3, 4, 5, 6], [2, 4, 6])  # each step logged once
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


def test_stop_after_then_resume_logs_each_step_once(tiny_model, pairs, straight, tmp_path):
    out = tmp_path / "ad"
    assert _cli(tiny_model, pairs, out, "--stop-after", "3").exit_code == 0
    # Steps 3 was logged but the checkpoint is at 3 too; add a stray record past it, as a crash would leave.
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n")
    res = _cli(tiny_model, pairs, out, "--resume")
    assert res.exit_code == 0, res.output
    assert _steps(out) == _steps(straight)
    _same_adapters(out, straight)


def test_resume_refuses_other_settings_and_damaged_checkpoints(tiny_model, pairs, tmp_path):
    out = tmp_path / "ad"
    assert _cli(tiny_model, pairs, out, "--stop-after", "2").exit_code == 0
    for extra, name in (
        (("--lora-rank", "8"), "lora_rank"),
        (("--learning-rate", "1e-2"), "learning_rate"),
        (("--num-layers", "1"), "num_layers"),
    ):
        res = _cli(tiny_model, pairs, out, "--resume", *extra)
        assert res.exit_code == 2 and name in res.stderr and len(res.stderr.strip().splitlines()) == 1, (
            res.output
        )
    other = tmp_path / "other.jsonl"
    other.write_text((pairs / "train.jsonl").read_text().replace("Question", "Q"))
    res = CliRunner().invoke(main, _argv(tiny_model, other, out, "--resume"))
    assert res.exit_code == 2 and "data" in res.stderr, res.output
    # A damaged checkpoint: the previous complete one is used, or one line when there is none.
    shutil.copytree(out / "checkpoint", out / "checkpoint.prev")
    (out / "checkpoint" / "optimizer.safetensors").write_bytes(b"")
    res = _cli(tiny_model, pairs, out, "--resume", "--stop-after", "1")
    assert res.exit_code == 0, res.output
    (out / "checkpoint" / "optimizer.safetensors").write_bytes(b"\0" * 10)
    (out / "checkpoint" / "state.json").write_text('{"step": ')
    res = _cli(tiny_model, pairs, out, "--resume")
    assert res.exit_code == 2 and "no complete checkpoint" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_nan_loss_stops_with_exit_2(tiny_model, pairs, tmp_path):
    model = tmp_path / "nan-model"
    shutil.copytree(tiny_model, model)
    for f in model.glob("*.safetensors"):
        w = mx.load(str(f))
        w = {k: (v * float("nan") if "norm" in k else v) for k, v in w.items()}
        mx.save_safetensors(str(f), w)
    out = tmp_path / "ad"
    res = CliRunner().invoke(main, _argv(model, pairs, out))
    assert res.exit_code == 2 and "loss is nan" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "wrote" not in res.output
    assert not (out / "adapters.safetensors").exists()


def test_token_ids_from_another_tokenizer_are_refused(tiny_model, tmp_path):
    data = tmp_path / "pairs.jsonl"
    row = {
        "prompt": "a",
        "chosen": "b",
        "rejected": "c",
        "prompt_ids": [1, 2],
        "chosen_ids": [3],
        "rejected_ids": [10_000_000],
    }
    data.write_text(json.dumps(row) + "\n")
    res = CliRunner().invoke(main, _argv(tiny_model, data, tmp_path / "ad"))
    assert res.exit_code == 2 and f"{data}:1: field 'rejected_ids'" in res.stderr, res.output


def test_two_trainings_on_one_folder_one_proceeds(tiny_model, pairs, tmp_path):
    out = tmp_path / "ad"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_scdpo.cli",
            *_argv(tiny_model, pairs, out, "--iters", "100000", "--save-every", "1000"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.1)
        assert (out / "metrics.jsonl").exists()
        res = _cli(tiny_model, pairs, out)
        assert res.exit_code == 2 and f"pid {first.pid}" in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()
        first.wait()
