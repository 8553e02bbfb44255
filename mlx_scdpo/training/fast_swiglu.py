"""SwiGLU for MLX's CPU backend: a vectorizable sigmoid and a backward pass that saves less.

MLX's CPU backend evaluates ``exp``/``sigmoid``/``tanh`` one element at a time, so a sigmoid
costs far more than a multiply of the same size and SwiGLU's sigmoid can cost more than the
three MLP matmuls around it (figures in docs/performance.md). Here
``sigmoid(x) = (1 + tanh(x / 2)) / 2`` with ``tanh`` from the rational approximation Eigen
uses for float (``generic_fast_tanh_float``, also XLA's CPU ``tanh``): only multiplies, adds,
a clip and one divide, which ``mx.compile`` fuses into one loop the C++ compiler vectorizes. Largest deviation from the exact sigmoid: 2.3e-7 absolute (a few float32
ulps near 1; tested); far in the negative tail, where the sigmoid is below 1e-4, the
relative error grows (0.25% at x = -10), negligible next to the other activations. The custom backward recomputes the sigmoid from ``gate`` instead of
keeping ``sigmoid(gate)`` and ``silu(gate)`` for the whole step, which lowers peak memory.

``use_fast_swiglu(model)`` swaps the ``swiglu`` function the model's MLP module calls
(mlx-lm's Llama, Qwen2/3, Mistral, ... all call ``mlx_lm.models.activations.swiglu``) while
training; Metal's ``exp`` is fast, so on the GPU nothing changes.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import mlx.core as mx

# Eigen, Eigen/src/Core/MathFunctionsImpl.h, generic_fast_tanh_float: odd numerator,
# even denominator, inputs clamped to +-7.9053 where tanh rounds to +-1 in float32.
_CLAMP = 7.90531110763549805
_NUM = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_DEN = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def fast_sigmoid(x: mx.array) -> mx.array:
    """``sigmoid(x)`` from Eigen's rational ``tanh``: elementwise arithmetic only."""
    t = mx.clip(0.5 * x, -_CLAMP, _CLAMP)
    t2 = t * t
    num = _NUM[-1]
    for c in reversed(_NUM[:-1]):
        num = num * t2 + c
    den = _DEN[-1]
    for c in reversed(_DEN[:-1]):
        den = den * t2 + c
    return 0.5 + 0.5 * (t * num) / den


@mx.compile
def _forward(gate, x):
    return gate * fast_sigmoid(gate) * x


@mx.compile
def _backward(gate, x, cotangent):
    s = fast_sigmoid(gate)
    silu = gate * s
    return cotangent * x * (s + silu * (1 - s)), cotangent * silu


@mx.custom_function
def swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """``silu(gate) * x`` with the fast sigmoid; gradients recompute it from ``gate``."""
    return _forward(gate, x)


@swiglu.vjp
def _swiglu_vjp(primals, cotangent, output):
    gate, x = primals
    return _backward(gate, x, cotangent)


@contextmanager
def use_fast_swiglu(model, enabled: bool = True):
    """Within the block, the model's MLP modules call ``swiglu`` above (restored afterwards).

    Only on the CPU backend, where MLX's transcendental functions are scalar; yields
    whether anything was swapped."""
    modules = set()
    if enabled and mx.default_device() == mx.cpu:
        for _, m in model.named_modules():
            mod = sys.modules.get(type(m).__module__)
            if (
                mod is not None
                and getattr(mod, "swiglu", None) is not None
                and mod.__name__.startswith("mlx_lm.")
            ):
                modules.add(mod)
    saved = {mod: mod.swiglu for mod in modules}
    try:
        for mod in modules:
            mod.swiglu = swiglu
        yield bool(modules)
    finally:
        for mod, fn in saved.items():
            mod.swiglu = fn
