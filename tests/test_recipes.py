"""The shipped YAML recipes name only real options of their commands."""

from pathlib import Path

import pytest

from mlx_scdpo.config import build_args
from mlx_scdpo.quickstart import QuickstartArgs
from mlx_scdpo.sampling import SampleArgs
from mlx_scdpo.step_control import StepControlArgs
from mlx_scdpo.train import TrainArgs

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name,cls", [("qwen2.5-math-1.5b-sample.yaml", SampleArgs),
                                      ("qwen2.5-math-1.5b-step-control.yaml", StepControlArgs),
                                      ("qwen2.5-math-1.5b-train.yaml", TrainArgs)])
def test_recipe_is_valid(name, cls):
    args = build_args(cls, {}, str(RECIPES / name))
    assert args.model.startswith("mlx-community/")


def test_toy_recipe_is_valid():
    args = build_args(QuickstartArgs, {}, str(RECIPES / "toy-larger.yaml"))
    assert (args.n_train, args.iters, args.learning_rate, args.beta) == (1200, 240, 1e-5, 0.5)
