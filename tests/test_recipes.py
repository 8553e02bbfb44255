"""The shipped YAML recipes name only real options of their commands."""

from pathlib import Path

import pytest

from mlx_scdpo.config import build_args
from mlx_scdpo.method.sampling import SampleArgs
from mlx_scdpo.method.step_control import StepControlArgs
from mlx_scdpo.toy.quickstart import QuickstartArgs
from mlx_scdpo.training.train import TrainArgs

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize(
    "name,cls",
    [
        ("qwen2.5-math-1.5b-sample.yaml", SampleArgs),
        ("qwen2.5-math-1.5b-step-control.yaml", StepControlArgs),
        ("qwen2.5-math-1.5b-train.yaml", TrainArgs),
    ],
)
def test_recipe_is_valid(name, cls):
    args = build_args(cls, {}, str(RECIPES / name))
    assert args.model.startswith("mlx-community/")


def test_toy_recipe_is_valid():
    args = build_args(QuickstartArgs, {}, str(RECIPES / "toy-larger.yaml"))
    assert (args.n_train, args.iters, args.learning_rate, args.beta) == (1200, 240, 1e-5, 0.5)


# Qwen2.5-Math-1.5B(-Instruct)'s config.json shape (bf16 weights on a Mac).
QWEN_MATH_15B = dict(
    hidden_size=1536,
    num_hidden_layers=28,
    intermediate_size=8960,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
)


def test_train_recipe_fits_a_16gb_mac_by_the_estimate():
    """At the recipe's longest lengths (512 prompt + 512 response), with room for macOS and the GPU's limit."""
    from dataclasses import replace

    from mlx_scdpo.training.memory import GB, TrainShape, estimate_peak

    args = build_args(TrainArgs, {}, str(RECIPES / "qwen2.5-math-1.5b-train.yaml"))
    shape = TrainShape.from_config(QWEN_MATH_15B, dtype_bytes=2)
    peak = estimate_peak(shape, args, args.max_prompt_length, args.max_length - args.max_prompt_length).total
    assert peak <= 10 * GB
    assert args.batch_size * args.grad_accumulation_steps == 16  # the reference's pairs per step
    # the recipe's earlier settings (batch 4, no checkpointing) would not fit
    old = replace(args, batch_size=4, grad_accumulation_steps=4, grad_checkpoint=False)
    assert estimate_peak(shape, old, 512, 512).total > 16 * GB
