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
    "square units",
    "sq units",
    "square feet",
    "square inches",
    "square meters",
    "square cm",
    "units",
    "unit",
    "dollars",
    "dollar",
    "cents",
    "cent",
    "degrees",
    "degree",
    "inches",
    "inch",
    "feet",
    "foot",
    "meters",
    "meter",
    "centimeters",
    "cm",
    "mm",
    "km",
    "miles",
    "mile",
    "mph",
    "hours",
    "hour",
    "minutes",
    "minute",
    "seconds",
    "second",
    "days",
    "day",
    "weeks",
    "week",
    "years",
    "year",
    "pounds",
    "pound",
    "ounces",
    "ounce",
    "cups",
    "cup",
    "gallons",
    "gallon",
    "points",
    "point",
    "people",
    "students",
    "marbles",
    "apples",
    "cookies",
    "eggs",
    "ways",
    "square centimeters",
    "square centimetres",
    "sq cm",
    "digits",
    "digit",
    "edges",
    "edge",
    "miles per hour",
    "sq",
    "ft",
    "in",
    "m",
    "s",
)
_UNIT_RE = re.compile(
    r"\s*\\(?:text|textbf|mbox|mathrm)\{\s*(?:" + "|".join(re.escape(u) for u in _UNIT_WORDS) + r")\s*\}"
    r"(?:\^\{?[23]\}?)?"
)
_BARE_UNIT_RE = re.compile(
    r"(?<=[\d}])\s+(?:"
    + "|".join(re.escape(u) for u in _UNIT_WORDS if len(u) > 2)
    + r")\b(?:\^\{?[23]\}?)?\s*$"
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textrm|mathbf)\{([^{}]*)\}")
_SPACING = ("\\!", "\\,", "\\;", "\\:", "\\qquad", "\\quad", "~")
_THOUSANDS_BRACE = re.compile(r"(\d)\{,\}(?=\d{3}(?!\d))")  # lookahead: "1{,}250{,}000" has two
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# Any trailing \text{<words>} after a number is a unit ("5 \text{ digits}"), unless the words carry value.
_ANY_TEXT_UNIT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{\s*(?!(?:or|and|million|billion|thousand|hundred|percent|pct)\b)"
    r"[a-zA-Z][a-zA-Z .]*\}(?:\^\{?[23]\}?)?\s*$"
)
_SQRT_BARE = re.compile(r"\\sqrt(\w)")
_FRAC_BARE = re.compile(r"\\(frac|binom)(?!\{)(\w)(\w)?")
_FRAC_BARE_NUM = re.compile(r"\\(frac|binom)(\w)\{")
_FRAC_HALF_BRACE = re.compile(r"\\frac\{([^{}]*)\}(\w)")


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac{1}2`` -> ``\\frac{1}{2}`` (Hendrycks ``fix_fracs``)."""
    s = _FRAC_BARE_NUM.sub(r"\\\1{\2}{", s)  # "\frac3{3}"
    s = _FRAC_BARE.sub(lambda m: "\\%s{%s}{%s}" % (m.group(1), m.group(2), m.group(3) or ""), s)
    return _FRAC_HALF_BRACE.sub(r"\\frac{\1}{\2}", s)


def _fix_a_slash_b(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when the whole answer is one integer fraction (Hendrycks)."""
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return "\\frac{%s}{%s}" % (m.group(1), m.group(2)) if m else s


def _boxed_spans(s: str, macro: str = "\\boxed") -> list[tuple[int, int, int]]:
    """(start, content start, end) of each top-level ``\\boxed{...}`` in ``s``."""
    spans, i = [], 0
    while True:
        i = s.find(macro, i)
        if i < 0:
            return spans
        j = i + len(macro)
        while j < len(s) and s[j] == " ":
            j += 1
        if j >= len(s) or s[j] != "{":
            i = j
            continue
        depth = 0
        for k in range(j, len(s)):
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            if depth == 0:
                spans.append((i, j + 1, k))
                i = k + 1
                break
        else:
            return spans


def unwrap_answer(s: str) -> str:
    """Remove what a model leaves around an answer: ``$``/``\\(\\)``/``\\[\\]`` and ``\\boxed{}``.

    Several ``\\boxed{}`` are one answer list (``\\boxed{12}, \\boxed{13}``; Math-Verify joins them too).
    """
    s = unicode_minus(str(s)).strip()
    for _ in range(4):
        prev = s
        s = re.sub(r"^\$+|\$+\.?$", "", s).strip()
        s = re.sub(r"^\\\(|\\\)\.?$|^\\\[|\\\]\.?$", "", s).strip()
        s = s.replace("\\fbox", "\\boxed")
        spans = _boxed_spans(s)
        if len(spans) > 1:
            s = ", ".join(s[c:e] for _, c, e in spans)
        elif spans:
            i, c, e = spans[0]
            s = s[:i] + s[c:e] + s[e + 1 :]
        if s == prev:
            break
    return s.strip()


_LIST_WORDS = re.compile(
    r"\\text\{\s*,?\s*(?:or|and)\s*\}|\s+(?:or|and)\s+|(?<=[\d})\]])\s*,?\s*(?:or|and)\s*(?=[-\d\\(\[])|\\(?:quad|qquad)"
)
_ORDINAL = re.compile(
    r"(?<=\d)(?:\^\{?\\(?:text|mathrm)\{(?:st|nd|rd|th)\}\}?|\\(?:text|mathrm)\{(?:st|nd|rd|th)\}|(?:st|nd|rd|th)\b)"
)
_PERCENT_WORDS = re.compile(r"(?<=[\d}])\s*(?:\\text\{\s*)?(?:percentage|percent|pct)\s*\}?\s*$")
_REALS = (
    "\\mathbb{R}",
    "\\mathbb R",
    "\\R",
    "\\text{all real numbers}",
    "\\text{all reals}",
    "\\text{allrealnumbers}",
    "all real numbers",
    "\\mathbb{R}^1",
    "(-\\infty,+\\infty)",
)
_EMPTY = ("\\varnothing", "\\emptyset", "\\{\\}", "{}", "\\text{none}", "\\O")
_REPEAT = re.compile(r"^(-?)(\d*)\.(\d*)\\overline\{(\d+)\}$")
_TIMES_TEN = re.compile(r"^(-?\d+(?:\.\d+)?)(?:\\times|\\cdot|\*)10\^\{?(-?\d+)\}?$")


def strip_string(s: str) -> str:
    """Canonical string form of a MATH answer; equal strings mean equal answers."""
    s = unwrap_answer(s)
    s = s.replace("\n", " ")
    # Thousands separators written with spacing macros: "32,\! 349", "1\,250", "1{,}000".
    s = re.sub(r"(\d),\\!\s*(?=\d{3}(?!\d))", r"\1", s)
    s = re.sub(r"(\d)\\,(?=\d{3}(?!\d))", r"\1", s)
    s = s.replace("\\!", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\displaystyle", "").replace("\\textnormal", "\\text").replace("\\textrm", "\\text")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = s.replace("\\langle", "(").replace("\\rangle", ")")  # vectors <1,2,3>
    s = re.sub(r"\\lt(?![a-zA-Z])", "<", s)
    s = re.sub(r"\\gt(?![a-zA-Z])", ">", s)
    # Relations in one spelling that survives space removal ("x \\leq 2" -> "x<=2").
    s = re.sub(r"\\(?:leqslant|leq|le)(?![a-zA-Z])", "<=", s)
    s = re.sub(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])", ">=", s)
    s = re.sub(r"\\(?:neq|ne)(?![a-zA-Z])", "!=", s)
    if _PERCENT_WORDS.search(s):
        s = _PERCENT_WORDS.sub(r"\\%", s)
    s = _ORDINAL.sub("", s)
    s = _LIST_WORDS.sub(",", s)
    for sp in _SPACING:
        s = s.replace(sp, " ")
    s = re.sub(r"(?<!\\)\\ ", " ", s)  # "\ " is a space, "\\ " a row break
    s = s.replace(";", ",")  # "3; -3", "(0;-2;6)"
    s = re.sub(r",(?:\s*,)+", ",", s).strip().strip(",")
    # "\sin x" -> "\sin{x}": keep the argument apart once spaces are removed.
    s = re.sub(r"(\\(?:sin|cos|tan|cot|sec|csc|ln|log|sqrt)(?:\^\{?\d\}?)?)\s+([a-zA-Z0-9])", r"\1{\2}", s)
    s = re.sub(r"(\\(?:cdot|times))\s+([a-zA-Z])", r"\1{\2}", s)
    # Degrees and units.
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "").replace("°", "")
    s = _UNIT_RE.sub("", s)
    s = _ANY_TEXT_UNIT.sub("", s)
    s = _BARE_UNIT_RE.sub("", s).strip()
    s = _TEXT_RE.sub(r"\1", s)
    words = (
        words_to_number(s) if re.fullmatch(r"(?:\d+(?:\.\d+)?\s+)?[A-Za-z][A-Za-z\- ]*", s.strip()) else None
    )
    if words is not None:  # "twelve", "two million", "3 million"
        s = str(words.numerator) if words.denominator == 1 else f"{float(words):g}"
    s = re.sub(r"(?<=[\w)}])\*\*(?=[\w({])", "^", s)  # plain-text power "x**2"
    # Percent is dropped (Hendrycks); equivalence also tries x/100 when only one side had it.
    s = s.replace("\\%", "").replace("%", "")
    s = _THOUSANDS_BRACE.sub(r"\1", s)
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):  # "1 250"
        s = s.replace(" ", "")
    m = re.fullmatch(r"(-?\d+)\s+(\d+)\s*/\s*(\d+)", s)  # "7 3/4": a mixed number
    if m:
        s = "%s\\frac{%s}{%s}" % m.groups()
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)  # "x \in [2, 5)"
    s = _unicode_sqrt(s)
    s = _SQRT_BARE.sub(r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    # "0.5" vs ".5": give decimals a leading zero.
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    if s.startswith("+"):
        s = s[1:]
    s = _fix_a_slash_b(s)
    if s in _REALS or s.replace(" ", "") in [r.replace(" ", "") for r in _REALS]:
        s = "(-\\infty,\\infty)"
    elif s in _EMPTY:
        s = "\\emptyset"
    elif s in ("\\mathbb{R}\\setminus\\{0\\}", "\\mathbb{R}-\\{0\\}"):
        s = "(-\\infty,0)\\cup(0,\\infty)"
    return s


def _unicode_sqrt(s: str) -> str:
    """``√2`` -> ``\\sqrt{2}``, ``√{x+1}`` -> ``\\sqrt{x+1}`` (the root sign as models print it, U+221A)."""
    s = re.sub(r"√\s*(\d+(?:\.\d+)?|[a-zA-Z])", r"\\sqrt{\1}", s)
    return s.replace("√{", "\\sqrt{")


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
    m = _REPEAT.match(s)
    if m:  # 0.58\overline{3} = 0.58 + 3/900
        sign, whole, fixed, rep = m.groups()
        v = Fraction(int(whole or 0)) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
        v += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        return -v if sign else v
    m = _TIMES_TEN.match(s)
    if m and abs(int(m.group(2))) <= 100:  # 1.5\times10^{3}
        return Fraction(m.group(1)) * Fraction(10) ** int(m.group(2))
    if re.fullmatch(r"[a-z][a-z\- ]*|-?\d+(?:\.\d+)?(?:million|billion|thousand|hundred)", s):
        return words_to_number(re.sub(r"(\d)([a-z])", r"\1 \2", s))
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


_ONES = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}


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
    r"^(?P<sign>[-+]?)\s*(?P<num>\d+(?:\.\d+)?|\.\d+)(?:\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)|\s*/\s*(?P<den>\d+))?"
    r"\s*(?P<unit>[a-zA-Z][a-zA-Z.\s]{0,30})?$"
)
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
    s = re.sub(
        r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d,])", lambda m: m.group(1) + m.group(2).replace(",", ""), s
    )
    s = re.sub(
        r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d/])", lambda m: m.group(1) + m.group(2).replace(" ", ""), s
    )
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
