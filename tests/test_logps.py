"""The LM head in chunks of positions: the same log-probs and gradients as all logits at once, less memory."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load
from mlx_lm.models import qwen2

from mlx_scdpo.training.dpo import pair_logps
from mlx_scdpo.training.logps import chunked_logps, output_head, token_logps
from mlx_scdpo.training.preference_data import TokenizedPair, sequence_arrays
from mlx_scdpo.training.shared_prompt import checkpoint_layers, shared_batch_arrays
from mlx_scdpo.training.train import TrainArgs, add_adapters


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    model, _ = load(str(tiny_model))
    mx.random.seed(0)
    add_adapters(model, TrainArgs(model="m", data="d", num_layers=3, lora_rank=4))
    for name, p in tree_flatten(model.trainable_parameters()):
        if name.endswith("lora_b"):
            model.load_weights([(name, mx.random.normal(p.shape) * 0.02)], strict=False)
    return model


def _pairs(seed=0, n=4):
    rng = np.random.default_rng(seed)
    rand = lambda lo, hi: rng.integers(5, 900, rng.integers(lo, hi)).tolist()  # noqa: E731
    return [TokenizedPair(rand(2, 20), rand(3, 12) + [2], rand(3, 12) + [2]) for _ in range(n)]


def _grads(model, batch, chunk):
    def loss(model, batch):
        pc, pr, _, _ = pair_logps(model, batch, chunk)
        return (pc - 0.5 * pr).sum()

    value, grad = nn.value_and_grad(model, loss)(model, batch)
    return value, dict(tree_flatten(grad))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("checkpointed", [False, True])
def test_chunked_gradients_equal_unchunked(lora_model, shared, checkpointed):
    arrays = (shared_batch_arrays if shared else sequence_arrays)(_pairs())
    batch = {k: mx.array(v) for k, v in arrays.items()}
    chunk = 3 * 1024  # 3 positions per chunk: many chunks, one ragged
    layers = lora_model.model.layers
    original = checkpoint_layers(layers, -1) if checkpointed else None
    try:
        v_all, g_all = _grads(lora_model, batch, 0)
        v_chunked, g_chunked = _grads(lora_model, batch, chunk)
    finally:
        if original is not None:
            type(layers[0]).__call__ = original
    assert v_chunked.item() == pytest.approx(v_all.item(), rel=1e-5)
    assert g_all.keys() == g_chunked.keys() and g_all
    for k in g_all:  # float32 sums in another order: equal to 1e-5 of the gradient's scale
        a, b = np.array(g_chunked[k]), np.array(g_all[k])
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), k


def test_token_logps_equal_the_models_own_log_softmax(lora_model):
    x = mx.array([[5, 9, 14, 200, 31, 7, 8, 9, 10, 11]])
    inputs, targets = x[:, :-1], x[:, 1:]
    own = nn.log_softmax(lora_model(inputs).astype(mx.float32), axis=-1)
    own = mx.take_along_axis(own, targets[..., None], axis=-1)[..., 0]
    for chunk in (0, 1024, 4 * 1024, 2**22):
        np.testing.assert_allclose(
            np.array(token_logps(lora_model, inputs, targets, chunk)), np.array(own), rtol=1e-5, atol=1e-5
        )


def test_chunks_bound_the_peak_memory():
    """A 32k vocabulary: all logits at once hold tens of MB for the backward pass, chunks a few."""
    args = qwen2.ModelArgs(
        model_type="qwen2",
        hidden_size=64,
        num_hidden_layers=1,
        intermediate_size=128,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    mx.random.seed(0)
    model = qwen2.Model(args)
    model.freeze()
    mx.eval(model.parameters())
    module, head = output_head(model)
    hidden = mx.random.normal((4, 256, 64))
    targets = mx.random.randint(0, 32768, (4, 256))
    mx.eval(hidden, targets)

    def peak(chunk):
        grad = mx.grad(lambda h: chunked_logps(head, module, h, targets, chunk, 32768).sum())(hidden)
        mx.synchronize()
        mx.clear_cache()
        mx.reset_peak_memory()
        before = mx.get_active_memory()  # other tests' models may still be alive
        grad = mx.grad(lambda h: chunked_logps(head, module, h, targets, chunk, 32768).sum())(hidden)
        mx.eval(grad)
        return mx.get_peak_memory() - before, grad

    whole, g_whole = peak(0)
    chunked, g_chunked = peak(2**18)  # 8 positions per chunk
    logits_bytes = 4 * 256 * 32768 * 4
    assert whole > logits_bytes  # all logits at once
    assert chunked < whole / 4 and chunked < logits_bytes / 2
    np.testing.assert_allclose(np.array(g_chunked), np.array(g_whole), rtol=1e-4, atol=1e-6)


def test_chunked_gradient_under_compile_equals_all_at_once():
    """The training step is compiled: the chunks' custom backward pass must survive mx.compile."""
    args = qwen2.ModelArgs(
        model_type="qwen2",
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=4096,
        rms_norm_eps=1e-6,
    )
    mx.random.seed(1)
    model = qwen2.Model(args)
    model.freeze()  # as in training: the head is frozen
    mx.eval(model.parameters())
    module, head = output_head(model)
    hidden = mx.random.normal((2, 50, 32))
    targets = mx.random.randint(0, 4096, (2, 50))
    weights = mx.random.uniform(shape=(2, 50))
    mx.eval(hidden, targets, weights)  # constants of the compiled function

    def grad(chunk):
        return mx.grad(lambda h: (chunked_logps(head, module, h, targets, chunk, 4096) * weights).sum())

    want = grad(0)(hidden)
    for chunk in (7 * 4096, 4096):  # ragged last chunk; one position per chunk
        got = mx.compile(grad(chunk))(hidden)
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)
