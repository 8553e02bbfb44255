"""The CPU SwiGLU: close to the exact one in value and gradient, swapped in and out cleanly."""

import mlx.core as mx
import mlx.nn as nn
import mlx_lm.models.qwen2 as qwen2
import numpy as np
import pytest
from mlx_lm import load
from mlx_lm.models.activations import swiglu as mlx_lm_swiglu

from mlx_scdpo.training.fast_swiglu import fast_sigmoid, swiglu, use_fast_swiglu


def test_sigmoid_error_is_a_few_ulps():
    x = np.linspace(-100, 100, 400_001).astype(np.float32)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    got = np.array(fast_sigmoid(mx.array(x))).astype(np.float64)
    assert np.abs(got - exact).max() < 2.5e-7
    assert got[0] >= 0 and got[-1] <= 1 and np.all(np.diff(got) >= -2.5e-7)


@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_value_and_gradients_match_mlx_lm(scale):
    mx.random.seed(0)
    gate, x, w = (mx.random.normal((3, 7, 64)) * scale for _ in range(3))

    def loss(fn):
        return lambda g, u: (fn(g, u) * w).sum()

    np.testing.assert_allclose(
        np.array(swiglu(gate, x)), np.array(mlx_lm_swiglu(gate, x)), atol=2e-6 * scale**2
    )
    ours = mx.grad(loss(swiglu), argnums=(0, 1))(gate, x)
    ref = mx.grad(loss(mlx_lm_swiglu), argnums=(0, 1))(gate, x)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5 * scale**2)


def test_swapped_in_for_the_block_only(tiny_model):
    model, _ = load(str(tiny_model))
    tokens = mx.array([[5, 17, 300, 42, 9, 77]])
    before = model(tokens)
    with use_fast_swiglu(model) as active:
        assert active and qwen2.swiglu is swiglu
        inside = model(tokens)
    assert qwen2.swiglu is mlx_lm_swiglu
    np.testing.assert_allclose(np.array(inside), np.array(before), atol=1e-4)
    assert not mx.array_equal(inside, before)  # it really ran the other function
    with use_fast_swiglu(model, enabled=False) as active:
        assert not active and qwen2.swiglu is mlx_lm_swiglu


def test_restored_after_an_error(tiny_model):
    model, _ = load(str(tiny_model))
    with pytest.raises(RuntimeError), use_fast_swiglu(model):
        raise RuntimeError("boom")
    assert qwen2.swiglu is mlx_lm_swiglu


def test_gradients_through_a_model(tiny_model):
    model, _ = load(str(tiny_model))
    tokens = mx.array([[5, 17, 300, 42, 9, 77, 3, 8]])

    def loss(m):
        return nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    ref = nn.value_and_grad(model, loss)(model)
    with use_fast_swiglu(model):
        ours = nn.value_and_grad(model, loss)(model)
    assert abs(ours[0].item() - ref[0].item()) < 1e-5
    g_ref = mx.concatenate([g.flatten() for _, g in nn.utils.tree_flatten(ref[1])])
    g_ours = mx.concatenate([g.flatten() for _, g in nn.utils.tree_flatten(ours[1])])
    assert (mx.abs(g_ours - g_ref).max() / mx.abs(g_ref).max()).item() < 1e-3
