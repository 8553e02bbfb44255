"""LaTeX -> sympy conversion and symbolic comparison, run only inside the grading worker.

Answers are parsed by ``latex2sympy2_extended`` (the ANTLR LaTeX grammar that Math-Verify
uses, https://github.com/huggingface/latex2sympy2_extended) straight into sympy objects:
no answer text is ever turned into Python source (no ``eval``, ``exec``, ``sympify(str)``
or ``parse_expr``; ``eval.guard`` enforces this in the worker). sympy can loop or
allocate without bound on adversarial input, so this module never runs in the caller.
"""

from __future__ import annotations

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig

# The caller has already normalized the string (eval.normalize); only LaTeX spelling here.
_NORMALIZE = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                                 boxed="all", equations=False)
# Case matters for symbols (A != a); MATH's mixed numbers: 2\frac{1}{2} = 5/2.
_CONVERT = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                            interpret_contains_as_eq=True, lowercase_symbols=False)
_I = sympy.Symbol("i")
_I_REAL = sympy.Symbol("i", real=True)
#: Relative tolerance used only when one side is a float and the other is not exact.
REL_TOL = 1e-9


def to_sympy(s: str):
    """Parse a normalized LaTeX answer into a sympy object (raises on failure).

    MATH writes the imaginary unit as ``i``; the parser leaves it a symbol.
    """
    expr = latex2sympy(s, normalization_config=_NORMALIZE, conversion_config=_CONVERT)
    if isinstance(expr, sympy.Basic) and expr.has(_I, _I_REAL):
        expr = expr.subs({_I: sympy.I, _I_REAL: sympy.I})
    return expr


def _has_float(e) -> bool:
    return any(isinstance(a, sympy.Float) for a in sympy.preorder_traversal(e))


def _numeric_gap(a, b) -> bool | None:
    """True if a and b clearly differ at a few random points (cheap), None if undecided.

    ``simplify`` is the slow part of grading; most unequal pairs are told apart here.
    """
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for point in ((0.5377, 1.8339, -2.2588, 0.8622), (0.3188, -1.3077, -0.4336, 0.3426)):
        subs = {s: sympy.Float(point[i % 4] + i // 4) for i, s in enumerate(symbols)}
        try:
            va, vb = complex(sympy.N(a.subs(subs), 20)), complex(sympy.N(b.subs(subs), 20))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
            return None
        scale = max(abs(va), abs(vb), 1e-12)
        if abs(va - vb) > 1e-6 * scale:
            return True
    return None


def exprs_equal(a, b) -> bool:
    """Equality of two sympy scalars: exact unless a float is involved."""
    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return False
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return False  # "5:00" parses as 5/0: never equal to anything
    if a == b:
        return True
    if _numeric_gap(a, b):
        return False
    if not (a.free_symbols or b.free_symbols):
        if _has_float(a) or _has_float(b):
            va, vb = complex(sympy.N(a, 30)), complex(sympy.N(b, 30))
            scale = max(abs(va), abs(vb), 1e-300)
            return abs(va - vb) <= REL_TOL * scale
        return sympy.simplify(a - b) == 0
    if _has_float(a) or _has_float(b):
        return False
    diff = sympy.simplify(a - b)
    if diff == 0:
        return True
    # Trigonometric identities (2 sin x cos x = sin 2x) that simplify leaves apart.
    return sympy.simplify(sympy.expand_trig(diff)) == 0 if diff.has(sympy.sin, sympy.cos, sympy.tan) else False


def symbolic_equal(pred: str, gold: str) -> bool:
    """Whether two normalized LaTeX scalars are mathematically equal."""
    try:
        return bool(exprs_equal(to_sympy(pred), to_sympy(gold)))
    except Exception:
        return False


def relation_equal(pred: tuple[str, str, str], gold: tuple[str, str, str]) -> bool:
    """Equations / inequalities given as (lhs, op, rhs), op in ``= < <=`` (already oriented).

    Equal when ``pred_rhs - pred_lhs`` is a constant non-zero multiple of the gold's
    (positive for inequalities), so swapped sides and scaled equations match.
    """
    try:
        if pred[1] != gold[1]:
            return False
        dp = to_sympy(pred[2]) - to_sympy(pred[0])
        dg = to_sympy(gold[2]) - to_sympy(gold[0])
        if dp.has(sympy.zoo, sympy.nan) or dg.has(sympy.zoo, sympy.nan):
            return False
        if dg == 0 or dp == 0:
            return dp == dg
        ratio = sympy.simplify(dp / dg)
        if ratio.free_symbols or ratio == 0 or not ratio.is_number:
            return False
        return bool(ratio > 0) if pred[1] != "=" else True
    except Exception:
        return False
