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
        if "e" in s and abs(int(s.split("e")[1])) > 100:
            return None  # Fraction("1e999999999") would build a billion-digit integer
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


_ONES = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_FRACTION_WORDS = {"half": Fraction(1, 2), "quarter": Fraction(1, 4)}


def words_to_number(s: str) -> Fraction | None:
    """``twelve`` -> 12, ``three hundred and five`` -> 305, ``3 million`` / ``1.5 million`` -> exact value.

    None unless the whole string is a number in words (optionally led by one numeral).
    """
    words = re.sub(r"[-\s]+", " ", s.strip().lower().replace(",", " ")).split()
    if not words or len(words) > 12:
        return None
    total, current, seen = Fraction(0), Fraction(0), False
    if re.fullmatch(r"\d+(?:\.\d+)?", words[0]):
        if len(words) == 1 or words[1] not in _SCALES:
            return None
        current, seen, words = Fraction(words[0]), True, words[1:]
    for w in words:
        if w == "and" and seen:
            continue
        if w in _ONES:
            current += _ONES[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w in _SCALES and seen:
            scale = _SCALES[w]
            if scale == 100:
                current *= 100
            else:
                total += current * scale
                current = Fraction(0)
        else:
            return None
        seen = True
    return total + current if seen else None


# GSM8K: a number, optionally signed, thousands-separated, a fraction or mixed number
# (``3 1/2``), then at most a few unit words ("5 apples", "20 dollars per hour" is not one).
_GSM_NUMBER = re.compile(
    r"^(?P<sign>[-+]?)(?P<num>\d+(?:\.\d+)?|\.\d+)(?:\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)|\s*/\s*(?P<den>\d+))?"
    r"\s*(?P<unit>[a-zA-Z][a-zA-Z.\s]{0,30})?$")
_MINUS = ("\u2212", "\u2013", "\u2012", "\ufe63", "\uff0d")


def unicode_minus(s: str) -> str:
    """``−3`` (U+2212 and other dashes) -> ``-3``: else the sign is lost and ``−3`` grades equal to ``3``."""
    for m in _MINUS:
        s = s.replace(m, "-")
    return s


def normalize_gsm8k(s: str) -> str | None:
    """A GSM8K answer as a bare number string: ``$1,000.00`` -> ``1000``; None if it is not one number.

    lm-eval's GSM8K ``strict-match`` reads ``#### <number>``; here the extracted answer must be
    one number, possibly with currency, percent, thousands separators (``1,000``, ``1{,}000``,
    ``1 000``), a fraction or a mixed number (``3 1/2`` = 7/2), or number words, plus unit words.
    Anything else (a list, an expression, code) is None and grades False.
    """
    s = unicode_minus(str(s)).strip()
    for _ in range(3):
        m = re.fullmatch(r"\\boxed\{(.*)\}|\$(.*)\$|\\\((.*)\\\)", s.strip(), re.DOTALL)
        if not m:
            break
        s = next(g for g in m.groups() if g is not None)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("\\!", "")
    s = _TEXT_RE.sub(r"\1", s)
    s = s.replace("\\,", ",").replace("\\ ", " ").replace("~", " ")
    s = re.sub(r"(\d)\{,\}(?=\d{3}(?!\d))", r"\1", s)
    s = re.sub(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d,])", lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    s = re.sub(r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d/])", lambda m: m.group(1) + m.group(2).replace(" ", ""), s)
    s = s.strip().rstrip(".").strip()
    v = words_to_number(s)
    if v is None:
        m = _GSM_NUMBER.match(s)
        if not m:
            return None
        unit = (m.group("unit") or "").strip()
        if unit:
            w = words_to_number(f"1 {unit.split()[0]}")
            if w is not None:  # "3 million"
                v = Fraction(m.group("num")) * w
                if len(unit.split()) > 1:
                    return None
        if v is None:
            v = Fraction(m.group("num"))
            if m.group("den") is not None:
                if "." in m.group("num") or int(m.group("den")) == 0:
                    return None
                v = v / int(m.group("den"))
            elif m.group("mden") is not None:
                if "." in m.group("num") or int(m.group("mden")) == 0:
                    return None
                v = v + Fraction(int(m.group("mnum")), int(m.group("mden")))
        if m.group("sign") == "-":
            v = -v
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
