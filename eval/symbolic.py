"""LaTeX -> sympy conversion and symbolic comparison.

This module runs inside the grading worker process (see ``eval.worker``): sympy can
loop or allocate without bound on adversarial input, so it never runs in the caller.
The LaTeX subset is what MATH answers use (Hendrycks et al. 2021): ``\\frac``,
``\\sqrt[n]{}``, powers, ``\\pi``, ``\\infty``, trig/log functions, ``i``.
"""

from __future__ import annotations

import re
import string

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

_TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor)
_LOCALS = {c: sympy.Symbol(c) for c in string.ascii_letters}
_LOCALS.update(
    pi=sympy.pi, I=sympy.I, oo=sympy.oo, sqrt=sympy.sqrt, root=sympy.root, sin=sympy.sin,
    cos=sympy.cos, tan=sympy.tan, cot=sympy.cot, sec=sympy.sec, csc=sympy.csc, log=sympy.log,
    exp=sympy.exp, asin=sympy.asin, acos=sympy.acos, atan=sympy.atan, Abs=sympy.Abs,
)
_FUNCS = {
    "\\arcsin": " asin", "\\arccos": " acos", "\\arctan": " atan", "\\sin": " sin", "\\cos": " cos",
    "\\tan": " tan", "\\cot": " cot", "\\sec": " sec", "\\csc": " csc", "\\ln": " log", "\\log": " log",
    "\\exp": " exp",
}
_SYMBOLS = {
    "\\pi": " pi ", "\\infty": " oo ", "\\cdot": "*", "\\times": "*", "\\div": "/",
    "\\le": "<=", "\\ge": ">=",
}
#: Relative tolerance used only when one side is a float and the other is not exact.
REL_TOL = 1e-9


def _braced(s: str, i: int) -> tuple[str, int]:
    """Content of the group starting at ``s[i]`` (``{...}`` or a single char) and the end index."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise ValueError("missing argument")
    if s[i] == "\\":  # "\frac\pi4": a macro is one argument
        m = re.match(r"\\[a-zA-Z]+", s[i:])
        if m:
            return m.group(0), i + len(m.group(0))
    if s[i] != "{":
        return s[i], i + 1
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j], j + 1
    raise ValueError("unbalanced braces")


def latex_to_expr_string(s: str) -> str:
    """Rewrite a normalized LaTeX answer as a sympy-parsable string."""
    out = []
    i = 0
    while i < len(s):
        if s.startswith("\\frac", i) or s.startswith("\\binom", i):
            is_binom = s.startswith("\\binom", i)
            num, j = _braced(s, i + (6 if is_binom else 5))
            den, j = _braced(s, j)
            a, b = latex_to_expr_string(num), latex_to_expr_string(den)
            out.append(f"binomial({a},{b})" if is_binom else f"(({a})/({b}))")
            i = j
        elif s.startswith("\\sqrt", i):
            j = i + 5
            if j < len(s) and s[j] == "[":
                k = s.index("]", j)
                n = latex_to_expr_string(s[j + 1 : k])
                arg, j = _braced(s, k + 1)
                out.append(f"root(({latex_to_expr_string(arg)}),({n}))")
            else:
                arg, j = _braced(s, j)
                out.append(f"sqrt({latex_to_expr_string(arg)})")
            i = j
        elif s[i] == "^":
            arg, j = _braced(s, i + 1)
            out.append(f"**({latex_to_expr_string(arg)})")
            i = j
        elif s[i] == "\\":
            m = re.match(r"\\[a-zA-Z]+", s[i:])
            name = m.group(0) if m else s[i : i + 2]
            if name in _FUNCS:
                out.append(_FUNCS[name])
            elif name in _SYMBOLS:
                out.append(_SYMBOLS[name])
            else:
                raise ValueError(f"unsupported macro {name}")
            i += len(name)
        elif s[i] in "{}":
            out.append("(" if s[i] == "{" else ")")
            i += 1
        elif s[i] == "i" and not (i > 0 and s[i - 1].isalpha()) and not (i + 1 < len(s) and s[i + 1].isalpha()):
            out.append(" I ")  # MATH writes the imaginary unit as i.
            i += 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def to_sympy(s: str):
    """Parse a normalized LaTeX answer into a sympy expression (raises on failure)."""
    text = latex_to_expr_string(s)
    if "binomial" in text:
        local = dict(_LOCALS, binomial=sympy.binomial)
    else:
        local = _LOCALS
    return parse_expr(text, local_dict=local, transformations=_TRANSFORMS, evaluate=True)


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
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        scale = max(abs(va), abs(vb), 1e-12)
        if abs(va - vb) > 1e-6 * scale:
            return True
    return None


def exprs_equal(a, b) -> bool:
    """Equality of two sympy expressions: exact unless a float is involved."""
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
    return sympy.simplify(a - b) == 0


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
        if dg == 0 or dp == 0:
            return dp == dg
        ratio = sympy.simplify(dp / dg)
        if ratio.free_symbols or ratio == 0 or not ratio.is_number:
            return False
        return bool(ratio > 0) if pred[1] != "=" else True
    except Exception:
        return False
