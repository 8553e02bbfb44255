"""Seeded sampling and the per-step temperature ramp as MLX logits processors.

``StepTemperatureProcessor`` sees the tokens generated so far (mlx-lm passes each
sequence's context) and divides the logits by ``min(T0 + i * dT, Tmax)`` where ``i`` is
the number of step boundaries generated so far, so the temperature switches exactly on
the token after a boundary. Everything stays lazy (no ``.item()``, no host sync), so
mlx-lm's pipelined decoding is not stalled. Tokens inserted in bulk (a prompt, an
execution block) never count: only a context that grew by exactly one token is checked.

``SeededSampler`` draws from an explicit PRNG key that it splits on every call: the
same seed gives the same samples and different seeds differ, independent of MLX's
global random state (mlx-lm's compiled sampler captures that state).
"""

from __future__ import annotations

import hashlib

import mlx.core as mx

from mlx_scdpo.steps import DT, T0, TMAX


def boundary_mask(tokenizer, marks: tuple[str, ...]) -> mx.array:
    """1.0 for every vocabulary id whose decoded text contains one of ``marks``."""
    vocab = tokenizer.get_vocab()
    size = max(max(vocab.values()) + 1, getattr(tokenizer, "vocab_size", 0) or 0)
    pieces = tokenizer.batch_decode([[i] for i in range(size)])
    ids = [i for i, piece in enumerate(pieces) if any(m in piece for m in marks)]
    mask = mx.zeros((size,), dtype=mx.float32)
    if ids:
        mask[mx.array(ids)] = 1.0
    return mask


class StepTemperatureProcessor:
    """Per-sequence logits processor implementing the step-wise temperature ramp."""

    def __init__(self, mask: mx.array, t0: float = T0, dt: float = DT, tmax: float = TMAX):
        self.mask, self.t0, self.dt, self.tmax = mask, t0, dt, tmax
        self.count = None
        self.prev_boundary = mx.array(1.0)  # the prefix ends at a step boundary
        self.seen = 0

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        n = context.size
        if self.count is None:
            self.count = mx.array(0.0)
        elif n == self.seen + 1:
            last = context[-1]
            is_boundary = mx.where(last < self.mask.size, self.mask[mx.minimum(last, self.mask.size - 1)], 0.0)
            # A boundary right after a boundary (a blank line) does not start a new step.
            self.count = self.count + is_boundary * (1.0 - self.prev_boundary)
            self.prev_boundary = is_boundary
        self.seen = n
        return logits / mx.minimum(self.t0 + self.dt * self.count, self.tmax)


def stable_seed(*parts) -> int:
    """A 31-bit seed from ``parts`` that is the same in every process.

    Python's ``hash()`` of a string (or of a tuple holding one) changes with each process
    (PYTHONHASHSEED), which made step-control draws differ between identical runs."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") % (2**31)


class SeededSampler:
    """Categorical sampling at ``temp`` from an explicit, split-per-call PRNG key."""

    def __init__(self, seed: int, temp: float = 1.0):
        self.key = mx.random.key(seed)
        self.temp = temp

    def __call__(self, logprobs: mx.array) -> mx.array:
        self.key, sub = mx.random.split(self.key)
        if self.temp == 0:
            return mx.argmax(logprobs, axis=-1)
        return mx.random.categorical(logprobs * (1.0 / self.temp), key=sub)
