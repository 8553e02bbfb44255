"""4-bit base models through `sample`, `step-control`, `train` and `credit`: the tiny fixture model
quantized with mlx_lm.convert (what users run: mlx-community's 4-bit Qwen2.5-Math)."""

import json
import math

import mlx.nn as nn
import pytest
from click.testing import CliRunner
from mlx_lm import load

from mlx_scdpo.cli import main
from mlx_scdpo.method.steps import split_steps


@pytest.fixture(scope="module")
def tiny_q4(tiny_model, tmp_path_factory):
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("q4") / "model"
    convert(str(tiny_model), mlx_path=str(out), quantize=True, q_bits=4, q_group_size=64)
    return out


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_fixture_is_4bit(tiny_q4):
    model, _ = load(str(tiny_q4))
    assert json.loads((tiny_q4 / "config.json").read_text())["quantization"]["bits"] == 4
    quantized = [m for _, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert quantized and all(m.bits == 4 for m in quantized)


def test_sample_on_a_4bit_model(tiny_q4, tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(2)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "sample",
        "--model",
        str(tiny_q4),
        "--data-files",
        str(tmp_path / "p.jsonl"),
        "--samples-per-round",
        "2",
        "--budget",
        "2",
        "--max-tokens",
        "12",
        "--seed",
        "1",
        "--no-progress",
        "--output-dir",
        str(tmp_path / "a"),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    a = _rows(tmp_path / "a" / "solutions.jsonl")
    assert [r["problem_id"] for r in a] == ["gsm8k/0", "gsm8k/1"]
    _, tok = load(str(tiny_q4))
    for r in a:
        assert r["n_sampled"] == 2 and r["samples"]
        for s in r["samples"]:
            assert tok.decode(s["ids"]) == s["text"] and 0 < len(s["ids"]) <= 12
            assert max(s["ids"]) < 1024 and s["finish_reason"] in ("stop", "length")


def test_step_control_train_and_credit_on_a_4bit_model(tiny_q4, tmp_path):
    _, tok = load(str(tiny_q4))
    records = []
    for i in range(1):
        text = f"Step 1: {i} + 2 = {i + 2}\nStep 2: {i + 2} * 3 = {3 * i + 6}\nStep 3: done\nThe answer is {3 * i + 6}."
        prompt = f"Question: ({i} + 2) * 3?\nAnswer:"
        records.append(
            {
                "problem_id": f"q/{i}",
                "task": "gsm8k",
                "question": prompt,
                "gold": str(3 * i + 6),
                "prompt": prompt,
                "prompt_ids": tok.encode(prompt),
                "n_sampled": 1,
                "samples": [
                    {
                        "text": text,
                        "ids": tok.encode(text, add_special_tokens=False),
                        "correct": True,
                        "finish_reason": "stop",
                    }
                ],
            }
        )
    (tmp_path / "solutions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "sc"
    res = CliRunner().invoke(
        main,
        [
            "step-control",
            "--model",
            str(tiny_q4),
            "--solutions",
            str(tmp_path / "solutions.jsonl"),
            "--output-dir",
            str(out),
            "--max-tokens",
            "16",
            "--rounds",
            "1",
            "--include-truncated",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    pairs = _rows(out / "pairs_step_control.jsonl")
    assert [p["k"] for p in pairs] == [1, 2]  # the random model never reaches the answer
    by_id = {r["problem_id"]: r for r in records}
    for p in pairs:
        rec = by_id[p["problem_id"]]
        assert p["prompt_ids"] + p["chosen_ids"] == rec["prompt_ids"] + rec["samples"][0]["ids"]
        assert tok.decode(p["rejected_ids"]) == p["rejected"] and 0 < len(p["rejected_ids"]) <= 16
        n_steps = len(split_steps(p["rejected"]).steps)  # the default ramp: 1.1, +0.1 a step, at most 1.4
        assert p["temperatures"] and p["temperatures"] == pytest.approx(
            ([1.1, 1.2, 1.3] + [1.4] * 16)[:n_steps]
        )
    # QLoRA on the 4-bit model, then credit with those adapters.
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--model",
            str(tiny_q4),
            "--data",
            str(out / "pairs_step_control.jsonl"),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--iters",
            "2",
            "--batch-size",
            "2",
            "--num-layers",
            "2",
            "--lora-rank",
            "4",
            "--learning-rate",
            "1e-3",
            "--steps-per-report",
            "1",
            "--steps-per-eval",
            "0",
            "--ref-cache-dir",
            str(tmp_path / "ref"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = _rows(tmp_path / "ad" / "metrics.jsonl")
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    res = CliRunner().invoke(
        main,
        [
            "credit",
            "--model",
            str(tiny_q4),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--pairs",
            str(out / "pairs_step_control.jsonl"),
            "--limit",
            "2",
            "--html",
            str(tmp_path / "c.html"),
            "--no-color",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("chosen:") == 2 and "<span title=" in (tmp_path / "c.html").read_text()


def test_credit_on_4bit_is_zero_before_training(tiny_q4):
    # Adapters off (the reference) and fresh adapters (LoRA B = 0) give the same log-probabilities
    # through the quantized layers.
    from mlx_scdpo.training.credit import response_rewards
    from mlx_scdpo.training.train import TrainArgs, add_adapters

    model, tok = load(str(tiny_q4))
    add_adapters(model, TrainArgs(model="m", data="d", num_layers=2, lora_rank=4))
    rewards = response_rewards(
        model, tok.encode("Q: 1 + 2"), tok.encode(" 3.", add_special_tokens=False), 0.1, tok.decode
    )
    assert len(rewards.rewards) == len(tok.encode(" 3.", add_special_tokens=False))
    assert rewards.rewards == pytest.approx([0.0] * len(rewards.rewards), abs=1e-6)
