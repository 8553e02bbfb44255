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
_NORMALIZE = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="all", equations=False
)
# Case matters for symbols (A != a); MATH's mixed numbers: 2\frac{1}{2} = 5/2.
_CONVERT = ConversionConfig(
    interpret_as_mixed_fractions=True,
    interpret_simple_eq_as_assignment=False,
    interpret_contains_as_eq=True,
    lowercase_symbols=False,
)
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
    return _evaluated(expr)


def _evaluated(e, depth: int = 0):
    """Rebuild the parser's unevaluated tree with evaluation on (``-1*2*x`` -> ``-2*x``, unions merged)."""
    if depth > 60:
        return e
    if isinstance(e, sympy.MatrixBase):
        return e.applyfunc(lambda x: _evaluated(x, depth + 1))
    if not isinstance(e, sympy.Basic) or not e.args or isinstance(e, (sympy.Symbol, sympy.Number)):
        return e
    try:
        rebuilt = e.func(*[_evaluated(a, depth + 1) for a in e.args])
    except Exception:
        return e
    if isinstance(rebuilt, sympy.UnevaluatedExpr):
        rebuilt = rebuilt.args[0]
    return rebuilt


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
    if a.has(sympy.oo, -sympy.oo) or b.has(sympy.oo, -sympy.oo):
        return False  # infinities are equal only structurally (inf - inf is no test)
    if _numeric_gap(a, b):
        return False
    if not (a.free_symbols or b.free_symbols):
        if _has_float(a) or _has_float(b):
            va, vb = complex(sympy.N(a, 30)), complex(sympy.N(b, 30))
            scale = max(abs(va), abs(vb), 1e-300)
            return abs(va - vb) <= REL_TOL * scale
        if _constants_equal(a, b):
            return True
        return sympy.simplify(a - b) == 0
    if _has_float(a) or _has_float(b):
        return False
    if _agree_everywhere_sampled(a, b):
        return True
    diff = sympy.simplify(a - b)
    if diff == 0:
        return True
    # Trigonometric identities (2 sin x cos x = sin 2x, tan^2 + 1 = sec^2) that simplify leaves apart.
    if diff.has(sympy.sin, sympy.cos, sympy.tan, sympy.sec, sympy.csc, sympy.cot):
        return sympy.simplify(sympy.expand_trig(diff).rewrite(sympy.cos)) == 0
    return False


# Sample points: every symbol takes both signs, several magnitudes and a non-real value.
_SAMPLES = (
    (0.7381, -1.2913, 2.4517, -0.3349),
    (-1.6127, 0.4471, -0.8823, 1.9206),
    (2.2094, 1.1587, -2.7731, -1.4479),
    (-0.5213 + 0.3719j, 1.3307 - 0.2851j, 0.6642 + 1.1093j, -1.0581 - 0.7427j),
)


def _agree_everywhere_sampled(a, b) -> bool:
    """Identity by sampling (Schwartz-Zippel style): equal to 30 digits at 4 points, both signs of
    every variable and a complex point. Saves ``simplify`` (the slow part) on equal pairs; any
    failure to evaluate means "not shown" and falls back to ``simplify``.
    """
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols or len(symbols) > 6:
        return False
    for point in _SAMPLES:
        subs = {}
        for i, s in enumerate(symbols):  # exact points: float inputs would cap the precision at 1e-16
            z = complex(point[i % 4])
            subs[s] = sympy.Rational(str(z.real)) + i // 4 + sympy.Rational(str(z.imag)) * sympy.I
        try:
            va, vb = sympy.N(a.subs(subs), 40), sympy.N(b.subs(subs), 40)
            if not (va.is_number and vb.is_number) or va.has(sympy.zoo, sympy.nan, sympy.oo):
                return False
            scale = max(abs(complex(va)), abs(complex(vb)), 1e-12)
            if abs(complex(sympy.N(va - vb, 40))) > 1e-25 * scale:
                return False
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
            return False
    return True


def _constants_equal(a, b) -> bool | None:
    """Two constant expressions agreeing to 50 digits are equal (nested radicals: simplify is slow)."""
    try:
        va, vb = sympy.N(a, 60), sympy.N(b, 60)
        va, vb = complex(va), complex(vb)
    except (TypeError, ValueError, OverflowError):
        return None
    scale = max(abs(va), abs(vb), 1e-300)
    if scale == float("inf") or scale != scale:
        return None
    return abs(va - vb) <= 1e-14 * scale and abs(sympy.N(a - b, 60)) <= sympy.Float(10) ** -45 * max(1, scale)


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
        return bool(ratio > 0) if pred[1] in ("<", "<=") else True
    except Exception:
        return False


def _as_set(e):
    """A sympy Set from a parsed interval / union / set, or an inequality (chain) in one variable."""
    if isinstance(e, sympy.Set):
        return e
    if isinstance(e, sympy.Eq) and isinstance(e.rhs, sympy.Set):  # "x \\in (1, 2)"
        return e.rhs
    from sympy.core.function import AppliedUndef

    if isinstance(e, (sympy.Rel, sympy.And)) and e.atoms(
        AppliedUndef
    ):  # "0 < f(x) < 1": f(x) is the variable
        e = e.replace(lambda t: isinstance(t, AppliedUndef), lambda t: sympy.Symbol("t_", real=True))
    if isinstance(e, (sympy.Rel, sympy.And)) and len(e.free_symbols) == 1:
        (x,) = e.free_symbols
        return e.as_set() if x.is_real else e.subs(x, sympy.Symbol(x.name, real=True)).as_set()
    raise ValueError("not a set")


def sets_equal(pred: str, gold: str) -> bool:
    """Intervals, unions and inequalities as sets: ``[1,2]\\cup[2,3]`` = ``[1,3]``, ``1<x<2`` = ``(1,2)``."""
    try:
        a, b = _as_set(to_sympy(pred)), _as_set(to_sympy(gold))
        if a == b:
            return True
        return sympy.Complement(a, b) == sympy.S.EmptySet and sympy.Complement(b, a) == sympy.S.EmptySet
    except Exception:
        return False


def matrices_equal(pred: str, gold: str) -> bool:
    """Matrices after arithmetic (``2\\begin{pmatrix}..``, sums), compared entry by entry."""
    try:
        a, b = to_sympy(pred), to_sympy(gold)
        a = a.doit() if hasattr(a, "doit") else a
        b = b.doit() if hasattr(b, "doit") else b
        if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)) or a.shape != b.shape:
            return False
        return all(exprs_equal(x, y) for x, y in zip(a, b))
    except Exception:
        return False
