"""Answers written in prose rather than boxed: ``x = 3 or x = -3``, ``The largest $n$ is 34.``,
``7 (not 8)``. Helpers of ``eval.extract`` (rules 5 and 7 of its documented order).

Plain-text alternatives are this package's rule for issue 10 (neither Math-Verify nor
Qwen2.5-Math's parser reads them); ``The <noun> is X`` after ``Final Answer:`` is a case of
Math-Verify's ``test_math_extraction_additional_cases``; a trailing aside in brackets is an
own rule from the outside blind table (``tests/data/grading_blind.jsonl``).
"""

from __future__ import annotations

import re

_PLAIN_ALTERNATIVES = re.compile(
    r"\b([a-zA-Z])\s*=\s*(-?\s*[\d\\][^\s,;]*)((?:\s*(?:,(?:\s*(?:or|and))?|or|and)\s*\1\s*=\s*-?\s*[\d\\][^\s,;]*)+)"
)
# "x = 3 or -3" closing a sentence.
_PLAIN_PM = re.compile(r"\b[a-zA-Z]\s*=\s*(-?\d[\d.]*)\s*(?:,\s*)?(?:or|and)\s*(-?\d[\d.]*)\s*(?:\.\s*)?$")
_PLAIN_PLUS_MINUS = re.compile(r"\b[a-zA-Z]\s*=\s*(?:±|\\pm)\s*(\d[\d.]*)\s*(?:\.\s*)?$")  # "x = ±3"
_PLAIN_VALUE = re.compile(r"=\s*(-?\s*[\d\\][^\s,;]*)")
# "$x = 3$ or $x = -2$": inline-math dollars around each root ("\$" is a dollar sign, kept).
_INLINE_DOLLAR = re.compile(r"(?<!\\)\$")
# "(not 8)", "(in dollars)": a bracketed aside of words after the answer.
_ASIDE = re.compile(r"(?<=\S)\s+\((?=[^()]*[a-zA-Z]{3})[^()]*\)[\s.]*$")
# "The largest $n$ is 34": the value after "is" in a sentence naming what it is.
_NAMED_VALUE = re.compile(r"^the\s+[^.=<>]{1,60}?\s(?:is|equals)\s+(?=[-\d$\\])(.+)$", re.IGNORECASE)


def plain_alternatives(text: str) -> str | None:
    """``x = 3 or x = -3`` at the end of the text (no number after it) -> ``3, -3``; ``x = ±3`` -> ``\\pm 3``."""
    text = _INLINE_DOLLAR.sub("", text)
    m = _PLAIN_PM.search(text.rstrip())
    if m:
        return f"{m.group(1)}, {m.group(2)}"
    m = _PLAIN_PLUS_MINUS.search(text.rstrip())
    if m:
        return f"\\pm {m.group(1)}"
    hits = list(_PLAIN_ALTERNATIVES.finditer(text))
    if not hits or re.search(r"\d", text[hits[-1].end() :]):
        return None
    values = [hits[-1].group(2)] + _PLAIN_VALUE.findall(hits[-1].group(3))
    return ", ".join(dict.fromkeys(v.replace(" ", "").rstrip(".") for v in values))


def answer_sentence(line: str) -> str:
    """The value a one-line answer states: ``The largest $n$ is 34`` -> ``34``, ``7 (not 8)`` -> ``7``."""
    m = _NAMED_VALUE.match(line.strip())
    if m:
        line = m.group(1)
    return _ASIDE.sub("", line)
