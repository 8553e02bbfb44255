"""String normalization of final answers.

Based on the MATH reference grader (Hendrycks et al. 2021, ``math_equivalence.strip_string``)
with the additions used by Minerva (Lewkowycz et al. 2022, ``normalize_final_answer``),
ToRA and Qwen2.5-Math's ``strip_string``: LaTeX spacing macros, ``\\text{}`` and unit
words, degree signs, thousands separators (``1,000`` and ``1{,}000``), a leading
``x =``, a trailing period, and ``\\dfrac``/``\\tfrac``.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Minerva's SUBSTITUTIONS / REMOVED_EXPRESSIONS, trimmed to what cannot change meaning.
_UNIT_WORDS = (
    "square units", "sq units", "square feet", "square inches", "square meters", "square cm",
    "units", "unit", "dollars", "dollar", "cents", "cent", "degrees", "degree", "inches", "inch",
    "feet", "foot", "meters", "meter", "centimeters", "cm", "mm", "km", "miles", "mile", "mph",
    "hours", "hour", "minutes", "minute", "seconds", "second", "days", "day", "weeks", "week",
    "years", "year", "pounds", "pound", "ounces", "ounce", "cups", "cup", "gallons", "gallon",
    "points", "point", "people", "students", "marbles", "apples", "cookies", "eggs", "ways",
    "sq", "ft", "in", "m", "s",
)
_UNIT_RE = re.compile(
    r"\s*\\(?:text|textbf|mbox|mathrm)\{\s*(?:" + "|".join(re.escape(u) for u in _UNIT_WORDS) + r")\s*\}"
    r"(?:\^\{?[23]\}?)?"
)
_BARE_UNIT_RE = re.compile(
    r"(?<=[\d}])\s+(?:" + "|".join(re.escape(u) for u in _UNIT_WORDS if len(u) > 2) + r")\b(?:\^\{?[23]\}?)?\s*$"
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textrm|mathbf)\{([^{}]*)\}")
_SPACING = ("\\!", "\\,", "\\;", "\\:", "\\qquad", "\\quad", "~")
_THOUSANDS_BRACE = re.compile(r"(\d)\{,\}(\d{3})")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LEADING_VAR = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!=)")
_TRAILING_VAR = re.compile(r"(?<![<>!])\s*=\s*[a-zA-Z](?:_\{?\w+\}?)?\s*$")
_SQRT_BARE = re.compile(r"\\sqrt(\w)")
_FRAC_BARE = re.compile(r"\\frac(?!\{)(\w)(\w)?")
_FRAC_HALF_BRACE = re.compile(r"\\frac\{([^{}]*)\}(\w)")


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac{1}2`` -> ``\\frac{1}{2}`` (Hendrycks ``fix_fracs``)."""
    s = _FRAC_BARE.sub(lambda m: "\\frac{%s}{%s}" % (m.group(1), m.group(2) or ""), s)
    return _FRAC_HALF_BRACE.sub(r"\\frac{\1}{\2}", s)


def _fix_a_slash_b(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when the whole answer is one integer fraction (Hendrycks)."""
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return "\\frac{%s}{%s}" % (m.group(1), m.group(2)) if m else s


def strip_string(s: str) -> str:
    """Canonical string form of a MATH answer; equal strings mean equal answers."""
    s = str(s).strip()
    s = s.replace("\n", "").replace("\\!", "")
    # Display wrappers.
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\bigl", "").replace("\\bigr", "").replace("\\Bigl", "").replace("\\Bigr", "")
    for sp in _SPACING:
        s = s.replace(sp, "")
    s = re.sub(r"(?<!\\)\\ ", " ", s)  # "\ " is a space, "\\ " a row break
    # "\sin x" -> "\sin{x}": keep the argument apart once spaces are removed.
    s = re.sub(r"(\\(?:sin|cos|tan|cot|sec|csc|ln|log|sqrt|cdot|times))\s+([a-zA-Z0-9])", r"\1{\2}", s)
    # Degrees and units.
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "").replace("°", "")
    s = _UNIT_RE.sub("", s)
    s = _BARE_UNIT_RE.sub("", s).strip()
    s = _TEXT_RE.sub(r"\1", s)
    # Percent is dropped (Hendrycks); equivalence also tries x/100 when only one side had it.
    s = s.replace("\\%", "").replace("%", "")
    s = _THOUSANDS_BRACE.sub(r"\1\2", s)
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    # A leading "x =" / "k =" names the answer; drop it (Hendrycks keeps only rhs of short lhs).
    if s.count("=") == 1 and _LEADING_VAR.match(s):
        s = _LEADING_VAR.sub("", s, count=1)
    elif s.count("=") == 1 and _TRAILING_VAR.search(s):  # "2x+3 = y" names it on the right
        s = _TRAILING_VAR.sub("", s, count=1)
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)  # "x \in [2, 5)"
    s = _SQRT_BARE.sub(r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    # "0.5" vs ".5": give decimals a leading zero.
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    if s.startswith("+"):
        s = s[1:]
    s = _fix_a_slash_b(s)
    # "\frac{1}{2}" and "1/2" compare equal as strings too.
    return s


_MIXED = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_DEC = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:e-?\d+)?$")


def parse_rational(s: str) -> Fraction | None:
    """Exact value of a normalized answer that is an integer, decimal, fraction or mixed number.

    Mixed numbers follow MATH's convention: ``2\\frac{1}{2}`` means 2 1/2 = 5/2.
    Decimals are exact (``0.333`` is 333/1000, not 1/3).
    """
    if not s or len(s) > 200:
        return None
    if _DEC.match(s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    m = _FRAC.match(s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if den == 0:
            return None
        v = Fraction(num, den)
        return -v if m.group(1) else v
    m = _MIXED.match(s)
    if m:
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den == 0:
            return None
        v = whole + Fraction(num, den)
        return -v if m.group(1) else v
    return None


def normalize_gsm8k(s: str) -> str | None:
    """A GSM8K answer as a bare number string: ``$1,000.00`` -> ``1000``; None for a list."""
    s = str(s).strip()
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _TEXT_RE.sub(r"\1", s)
    s = re.sub(r"(\d)\{?,\}?(?=\d{3}(?!\d))", r"\1", s)
    if re.search(r"\d\s*,\s*-?\d", s):  # "18, 19": a list, not one answer
        return None
    m = re.search(r"-?\d+(?:\.\d+)?(?:/\d+)?", s)
    if not m:
        return s.strip().rstrip(".")
    num = m.group(0)
    v = parse_rational(num) if "/" not in num else _slash(num)
    if v is None:
        return num
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _slash(num: str) -> Fraction | None:
    a, b = num.split("/")
    return Fraction(int(a), int(b)) if int(b) else None
