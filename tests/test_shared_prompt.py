"""The shared-prompt forward pass gives the same log-probs and gradients as two full sequences."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load

from mlx_scdpo.training.dpo import pair_logps
from mlx_scdpo.training.preference_data import TokenizedPair, sequence_arrays
from mlx_scdpo.training.shared_prompt import checkpoint_layers, shared_batch_arrays, supports_shared_prompt
from mlx_scdpo.training.train import TrainArgs, add_adapters


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
    got = shared_batch_arrays(
        [TokenizedPair([1, 2], [3, 9], [4, 5, 9]), TokenizedPair([6], [7, 9], [8, 9])], pad_to_multiple=1
    )
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


def _tiny(module_name, **extra):
    import importlib

    mod = importlib.import_module(f"mlx_lm.models.{module_name}")
    base = dict(
        model_type=module_name,
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        rms_norm_eps=1e-6,
    )
    fields = set(mod.ModelArgs.__dataclass_fields__)
    mx.random.seed(1)
    model = mod.Model(mod.ModelArgs(**{k: v for k, v in {**base, **extra}.items() if k in fields}))
    # Larger embeddings: logits big enough for a softcap or a scale to matter.
    model.load_weights(
        [(k, v * 8) for k, v in tree_flatten(model.parameters()) if "embed_tokens" in k], strict=False
    )
    mx.eval(model.parameters())
    return model


def _own_pair_logps(model, pairs):
    """Each side's summed response log-probs from the model's own forward (its own output transform)."""
    out = []
    for side in ("chosen", "rejected"):
        sums = []
        for p in pairs:
            seq = mx.array([p.prompt + getattr(p, side)])
            lp = nn.log_softmax(model(seq[:, :-1]).astype(mx.float32), axis=-1)
            lp = mx.take_along_axis(lp, seq[:, 1:, None], axis=-1)[0, len(p.prompt) - 1 :, 0]
            sums.append(lp.sum().item())
        out.append(np.array(sums))
    return out


TRANSFORMS = {
    "gemma2": dict(
        head_dim=16, final_logit_softcapping=2.0, attn_logit_softcapping=50.0, query_pre_attn_scalar=16
    ),
    "cohere": dict(logit_scale=0.25, layer_norm_eps=1e-5, use_qk_norm=False),
    "granite": dict(
        logits_scaling=4.0,
        attention_multiplier=0.25,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        max_position_embeddings=512,
        attention_bias=False,
        mlp_bias=False,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    ),
}


@pytest.mark.parametrize("arch", sorted(TRANSFORMS))
def test_output_transforms_equal_the_models_own_forward(arch):
    """Gemma-2's final softcapping, Cohere's logit_scale, Granite's logits_scaling: shared and plain paths."""
    from mlx_scdpo.training.logps import check_output_head, output_head

    model = _tiny(arch, **TRANSFORMS[arch])
    check_output_head(model)
    pairs = _pairs(2, n=3)
    own_c, own_r = _own_pair_logps(model, pairs)
    # Gemma-2's attention reshapes queries by KV group, which the prompt cache's padding mask does not
    # fit: the trial refuses the shared path for it, and training runs the plain path (still chunked).
    assert supports_shared_prompt(model) == (arch != "gemma2")
    paths = [sequence_arrays(pairs)] + ([shared_batch_arrays(pairs)] if arch != "gemma2" else [])
    for arrays in paths:
        for chunk in (0, 3 * 512):
            pc, pr, _, _ = pair_logps(model, {k: mx.array(v) for k, v in arrays.items()}, chunk)
            np.testing.assert_allclose(np.array(pc), own_c, rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(np.array(pr), own_r, rtol=1e-4, atol=1e-3)
    # The transform matters here: the bare LM head gives other log-probs.
    module, _ = output_head(model)
    bare = module.as_linear if hasattr(module, "as_linear") else module
    seq = mx.array([pairs[0].prompt + pairs[0].chosen])
    own = nn.log_softmax(model(seq).astype(mx.float32), axis=-1)
    assert not np.allclose(
        np.array(nn.log_softmax(bare(model.model(seq)), axis=-1)), np.array(own), atol=1e-2
    )


def test_unknown_output_transform_is_refused_with_one_line():
    from mlx_lm.models import qwen2

    from eval.errors import UserError
    from mlx_scdpo.training.logps import check_output_head

    class Scaled(qwen2.Model):  # an architecture doing something after the head that we do not know
        def __call__(self, inputs, cache=None):
            return super().__call__(inputs, cache) * 0.5

    args = qwen2.ModelArgs(
        model_type="qwen2",
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
        rms_norm_eps=1e-6,
    )
    check_output_head(qwen2.Model(args))
    with pytest.raises(UserError) as e:
        check_output_head(Scaled(args))
    assert "\n" not in str(e.value) and "model type qwen2" in str(e.value) and "not supported" in str(e.value)
