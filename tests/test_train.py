"""`mlx-scdpo train` on the tiny fixture model: learning, resume, formats other tools read."""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mlx_lm import load

from mlx_scdpo.cli import main


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    rows = []
    for i in range(16):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append(
            {
                "prompt": f"Question: {a} + {b} = ?\nAnswer:",
                "chosen": f" {a + b}. The answer is {a + b}.",
                "rejected": f" {a + b + 3}. Sorry, it is wrong.",
            }
        )
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    (d / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[12:]))
    return d


def _train(tiny_model, pairs_dir, out, *extra):
    args = [
        "train",
        "--model",
        str(tiny_model),
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
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_raises_pair_accuracy_and_margins(tiny_model, pairs_dir, tmp_path):
    metrics = _train(tiny_model, pairs_dir, tmp_path / "a", "--iters", "30", "--lora-scale", "10")
    first, last = metrics[0], metrics[-1]
    assert first["loss"] == pytest.approx(np.log(2), abs=0.02)  # policy == reference at step 1
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5
    assert last["rewards/accuracies"] == 1.0
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "logps/chosen",
        "logps/rejected",
        "learning_rate",
        "tokens_per_second",
        "peak_memory_gb",
    ):
        assert key in last
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["lora_parameters"]["rank"] == 4


@pytest.mark.slow
def test_two_steps_resume_two_steps_equals_four_straight(tiny_model, pairs_dir, tmp_path):
    common = ("--iters", "4", "--lora-dropout", "0.1", "--save-every", "100")
    _train(tiny_model, pairs_dir, tmp_path / "straight", *common)
    _train(tiny_model, pairs_dir, tmp_path / "resumed", *common, "--stop-after", "2")
    _train(tiny_model, pairs_dir, tmp_path / "resumed", *common, "--resume")
    a = mx.load(str(tmp_path / "straight" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "resumed" / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), rtol=1e-5, atol=1e-6)
    steps = [
        m["step"] for m in map(json.loads, (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines())
    ]
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_on_the_fly_reference_matches_precomputed(tiny_model, pairs_dir, tmp_path):
    pre = _train(tiny_model, pairs_dir, tmp_path / "pre", "--iters", "2")
    fly = _train(tiny_model, pairs_dir, tmp_path / "fly", "--iters", "2", "--reference", "on-the-fly")
    for key in ("loss", "rewards/margins", "logps/chosen"):
        assert fly[-1][key] == pytest.approx(pre[-1][key], rel=1e-3, abs=1e-4)
    assert list((tmp_path / "refcache").glob("*.npy"))  # the reference log-probs were cached


@pytest.fixture(scope="module")
def default_run(tiny_model, pairs_dir, tmp_path_factory):
    return _train(tiny_model, pairs_dir, tmp_path_factory.mktemp("default") / "run", "--iters", "3")


@pytest.mark.parametrize(
    "extra", [("--grad-checkpoint",), ("--grad-checkpoint-layers", "1"), ("--no-fast-swiglu",)]
)
def test_memory_and_speed_options_train_the_same(tiny_model, pairs_dir, tmp_path, default_run, extra):
    base = default_run
    other = _train(tiny_model, pairs_dir, tmp_path / "other", "--iters", "3", *extra)
    for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert other[-1][key] == pytest.approx(base[-1][key], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_adapters_work_with_mlx_lm_load_generate_and_fuse(tiny_model, pairs_dir, tmp_path):
    _train(tiny_model, pairs_dir, tmp_path / "ad", "--iters", "3")
    model, tok = load(str(tiny_model), adapter_path=str(tmp_path / "ad"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_lm",
            "generate",
            "--model",
            str(tiny_model),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--prompt",
            "Question: 1 + 2 = ?",
            "--max-tokens",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_lm",
            "fuse",
            "--model",
            str(tiny_model),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--save-path",
            str(tmp_path / "fused"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    fused, _ = load(str(tmp_path / "fused"))
    x = mx.array([[1, 5, 9, 11]])
    np.testing.assert_allclose(np.array(model(x)), np.array(fused(x)), rtol=1e-3, atol=1e-3)


def test_export_peft(tiny_model, pairs_dir, tmp_path):
    _train(tiny_model, pairs_dir, tmp_path / "ad", "--iters", "2", "--lora-scale", "8")
    res = CliRunner().invoke(
        main, ["export", "--adapter-path", str(tmp_path / "ad"), "--peft", str(tmp_path / "peft")]
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 32
    assert set(cfg["target_modules"]) >= {"q_proj", "v_proj"}
    # --num-layers 2 of the tiny model's 6: PEFT must adapt only those (else it adds LoRA everywhere)
    assert cfg["layers_to_transform"] == [4, 5] and cfg["layers_pattern"] == "layers"
    mlx_w = mx.load(str(tmp_path / "ad" / "adapters.safetensors"))
    peft_w = mx.load(str(tmp_path / "peft" / "adapter_model.safetensors"))
    name = next(k for k in mlx_w if k.endswith("q_proj.lora_a"))[: -len(".lora_a")]
    a, b = np.array(mlx_w[name + ".lora_a"]), np.array(mlx_w[name + ".lora_b"])
    pa = np.array(peft_w[f"base_model.model.{name}.lora_A.weight"])
    pb = np.array(peft_w[f"base_model.model.{name}.lora_B.weight"])
    # The weight update of both conventions is the same matrix (out x in).
    np.testing.assert_allclose((8 * a @ b).T, (cfg["lora_alpha"] / cfg["r"]) * pb @ pa, rtol=1e-5, atol=1e-7)


def test_export_peft_all_layers_names_no_subset(tiny_model, pairs_dir, tmp_path):
    _train(tiny_model, pairs_dir, tmp_path / "ad", "--iters", "1", "--num-layers", "-1")
    res = CliRunner().invoke(
        main, ["export", "--adapter-path", str(tmp_path / "ad"), "--peft", str(tmp_path / "peft")]
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert "layers_to_transform" not in cfg and "layers_pattern" not in cfg
    weights = mx.load(str(tmp_path / "peft" / "adapter_model.safetensors"))
    assert {k.split(".")[4] for k in weights} == {str(i) for i in range(6)}


def test_bad_pairs_file_exits_2(tiny_model, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "chosen": "b"}\n')
    res = CliRunner().invoke(main, ["train", "--model", str(tiny_model), "--data", str(tmp_path / "p.jsonl")])
    assert res.exit_code == 2 and "p.jsonl:1: field 'rejected' is missing" in res.output


def test_credit_rewards_are_zero_before_training_and_cli_renders(tiny_model, pairs_dir, tmp_path):
    from mlx_scdpo.training.credit import response_rewards
    from mlx_scdpo.training.train import TrainArgs, add_adapters

    model, tok = load(str(tiny_model))
    add_adapters(model, TrainArgs(model="m", data="d", num_layers=2, lora_rank=4))  # LoRA B starts at 0
    rewards = response_rewards(
        model, tok.encode("Q: 1 + 2"), tok.encode(" 3.", add_special_tokens=False), 0.1, tok.decode
    )
    assert rewards.rewards == pytest.approx([0.0] * len(rewards.rewards), abs=1e-6)
    _train(tiny_model, pairs_dir, tmp_path / "ad", "--iters", "3")
    pair = {
        "prompt_ids": tok.encode("Q: 1 + 2"),
        "chosen_ids": tok.encode(" 3.", add_special_tokens=False),
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
            str(tiny_model),
            "--adapter-path",
            str(tmp_path / "ad"),
            "--pairs",
            str(tmp_path / "pairs.jsonl"),
            "--html",
            str(tmp_path / "c.html"),
            "--color",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "chosen:" in res.output and "\x1b[48;2;" in res.output
    assert "<span title=" in (tmp_path / "c.html").read_text()


@pytest.mark.parametrize(
    "extra",
    [
        ("--fine-tune-type", "dora"),
        ("--fine-tune-type", "full", "--num-layers", "1"),
        ("--grad-accumulation-steps", "2", "--grad-checkpoint"),
        ("--loss-type", "ipo", "--no-shared-prompt"),
        ("--loss-type", "hinge", "--label-smoothing", "0.0", "--rpo-alpha", "0.5"),
    ],
)
def test_training_variants_run_and_load(tiny_model, pairs_dir, tmp_path, extra):
    metrics = _train(tiny_model, pairs_dir, tmp_path / "v", "--iters", "2", *extra)
    assert len(metrics) == 2 and all(np.isfinite(m["loss"]) for m in metrics)
    model, _ = load(str(tiny_model), adapter_path=str(tmp_path / "v"))


def test_yaml_config_precedence(tiny_model, pairs_dir, tmp_path):
    (tmp_path / "c.yaml").write_text("iters: 3\nbeta: 0.3\nlora_rank: 2\n")
    _train(tiny_model, pairs_dir, tmp_path / "y", "-c", str(tmp_path / "c.yaml"), "--beta", "0.2")
    saved = json.loads((tmp_path / "y" / "train_config.json").read_text())
    assert (saved["iters"], saved["beta"], saved["lora_rank"]) == (3, 0.2, 4)  # CLI > YAML > defaults
    res = CliRunner().invoke(
        main,
        ["train", "--model", str(tiny_model), "--data", str(pairs_dir), "-c", str(tmp_path / "nope.yaml")],
    )
    assert res.exit_code == 2 and "nope.yaml: no such config file" in res.output


def _dora_trained(tiny_model):
    """A DoRA model whose adapters look trained: non-zero B and magnitudes away from the weight norms."""
    from mlx.utils import tree_flatten

    from mlx_scdpo.training.train import TrainArgs, add_adapters

    model, tok = load(str(tiny_model))
    mx.random.seed(3)
    add_adapters(model, TrainArgs(model="m", data="d", num_layers=2, lora_rank=4, fine_tune_type="dora"))
    updates = []
    for name, p in tree_flatten(model.trainable_parameters()):
        if name.endswith("lora_b"):
            updates.append((name, mx.random.normal(p.shape) * 0.02))
        elif name.endswith(".m"):
            updates.append((name, p * (1 + 0.2 * mx.random.normal(p.shape))))
    assert any(n.endswith(".m") for n, _ in updates)
    model.load_weights(updates, strict=False)
    return model, tok


def test_dora_reference_is_the_base_model(tiny_model):
    """Adapters off (on-the-fly reference, credit) gives the base model's log-probs: magnitudes too."""
    from mlx_scdpo.training.credit import response_rewards
    from mlx_scdpo.training.logps import token_logps
    from mlx_scdpo.training.preference_data import TokenizedPair
    from mlx_scdpo.training.shared_prompt import shared_batch_arrays
    from mlx_scdpo.training.train import _add_reference

    base, tok = load(str(tiny_model))
    model, _ = _dora_trained(tiny_model)
    pairs = [
        TokenizedPair([5, 9, 14, 200], [31, 7, 8, 2], [40, 41, 2]),
        TokenizedPair([6, 7], [8, 9, 2], [10, 2]),
    ]
    batch = {k: mx.array(v) for k, v in shared_batch_arrays(pairs).items()}
    base_c, base_r, _, _ = pair_logps_of(base, batch)
    policy_c, _, _, _ = pair_logps_of(model, batch)
    assert not np.allclose(np.array(policy_c), np.array(base_c), atol=1e-3)  # the adapters matter
    _add_reference(model, batch)
    np.testing.assert_allclose(np.array(batch["ref_chosen"]), np.array(base_c), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.array(batch["ref_rejected"]), np.array(base_r), rtol=1e-5, atol=1e-4)
    again, _, _, _ = pair_logps_of(model, batch)  # the trained magnitudes are back
    np.testing.assert_allclose(np.array(again), np.array(policy_c), rtol=1e-6, atol=1e-6)
    # credit: the reward is beta * (policy - base model)
    prompt, response = [5, 9, 14, 200], [31, 7, 8, 2]
    rewards = response_rewards(model, prompt, response, 0.5, lambda ids: "x")
    seq = mx.array([prompt + response])
    want = 0.5 * (token_logps(model, seq[:, :-1], seq[:, 1:]) - token_logps(base, seq[:, :-1], seq[:, 1:]))
    np.testing.assert_allclose(rewards.rewards, np.array(want[0, len(prompt) - 1 :]), rtol=1e-4, atol=1e-5)


def pair_logps_of(model, batch):
    from mlx_scdpo.training.dpo import pair_logps

    return pair_logps(model, batch)
