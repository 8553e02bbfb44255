"""The shared-prompt forward pass gives the same log-probs and gradients as two full sequences."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load

from mlx_scdpo.dpo import pair_logps
from mlx_scdpo.preference_data import TokenizedPair, sequence_arrays
from mlx_scdpo.shared_prompt import checkpoint_layers, shared_batch_arrays, supports_shared_prompt
from mlx_scdpo.train import TrainArgs, add_adapters


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    model, _ = load(str(tiny_model))
    mx.random.seed(0)
    add_adapters(model, TrainArgs(model="m", data="d", num_layers=2, lora_rank=4))
    # Non-zero LoRA B so the adapters matter.
    for name, p in tree_flatten(model.trainable_parameters()):
        if name.endswith("lora_b"):
            model.load_weights([(name, mx.random.normal(p.shape) * 0.02)], strict=False)
    return model


def _pairs(seed=0, n=5):
    rng = np.random.default_rng(seed)
    rand = lambda lo, hi: rng.integers(5, 900, rng.integers(lo, hi)).tolist()  # noqa: E731
    return [TokenizedPair(rand(2, 30), rand(1, 12) + [2], rand(1, 12) + [2]) for _ in range(n)]


def test_supported(lora_model):
    assert supports_shared_prompt(lora_model)


def test_logps_equal_plain_path(lora_model):
    pairs = _pairs()
    plain = pair_logps(lora_model, {k: mx.array(v) for k, v in sequence_arrays(pairs).items()})
    shared = pair_logps(lora_model, {k: mx.array(v) for k, v in shared_batch_arrays(pairs).items()})
    for a, b in zip(plain, shared):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("checkpointed", [0, 1, -1])
def test_gradients_equal_plain_path(lora_model, checkpointed, monkeypatch):
    """Also with gradient checkpointing of some or all layers on the shared path."""
    pairs = _pairs(1)
    calls, real_checkpoint = [], mx.checkpoint
    monkeypatch.setattr(mx, "checkpoint", lambda f: calls.append(f) or real_checkpoint(f))

    def loss(model, batch):
        pc, pr, _, _ = pair_logps(model, batch)
        return (pc - 0.5 * pr).sum()

    grad_fn = nn.value_and_grad(lora_model, loss)
    layers = lora_model.model.layers
    _, g_plain = grad_fn(lora_model, {k: mx.array(v) for k, v in sequence_arrays(pairs).items()})
    original = checkpoint_layers(layers, checkpointed) if checkpointed else None
    try:
        _, g_shared = grad_fn(lora_model, {k: mx.array(v) for k, v in shared_batch_arrays(pairs).items()})
    finally:
        if original is not None:
            type(layers[0]).__call__ = original
    n = len(layers) if checkpointed == -1 else checkpointed
    assert len(calls) == 2 * n  # the prompt pass and the response pass of each checkpointed layer
    flat_plain, flat_shared = dict(tree_flatten(g_plain)), dict(tree_flatten(g_shared))
    assert flat_plain.keys() == flat_shared.keys() and flat_plain
    for k in flat_plain:
        np.testing.assert_allclose(np.array(flat_plain[k]), np.array(flat_shared[k]), rtol=2e-3, atol=2e-4)


def test_shared_arrays_literal():
    got = shared_batch_arrays([TokenizedPair([1, 2], [3, 9], [4, 5, 9]), TokenizedPair([6], [7, 9], [8, 9])],
                              pad_to_multiple=1)
    np.testing.assert_array_equal(got["prompts"], [[1, 2], [0, 6]])
    np.testing.assert_array_equal(got["left_padding"], [0, 1])
    np.testing.assert_array_equal(got["responses"], [[3, 9, 0], [7, 9, 0], [4, 5, 9], [8, 9, 0]])
    np.testing.assert_array_equal(got["response_mask"], [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]])


def test_shared_arrays_pad_the_model_input_length():
    # Responses of 5 tokens run the model on 4 positions: no padding needed for a multiple of 4.
    got = shared_batch_arrays([TokenizedPair([1], [2, 3, 4, 5, 9], [6, 9])], pad_to_multiple=4)
    np.testing.assert_array_equal(got["responses"], [[2, 3, 4, 5, 9], [6, 9, 0, 0, 0]])
    got = shared_batch_arrays([TokenizedPair([1], [2, 3, 4, 5, 6, 9], [6, 9])], pad_to_multiple=4)
    assert got["responses"].shape == (2, 9) and got["prompts"].shape == (1, 4)
