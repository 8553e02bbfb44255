"""Exact evaluation of short plain arithmetic left in a GSM8K answer (``10 - 2 = 8``).

A hand-written recursive-descent parser over ``fractions.Fraction``: numbers, ``+ - * / x × ÷``,
``\\times``/``\\cdot``/``\\div`` and parentheses, nothing else (no names, no powers), so no answer
text is ever executed. Used to accept working only when it is right: the GSM8K reference
answers write ``<<10-2=8>>`` calculations, and a prediction ``10 - 2 = 8`` states 8 only if
``10 - 2`` is 8 (a false positive is worse than a false negative).
"""

from __future__ import annotations

import re
from fractions import Fraction

_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|[-+*/()])")
_OPS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("·", "*"))
_MAX_LEN = 80


def _tokens(s: str) -> list[str] | None:
    s = s.replace("$", "").replace(",", "")
    for a, b in _OPS:
        s = s.replace(a, b)
    s = re.sub(r"(?<=[\d)])\s*x\s*(?=[\d(])", "*", s)  # "3 x 4"
    out, i = [], 0
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m:
            return None if s[i:].strip() else out
        out.append(m.group(1))
        i = m.end()
    return out


def evaluate(s: str) -> Fraction | None:
    """Exact value of ``s`` if it is plain arithmetic (``10 - 2``, ``3 × (4 + 1) / 2``), else None."""
    if len(s) > _MAX_LEN:
        return None
    toks = _tokens(s)
    if not toks:
        return None
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take():
        pos[0] += 1
        return toks[pos[0] - 1]

    def atom(depth: int):
        t = peek()
        if t is None or depth > 20:
            raise ValueError
        if t in "+-":
            take()
            v = atom(depth + 1)
            return -v if t == "-" else v
        if t == "(":
            take()
            v = expr(depth + 1)
            if take() != ")":
                raise ValueError
            return v
        if t in "*/)":
            raise ValueError
        return Fraction(take())

    def term(depth: int):
        v = atom(depth)
        while peek() in ("*", "/"):
            op, w = take(), atom(depth)
            v = v * w if op == "*" else v / w
        return v

    def expr(depth: int):
        v = term(depth)
        while peek() in ("+", "-"):
            op, w = take(), term(depth)
            v = v + w if op == "+" else v - w
        return v

    try:
        v = expr(0)
    except (ValueError, ZeroDivisionError, IndexError):
        return None
    return v if pos[0] == len(toks) else None


def checked_result(s: str) -> str | None:
    """``10 - 2 = 8`` -> ``8`` when every side before the last evaluates to the last one; else None."""
    parts = [p.strip() for p in s.split("=")]
    if len(parts) < 2 or not all(parts):
        return None
    last = evaluate(parts[-1])
    if last is None or not re.fullmatch(r"-?\s*\$?\d[\d,]*(?:\.\d+)?", parts[-1]):
        return None
    if all(evaluate(p) == last for p in parts[:-1]):
        return parts[-1]
    return None
