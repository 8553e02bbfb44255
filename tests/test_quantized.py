"""4-bit base models: `train` (LoRA and DoRA) and `credit` on a quantized tiny model."""

import json

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mlx_lm import load

from mlx_scdpo.cli import main


@pytest.fixture(scope="module")
def q4_model(tiny_model, tmp_path_factory):
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("q4") / "model"
    convert(str(tiny_model), mlx_path=str(out), quantize=True, q_bits=4, q_group_size=64)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    return out


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    rows = [
        {"prompt": f"Question: {a} + 2 = ?\nAnswer:", "chosen": f" {a + 2}.", "rejected": f" {a + 5}. No."}
        for a in range(8)
    ]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _train(model, pairs_dir, out, *extra):
    args = [
        "train",
        "--model",
        str(model),
        "--data",
        str(pairs_dir),
        "--adapter-path",
        str(out),
        "--batch-size",
        "4",
        "--learning-rate",
        "2e-3",
        "--num-layers",
        "2",
        "--lora-rank",
        "4",
        "--steps-per-report",
        "1",
        "--steps-per-eval",
        "0",
        "--warmup-ratio",
        "0",
        "--ref-cache-dir",
        str(out.parent / "refcache"),
        "--no-progress",
        *extra,
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "estimated peak memory" in res.output
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_train_on_a_4bit_model(q4_model, pairs_dir, tmp_path, kind):
    metrics = _train(q4_model, pairs_dir, tmp_path / kind, "--iters", "3", "--fine-tune-type", kind)
    assert metrics[0]["loss"] == pytest.approx(np.log(2), abs=0.02)  # policy == reference at the first step
    assert all(np.isfinite(m["loss"]) for m in metrics)
    assert metrics[-1]["rewards/margins"] > metrics[0]["rewards/margins"]
    model, _ = load(str(q4_model), adapter_path=str(tmp_path / kind))
    assert any(
        "QuantizedLinear" in type(m.linear).__name__ for _, m in model.named_modules() if hasattr(m, "linear")
    )


def test_on_the_fly_reference_of_a_4bit_dora_model_is_the_base(q4_model, pairs_dir, tmp_path):
    pre = _train(q4_model, pairs_dir, tmp_path / "pre", "--iters", "2", "--fine-tune-type", "dora")
    fly = _train(
        q4_model,
        pairs_dir,
        tmp_path / "fly",
        "--iters",
        "2",
        "--fine-tune-type",
        "dora",
        "--reference",
        "on-the-fly",
    )
    for key in ("loss", "rewards/margins", "logps/chosen"):
        assert fly[-1][key] == pytest.approx(pre[-1][key], rel=1e-3, abs=1e-4)


def test_credit_on_a_4bit_model(q4_model, pairs_dir, tmp_path):
    from mlx_scdpo.training.credit import response_rewards
    from mlx_scdpo.training.logps import token_logps

    _train(q4_model, pairs_dir, tmp_path / "ad", "--iters", "3")
    model, tok = load(str(q4_model), adapter_path=str(tmp_path / "ad"))
    base, _ = load(str(q4_model))
    prompt, response = tok.encode("Question: 1 + 2 = ?\nAnswer:"), tok.encode(" 3.", add_special_tokens=False)
    rewards = response_rewards(model, prompt, response, 0.1, tok.decode)
    seq = mx.array([prompt + response])
    want = 0.1 * (token_logps(model, seq[:, :-1], seq[:, 1:]) - token_logps(base, seq[:, :-1], seq[:, 1:]))
    np.testing.assert_allclose(rewards.rewards, np.array(want[0, len(prompt) - 1 :]), rtol=1e-4, atol=1e-5)
    assert max(abs(r) for r in rewards.rewards) > 0  # trained adapters move the rewards off zero
    pair = {
        "prompt_ids": prompt,
        "chosen_ids": response,
        "rejected_ids": tok.encode(" 4.", add_special_tokens=False),
        "problem_id": "p",
        "source": "naive",
        "k": 0,
    }
    (tmp_path / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    res = CliRunner().invoke(
        main,
        [
            "credit",
            "--model",
            str(q4_model),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--pairs",
            str(tmp_path / "pairs.jsonl"),
            "--html",
            str(tmp_path / "c.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "chosen:" in res.output and "<span title=" in (tmp_path / "c.html").read_text()
