"""Answer equivalence for GSM8K and MATH.

Order of checks (cheap and exact first; sympy last, in a killable worker process):

1. Normalized strings equal (``eval.normalize.strip_string``) -> equal.
2. Hedged predictions (``18 or 19``, ``either``) never equal a single gold value.
3. Structure: matrices (elementwise), ``\\pm`` (two-element set), unions of intervals
   (unordered), intervals / tuples / points / vectors (ordered, bracket kinds must
   match so ``(1,2]`` != ``[1,2]``), bare comma lists and ``\\{...\\}`` sets (unordered).
4. Relations: equations and inequalities compared as ``rhs - lhs`` up to a constant
   factor (positive for inequalities), so swapped sides and scaled forms match.
5. Scalars: exact rationals (integers, decimals, fractions, mixed numbers) compare
   exactly; percent answers also match their value / 100; otherwise sympy
   (``simplify(a - b) == 0``; floats against irrationals only within 1e-9 relative).
   ``10^{10^{10}}``-style towers are never handed to sympy (they would not finish).
"""

from __future__ import annotations

import re
from fractions import Fraction

from eval.normalize import normalize_gsm8k, parse_rational, strip_string
from eval.worker import DEFAULT_TIMEOUT, get_worker

_HEDGE = re.compile(r"\bor\b|\beither\b|\\text\{\s*or\s*\}|\\lor", re.IGNORECASE)
_MATRIX = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$", re.DOTALL)
_OPEN, _CLOSE = "([{", ")]}"
# Exponents whose value would be astronomically large: nested powers or long literals.
_TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d{4,}|\*\*\s*\(?\s*\d{4,}|!\s*!|\d{4,}\s*!")
_MAX_LEN = 400


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split ``s`` at ``sep`` outside any bracket pair (``\\{``/``\\}`` count as braces)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _wrapped(s: str) -> bool:
    """Whether the first bracket of ``s`` closes at its last character."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _structure(s: str):
    """Classify a normalized answer: ("matrix", rows) | ("seq", brackets, items) | ("set", items) | ("scalar", s)."""
    m = _MATRIX.match(s)
    if m:
        rows = [r for r in m.group(2).split("\\\\") if r.strip()]
        return ("matrix", [[c.strip() for c in r.split("&")] for r in rows])
    if s.startswith("\\{") and s.endswith("\\}"):
        return ("set", split_top_level(s[2:-2]))
    if "\\cup" in s:
        return ("set", split_top_level(s, "\\cup"))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wrapped(s):
        items = split_top_level(s[1:-1])
        if len(items) > 1:
            return ("seq", s[0] + s[-1], items)
    items = split_top_level(s)
    if len(items) > 1:
        return ("set", items)
    if "\\pm" in s and s.count("\\pm") == 1:
        a, b = s.split("\\pm")
        return ("set", [f"{a}+{b}" if a else b, f"{a}-{b}" if a else f"-{b}"])
    return ("scalar", s)


_REL = re.compile(r"(<=|>=|\\leq|\\geq|\\neq|\\ne|<|>|=)")
_REL_CANON = {"\\leq": "<=", "\\geq": ">=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "=": "="}


def _relation(s: str):
    """``(lhs, op, rhs)`` oriented so op is ``=``, ``<`` or ``<=``; None if not one relation."""
    for macro, op in (("\\leq", "<="), ("\\geq", ">="), ("\\le", "<="), ("\\ge", ">=")):
        s = s.replace(macro, op)
    parts = _REL.split(s)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        return None
    lhs, op, rhs = parts
    op = _REL_CANON.get(op)
    if op is None:
        return None
    if op in (">", ">="):
        lhs, op, rhs = rhs, op.replace(">", "<"), lhs
    return (lhs, op, rhs)


def _scalar_equal(p: str, g: str, percent: bool, timeout: float) -> bool:
    if p == g:
        return True
    rp, rg = parse_rational(p), parse_rational(g)
    if rp is not None and rg is not None:
        return rp == rg or (percent and (rp == rg / 100 or rp / 100 == rg))
    if len(p) > _MAX_LEN or len(g) > _MAX_LEN or _TOWER.search(p) or _TOWER.search(g):
        return False
    if not re.search(r"[\d\w\\]", p):
        return False
    return get_worker().call("symbolic", p, g, timeout)


def _items_equal(ps: list[str], gs: list[str], ordered: bool, percent: bool, timeout: float) -> bool:
    if len(ps) != len(gs):
        return False
    ps, gs = [strip_string(x) for x in ps], [strip_string(x) for x in gs]  # "x=2, x=3"
    if ordered:
        return all(_answer_equal(a, b, percent, timeout) for a, b in zip(ps, gs))
    remaining = list(gs)
    for a in ps:
        for j, b in enumerate(remaining):
            if _answer_equal(a, b, percent, timeout):
                del remaining[j]
                break
        else:
            return False
    return True


def _answer_equal(p: str, g: str, percent: bool, timeout: float) -> bool:
    p, g = p.strip(), g.strip()
    if p == g:
        return True
    sp, sg = _structure(p), _structure(g)
    if sp[0] == "set" and sg[0] == "scalar":
        # One answer boxed twice in different forms ("15\frac{39}{40}, \frac{639}{40}").
        return all(_answer_equal(a, g, percent, timeout) for a in sp[1])
    if sp[0] != sg[0]:
        return False
    kind = sp[0]
    if kind == "matrix":
        if len(sp[1]) != len(sg[1]) or any(len(a) != len(b) for a, b in zip(sp[1], sg[1])):
            return False
        return all(_scalar_equal(a, b, percent, timeout) for ra, rb in zip(sp[1], sg[1]) for a, b in zip(ra, rb))
    if kind == "seq":
        return sp[1] == sg[1] and _items_equal(sp[2], sg[2], True, percent, timeout)
    if kind == "set":
        return _items_equal(sp[1], sg[1], False, percent, timeout)
    rel_p, rel_g = _relation(p), _relation(g)
    if rel_p or rel_g:
        if not (rel_p and rel_g):
            return False
        if rel_p == rel_g:
            return True
        return get_worker().call("relation", rel_p, rel_g, timeout)
    return _scalar_equal(p, g, percent, timeout)


def is_hedged(pred: str) -> bool:
    """Whether a prediction offers alternatives (``18 or 19``) instead of one answer."""
    return bool(_HEDGE.search(pred))


def is_equivalent(pred: str | None, gold: str | None, task: str = "math", timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether ``pred`` and ``gold`` denote the same final answer.

    ``task`` is ``"gsm8k"`` (numbers, compared exactly) or ``"math"`` / ``"math500"``.
    Never raises and never takes much longer than ``timeout`` seconds.
    """
    try:
        if pred is None or gold is None or not str(pred).strip() or not str(gold).strip():
            return False
        pred, gold = str(pred), str(gold)
        if is_hedged(pred) and not is_hedged(gold):
            return False
        if task == "gsm8k":
            return _gsm8k_equal(pred, gold)
        p, g = strip_string(pred), strip_string(gold)
        if p == g:
            return True
        percent = ("%" in pred) != ("%" in gold)
        return _answer_equal(p, g, percent, timeout)
    except Exception:
        return False


def _gsm8k_equal(pred: str, gold: str) -> bool:
    p, g = normalize_gsm8k(pred), normalize_gsm8k(gold)
    if p is None or g is None:
        return False
    if p == g:
        return True
    try:
        return Fraction(p) == Fraction(g)
    except (ValueError, ZeroDivisionError):
        return False
