"""Per-token log-probabilities with the LM head and log-softmax computed in chunks of positions.

The [tokens x vocabulary] logits are the largest arrays of DPO training at real lengths:
8 pairs x 2 x 512 response tokens x 151,936 (Qwen2.5) is 5 GB in float32, and the
log-softmax and its gradient, held for the backward pass, as much again. Here the head
runs on a few positions at a time (``chunk`` logits: positions x vocabulary), so one
chunk's logits exist at a time in the forward pass and again in the backward pass, which
recomputes them chunk after chunk (a custom VJP). This is the position-chunked form of the idea of
Apple's Cut Cross-Entropy (Wijmans et al. 2024, arXiv 2411.09009: never materialize the
full logits). Gradients equal the unchunked computation (tests/test_logps.py).

``output_head(model)`` is what the model's own ``__call__`` does after its backbone
(``model.model``): the LM head (or tied embeddings) and any output transform: Gemma-2's
final logit softcapping, Cohere's ``logit_scale``, Granite's ``logits_scaling``.
``check_output_head`` compares it with the model's own forward on a few tokens and
refuses, with one line, an architecture whose output it does not reproduce.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_scdpo.errors import UserError

# Logits (positions x vocabulary) computed at once: 64 MB in float32, 110 positions of Qwen2.5's
# 151,936 tokens. Smaller chunks read the head's weights more often (545 MB per pass for
# Qwen2.5-0.5B in float32): 2**22 made the head ~3x slower for little less memory.
DEFAULT_CHUNK = 2**24


def _projection(model):
    """(module, hidden -> logits) of the LM head, or None when the model has no split we know."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        return None
    if hasattr(model, "lm_head"):
        return model.lm_head, model.lm_head
    if hasattr(inner, "embed_tokens"):
        return inner.embed_tokens, inner.embed_tokens.as_linear
    return None


def output_head(model):
    """hidden -> logits as ``model(inputs)`` computes them from ``model.model(inputs)``; None if unknown.

    Returns (module whose trainable parameters the head uses, function).
    """
    found = _projection(model)
    if found is None:
        return None
    module, proj = found
    args = getattr(model, "args", None)
    model_type = getattr(model, "model_type", None) or getattr(args, "model_type", "")
    cap = getattr(model, "final_logit_softcapping", None)
    if cap is None:
        cap = getattr(args, "final_logit_softcapping", None)
    scaling = getattr(model, "logits_scaling", None)  # granite, granitemoe: divided by
    scale = (
        getattr(getattr(model.model, "args", None), "logit_scale", None)
        if model_type.startswith("cohere")
        else None
    )

    def head(h):
        out = proj(h)
        if scale is not None:
            out = out * scale
        if scaling is not None:
            out = out / scaling
        if cap:
            out = mx.tanh(out / cap) * cap
        return out

    return module, head


def check_output_head(model) -> None:
    """One-line ``UserError`` when ``output_head`` does not reproduce the model's own logits."""
    found = output_head(model)
    model_type = getattr(model, "model_type", None) or getattr(
        getattr(model, "args", None), "model_type", "?"
    )
    if found is None:  # no split we know: ``token_logps`` uses the model's own forward (all logits at once)
        return
    probe = mx.array([[1, 2, 3, 4, 5, 6, 7, 8]])
    own = model(probe).astype(mx.float32)
    ours = found[1](model.model(probe)).astype(mx.float32)
    if own.shape != ours.shape or not np.allclose(
        np.array(own), np.array(ours), rtol=1e-4, atol=1e-4, equal_nan=True
    ):
        raise UserError(
            f"model type {model_type}: its output layer does something after the LM head that "
            f"mlx-scdpo does not reproduce; this architecture is not supported for training"
        )


def positions_per_chunk(vocab: int, chunk: int) -> int:
    return max(1, chunk // max(vocab, 1))


def _picked_logps(logits, targets):
    logits = logits.astype(mx.float32)
    lse = mx.logsumexp(logits, axis=-1)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - lse


def chunked_logps(
    head, module, hidden: mx.array, targets: mx.array, chunk: int = DEFAULT_CHUNK, vocab: int | None = None
) -> mx.array:
    """Log-probability of each target, shape ``targets.shape``; ``hidden`` is (..., positions, dims).

    ``chunk``: logits computed at once (0: all positions in one piece, no recomputation).
    """
    if chunk <= 0:
        return _picked_logps(head(hidden), targets)
    shape = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    n = t.shape[0]
    step = positions_per_chunk(vocab or head(h[:1]).shape[-1], chunk)  # a shape only: not computed
    if step >= n:  # one chunk: its logits may as well be kept for the backward pass
        return _picked_logps(head(hidden), targets)
    if tree_flatten(module.trainable_parameters()):  # a trained head (LoRA on lm_head): all logits at once
        return _picked_logps(head(hidden), targets)
    cuts = list(range(step, n, step))

    @mx.custom_function
    def logps(h, t):
        return mx.concatenate(
            [_picked_logps(head(hc), tc) for hc, tc in zip(mx.split(h, cuts), mx.split(t, cuts))]
        )

    @logps.vjp
    def logps_vjp(primals, cotangent, output):
        # Each chunk's logits are recomputed and differentiated in turn; each chunk's input
        # depends on the previous chunk's gradient, so MLX cannot schedule the chunks side by
        # side (it would: they are independent), which would hold every chunk's logits at once.
        h, t = primals
        grads, prev = [], None
        for hc, tc, cc in zip(mx.split(h, cuts), mx.split(t, cuts), mx.split(cotangent, cuts)):
            if prev is not None:
                hc = mx.depends(hc, prev)
            _, (g,) = mx.vjp(lambda x, tc=tc: _picked_logps(head(x), tc), [hc], [cc])
            grads.append(g)
            prev = g
        return mx.concatenate(grads), mx.zeros_like(t)

    return logps(h, t).reshape(shape)


def token_logps(model, inputs: mx.array, targets: mx.array, chunk: int = DEFAULT_CHUNK) -> mx.array:
    """Log-probability of each target token, shape (batch, length), with the head in chunks."""
    found = output_head(model)
    if found is None:  # no split we know: the model's own forward, all logits at once
        return _picked_logps(model(inputs), targets)
    module, head = found
    return chunked_logps(head, module, model.model(inputs), targets, chunk, vocab_size(model))


def vocab_size(model) -> int | None:
    v = getattr(getattr(model, "args", None), "vocab_size", None)
    return v if isinstance(v, int) and v > 0 else None
