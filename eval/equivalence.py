"""Answer equivalence for GSM8K and MATH.

No answer text is ever executed: strings are compared here, exact numbers with ``fractions``,
and everything symbolic is parsed by an ANTLR LaTeX grammar in a killable, guarded worker
process (``eval.symbolic``, ``eval.guard``, ``eval.worker``). Order of checks (cheap and exact first):

1. Normalized strings equal (``eval.normalize.strip_string``: wrappers, ``\\boxed{}``, units,
   thousands separators, number words, spacing) -> equal.
2. Hedged predictions (``18 or 19``) never equal a single gold value.
3. Labels and working are read off: ``x = 5``, ``(p,q) = (3,2)``, ``|AB| = 1``, ``x = 5+5+1 = 11``,
   ``18 - 3 = 15`` (the last side), ``x \\approx 3``; genuine equations stay relations.
4. Structure: matrices (elementwise), ``\\pm`` (two-element set), unions of intervals
   (unordered), intervals / tuples / points / vectors (ordered, bracket kinds must
   match so ``(1,2]`` != ``[1,2]``), bare comma / ``or`` / ``and`` lists and ``\\{...\\}`` sets
   (unordered). Inequalities in one variable become intervals; unions that simplify and
   matrix arithmetic go to the worker.
5. Relations: equations and inequalities compared as ``rhs - lhs`` up to a constant
   factor (positive for inequalities), so swapped sides and scaled forms match.
6. Scalars: exact rationals (integers, decimals, fractions, mixed numbers, ``1.5\\times10^3``,
   ``0.\\overline{3}``) compare exactly; percent answers also match their value / 100; base
   subscripts (``204_5``) compare digits and base; text compares case-insensitively; otherwise
   sympy in the worker (sampled identity, then ``simplify``; floats against irrationals only
   within 1e-9 relative). ``10^{10^{10}}``-style towers are never handed to sympy.

Every pair has one time bound (``timeout``, default 1 s) across all its worker calls; when it
runs out the answer is "not equal": a false negative is preferred to a false positive.
"""

from __future__ import annotations

import re
import time
from fractions import Fraction

from eval.arithmetic import checked_result
from eval.labels import VARIABLE, as_point, other_variable
from eval.normalize import normalize_gsm8k, parse_rational, strip_string
from eval.worker import DEFAULT_TIMEOUT, get_worker

_HEDGE = re.compile(r"\bor\b|\beither\b|\\text\{\s*or\s*\}|\\lor", re.IGNORECASE)
_MATRIX = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$", re.DOTALL)
_OPEN, _CLOSE = "([{", ")]}"
# Exponents whose value would be astronomically large: nested powers or long literals.
_TOWER = re.compile(
    r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d+\s*\}?\s*\^|\^\s*\{?\s*\d{4,}|\*\*\s*\(?\s*\d{4,}|!\s*!|\d{4,}\s*!"
)
_MAX_LEN = 400
_MAX_INPUT = 2000


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


_BARE_SET = re.compile(r"^\{(?!\\)(.*)\}$")
# Surrounding brackets around a matrix environment: "[\begin{array}..\end{array}]", "(\begin{pmatrix}..)".
_MATRIX_WRAPPED = re.compile(r"^[\[(](\\begin\{.*\\end\{[a-zA-Z]*\})[\])]$", re.DOTALL)


def _structure(s: str):
    """Classify a normalized answer: ("matrix", rows) | ("seq", brackets, items) | ("set", items) | ("scalar", s)."""
    w = _MATRIX_WRAPPED.match(s)
    if w:
        s = w.group(1)
    m = _MATRIX.match(s)
    if m and "\\end{" not in m.group(2):
        rows = [r for r in m.group(2).split("\\\\") if r.strip()]
        return ("matrix", [[c.strip() for c in r.split("&")] for r in rows])
    if s == "\\emptyset":
        return ("set", [])
    if (
        s.startswith("\\{")
        and s.endswith("\\}")
        and _wrapped("{" + s[2:-2].replace("\\{", "{").replace("\\}", "}") + "}")
    ):
        return ("set", [x for x in split_top_level(s[2:-2]) if x])
    b = _BARE_SET.match(s)
    if b and _wrapped(s):
        return ("set", [x for x in split_top_level(b.group(1)) if x])
    if "\\cup" in s:
        return ("set", split_top_level(s, "\\cup"))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wrapped(s):
        items = split_top_level(s[1:-1])
        if len(items) > 1:
            return ("seq", s[0] + s[-1], items)
    items = split_top_level(s)
    if len(items) > 1:
        return ("set", items)
    if "\\pm" in s and s.count("\\pm") == 1 and VARIABLE.match(s):  # "x=\pm3" against a list "-3,3"
        s = s[VARIABLE.match(s).end() :]
    if "\\pm" in s and s.count("\\pm") == 1 and "=" not in s:
        a, b = s.split("\\pm")
        return ("set", [f"{a}+{b}" if a else b, f"{a}-{b}" if a else f"-{b}"])
    return ("scalar", s)


_REL = re.compile(r"(<=|>=|!=|<|>|(?<![<>!\\])=(?!=))")
_REL_CANON = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "=": "=", "!=": "!="}


def _relation(s: str):
    """``(lhs, op, rhs)`` oriented so op is ``=``, ``!=``, ``<`` or ``<=``; None if not one relation."""
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


# What names an answer on the left of "=": x, a_3, f(x), AB, |AB|, \frac{NO}{BO}, (p,q,r), A:B, \angle ABC.
_NAME = re.compile(
    r"^(?:[a-zA-Z](?:_\{?\w+\}?)?(?:\([a-z0-9]\))?|[A-Z]{2,4}|\|[A-Z]{1,3}\||\\frac\{[A-Z]{1,3}\}\{[A-Z]{1,3}\}"
    r"|\([a-zA-Z](?:,[a-zA-Z])+\)|[A-Za-z_{}0-9]*[A-Za-z][A-Za-z_{}0-9]*:[A-Za-z_{}0-9]*[A-Za-z][A-Za-z_{}0-9]*"
    r"|\\(?:alpha|beta|gamma|delta|theta|phi|lambda|mu|omega)(?:_\{?\w+\}?)?|m?\\angle[A-Z]{1,3})$"
)
_EQ_SPLIT = re.compile(r"(?<![<>!\\])=(?!=)")


# Working left in an answer ("18-3=15"): short plain arithmetic only.
_ARITHMETIC = re.compile(r"(?:[\d+\-/().{}]|\*(?!\*)|\\(?:frac|sqrt|cdot|times|div)){1,60}")


def _has_letters(s: str) -> bool:
    return bool(re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", s)))


def _unlabel(s: str) -> str | None:
    """The value an answer states: ``x=5`` -> ``5``, ``x=5+5+1=11`` -> ``11``, ``18-3=15`` -> ``15``,
    ``x\\approx 3`` -> ``3``; ``s`` itself if it has no ``=``; None for a genuine equation (``y=2x+3``
    keeps its meaning as a relation when the other side is one: see ``_answer_equal``).
    """
    if "\\approx" in s:
        first, last = s.split("\\approx", 1)[0], s.rsplit("\\approx", 1)[-1]
        v = _unlabel(first) if first else None
        if v and not _NAME.match(v):
            return v
        return _unlabel(last) if last else None
    parts = _EQ_SPLIT.split(s)
    if len(parts) == 1:
        return s
    if any(not x for x in parts):
        return None
    if len(parts) >= 3:  # a chain of working: the last side is the result (Math-Verify does the same)
        return parts[-1] if not any("**" in x or "__" in x for x in parts) else None
    lhs, rhs = parts
    if _NAME.match(lhs):
        return rhs
    if _NAME.match(rhs):
        return lhs
    if _ARITHMETIC.fullmatch(lhs) and not _TOWER.search(lhs) and not _has_letters(rhs):
        return rhs  # "18-3=15" states 15
    return None


def _scalar_equal(p: str, g: str, percent: bool, deadline: list[float]) -> bool:
    if p == g:
        return True
    bp, bg = _BASE.match(p), _BASE.match(g)
    if bp or bg:  # "204_5": digits and base must both agree ("204" alone is base ten)
        return (
            bool(bp and bg)
            and bp.group(1).upper() == bg.group(1).upper()
            and int(bp.group(2)) == int(bg.group(2))
        )
    rp, rg = parse_rational(p), parse_rational(g)
    if rp is not None and rg is not None:
        if rp == rg or (percent and (rp == rg / 100 or rp / 100 == rg)):
            return True
        # A float printed with >= 12 significant digits stands for the exact value it rounds.
        return any(_long_decimal(x) for x in (p, g)) and abs(rp - rg) <= Fraction(1, 10**12) * max(
            abs(rg), abs(rp)
        )
    if _choice(p) and _choice(g):
        return _choice(p) == _choice(g)
    if _is_text(p) and _is_text(g):
        return p.lower() == g.lower()
    if len(p) > _MAX_LEN or len(g) > _MAX_LEN or _TOWER.search(p) or _TOWER.search(g):
        return False
    if ":" in p or ":" in g:  # "5:00", ratios: compared as strings only
        return False
    if not re.search(r"[\d\w\\]", p):
        return False
    return _call("symbolic", p, g, deadline)


_BASE = re.compile(r"^([0-9A-Fa-f]+)_\{?(\d{1,2})\}?$")


def _long_decimal(s: str) -> bool:
    return bool(re.fullmatch(r"-?\d*\.\d+", s)) and len(re.sub(r"^-?0*\.?0*", "", s).replace(".", "")) >= 12


def _choice(s: str) -> str | None:
    m = re.fullmatch(r"\(?([A-Ea-e])\)", s) or re.fullmatch(r"([A-E])", s)
    return m.group(1).upper() if m else None


def _is_text(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z'\-]{2,}", s))


def _call(op: str, a, b, deadline: list[float]) -> bool:
    worker = get_worker()
    if not worker.started:  # the one-time start (seconds) is not charged to the pair
        t = time.monotonic()
        worker.start()
        deadline[0] += time.monotonic() - t
    left = deadline[0] - time.monotonic()
    if left <= 0:
        return False
    return worker.call(op, a, b, left)


def _items_equal(
    ps: list[str], gs: list[str], ordered: bool, percent: bool, deadline: list[float], depth: int
) -> bool:
    if len(ps) != len(gs):
        return False
    ps, gs = [strip_string(x) for x in ps], [strip_string(x) for x in gs]  # "x=2, x=3"
    if ordered:
        return all(_answer_equal(a, b, percent, deadline, depth + 1) for a, b in zip(ps, gs))
    remaining = list(gs)
    for a in ps:
        for j, b in enumerate(remaining):
            if _answer_equal(a, b, percent, deadline, depth + 1):
                del remaining[j]
                break
        else:
            return False
    return True


def _setlike(s: str) -> bool:
    """An interval, a union, the reals, or an inequality (chain) in one variable."""
    if "\\cup" in s or s == "(-\\infty,\\infty)":
        return True
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wrapped(s) and len(split_top_level(s[1:-1])) == 2:
        return True
    ops = re.findall(r"<=|>=|\\leq|\\geq|<|>", s)
    letters = set(re.findall(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+|[a-zA-Z]\([a-z]\)", "v", s)))
    return bool(ops) and len(letters) == 1 and "," not in s


def _unparen(s: str) -> str:
    """``(\\frac{1}{3})`` -> ``\\frac{1}{3}``: brackets around one item carry nothing."""
    while len(s) > 2 and s[0] == "(" and s[-1] == ")" and _wrapped(s) and len(split_top_level(s[1:-1])) == 1:
        s = s[1:-1]
    return s


_VAR = r"[a-zA-Z](?:\([a-z]\))?"
_BOUND = r"[^<>=!,]+"
_CHAIN = re.compile(rf"^(?P<a>{_BOUND})(?P<o1><=?)(?P<v>{_VAR})(?P<o2><=?)(?P<b>{_BOUND})$")
_CHAIN_DOWN = re.compile(rf"^(?P<b>{_BOUND})(?P<o2>>=?)(?P<v>{_VAR})(?P<o1>>=?)(?P<a>{_BOUND})$")
_UPPER = re.compile(
    rf"^(?:(?P<v>{_VAR})(?P<o><=?)(?P<b>{_BOUND})|(?P<b2>{_BOUND})(?P<o2>>=?)(?P<v2>{_VAR}))$"
)
_LOWER = re.compile(
    rf"^(?:(?P<v>{_VAR})(?P<o>>=?)(?P<a>{_BOUND})|(?P<a2>{_BOUND})(?P<o2><=?)(?P<v2>{_VAR}))$"
)


def _inequality_as_interval(s: str) -> str | None:
    """``1<x<=2`` -> ``(1,2]``, ``x>=3`` -> ``[3,\\infty)``: one variable, as an interval string."""
    m = _CHAIN.match(s) or _CHAIN_DOWN.match(s)
    if m:
        left = "[" if m.group("o1").endswith("=") else "("
        right = "]" if m.group("o2").endswith("=") else ")"
        return f"{left}{m.group('a')},{m.group('b')}{right}"
    m = _UPPER.match(s)
    if m:
        op, b = (m.group("o"), m.group("b")) if m.group("v") else (m.group("o2"), m.group("b2"))
        return f"(-\\infty,{b}{']' if op.endswith('=') else ')'}"
    m = _LOWER.match(s)
    if m:
        op, a = (m.group("o"), m.group("a")) if m.group("v") else (m.group("o2"), m.group("a2"))
        return f"{'[' if op.endswith('=') else '('}{a},\\infty)"
    return None


def _intervalish(s: str) -> bool:
    return "\\cup" in s or (
        len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wrapped(s) and len(split_top_level(s[1:-1])) == 2
    )


def _answer_equal(p: str, g: str, percent: bool, deadline: list[float], depth: int = 0) -> bool:
    p, g = p.strip(), g.strip()
    if _choice(p) and _choice(g):
        return _choice(p) == _choice(g)
    p, g = _unparen(p), _unparen(g)
    if p == g:
        return True
    if _intervalish(g) and not _intervalish(p) and _inequality_as_interval(p):
        p = _inequality_as_interval(p)
    elif _intervalish(p) and not _intervalish(g) and _inequality_as_interval(g):
        g = _inequality_as_interval(g)
    if depth > 4 or not p or not g:
        return False
    listed = len(split_top_level(p)) > 1 or len(split_top_level(g)) > 1
    if not listed:
        vp, vg = _unlabel(p), _unlabel(g)
        if vp is None or vg is None:  # a genuine equation on one side at least
            rp, rg = _relation(p), _relation(g)
            if rp and rg:
                return rp == rg or _call("relation", rp, rg, deadline)
            return False
        if vp != p or vg != g:
            return not other_variable(p, g) and _answer_equal(vp, vg, percent, deadline, depth + 1)
    p, g = as_point(p, split_top_level(p), g), as_point(g, split_top_level(g), p)
    sp, sg = _structure(p), _structure(g)
    if sp[0] == "set" and sg[0] == "scalar" and sp[1] and not _setlike(g):
        # One answer boxed twice in different forms ("15\frac{39}{40}, \frac{639}{40}").
        return all(_answer_equal(a, g, percent, deadline, depth + 1) for a in sp[1])
    if sp[0] != sg[0]:
        if _setlike(p) and _setlike(g):
            return _call("sets", p, g, deadline)
        if "\\begin{" in p and "\\begin{" in g:
            return _call("matrix", p, g, deadline)
        return False
    kind = sp[0]
    if kind == "matrix":
        if len(sp[1]) == len(sg[1]) and all(len(a) == len(b) for a, b in zip(sp[1], sg[1])):
            return all(
                _scalar_equal(a, b, percent, deadline) for ra, rb in zip(sp[1], sg[1]) for a, b in zip(ra, rb)
            )
        return False
    if kind == "seq":
        return sp[1] == sg[1] and _items_equal(sp[2], sg[2], True, percent, deadline, depth)
    if kind == "set":
        if _items_equal(sp[1], sg[1], False, percent, deadline, depth):
            return True
        return ("\\cup" in p or "\\cup" in g) and _call("sets", p, g, deadline)
    rel_p, rel_g = _relation(p), _relation(g)
    if rel_p or rel_g:
        if rel_p and rel_g:
            return rel_p == rel_g or _call("relation", rel_p, rel_g, deadline)
        if _setlike(p) and _setlike(g):
            return _call("sets", p, g, deadline)
        return False
    if _setlike(p) and _setlike(g):  # inequality chains
        return _call("sets", p, g, deadline)
    if "\\begin{" in p and "\\begin{" in g:  # matrix arithmetic, scalar times matrix
        return _call("matrix", p, g, deadline)
    return _scalar_equal(p, g, percent, deadline)


def is_hedged(pred: str) -> bool:
    """Whether a prediction offers alternatives (``18 or 19``) instead of one answer."""
    return bool(_HEDGE.search(pred))


def is_equivalent(
    pred: str | None, gold: str | None, task: str = "math", timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Whether ``pred`` and ``gold`` denote the same final answer.

    ``task`` is ``"gsm8k"`` (numbers, compared exactly) or ``"math"`` / ``"math500"``.
    Never raises; ``timeout`` bounds the sympy work of the whole pair (seconds).
    """
    try:
        if pred is None or gold is None or not str(pred).strip() or not str(gold).strip():
            return False
        pred, gold = str(pred).strip(), str(gold).strip()
        if "__" in pred or "__" in gold:
            return False  # Python dunders: code, never an answer
        if len(pred) > _MAX_INPUT or len(gold) > _MAX_INPUT:
            return False  # no final answer is this long (MATH's longest gold: 81 characters)
        if task == "gsm8k":
            if is_hedged(pred) and not is_hedged(gold):
                return False
            return _gsm8k_equal(pred, gold)
        deadline = [time.monotonic() + timeout]  # one bound for all the pair's worker calls
        p, g = strip_string(pred), strip_string(gold)
        if p == g:
            return True
        if is_hedged(pred) and not is_hedged(gold) and len(split_top_level(g)) == 1 and "\\pm" not in g:
            return False  # "18 or 19" never equals a single gold value
        percent = bool(_PERCENT.search(pred)) != bool(_PERCENT.search(gold))
        return _answer_equal(p, g, percent, deadline)
    except Exception:
        return False


_PERCENT = re.compile(r"%|percent|\bpct\b")


def _gsm8k_equal(pred: str, gold: str) -> bool:
    p, g = normalize_gsm8k(pred), normalize_gsm8k(gold)
    if p is None and "=" in pred:  # "10 - 2 = 8": the result side, only when the working is right
        p = normalize_gsm8k(checked_result(pred) or "")
    if p is None or g is None:  # "5:00": not a number, equal only to the same text
        return p is None and g is None and re.sub(r"\s+", "", pred) == re.sub(r"\s+", "", gold)
    if p == g:
        return True
    try:
        return Fraction(p) == Fraction(g)
    except (ValueError, ZeroDivisionError):
        return False
