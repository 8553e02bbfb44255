"""lm-evaluation-harness's GSM8K filters and ``exact_match``, reproduced exactly.

A report key ``exact_match,strict-match`` or ``exact_match,flexible-extract`` means what it
means in lm-eval, so numbers can be compared with lm-eval's. Source (EleutherAI/
lm-evaluation-harness, commit 4e7e0d47, ``lm_eval/tasks/gsm8k/gsm8k.yaml``, version 3.0)::

    generation_kwargs: until: ["Question:", "</s>", "<|im_end|>"]
    metric_list: exact_match, ignore_case: true, ignore_punctuation: false,
                 regexes_to_ignore: [",", "\\$", "(?s).*#### ", "\\.$"]
    filter_list:
      strict-match:     regex "#### (\\-?[0-9\\.\\,]+)"; take_first
      flexible-extract: regex "(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select -1; take_first

The regex filter is ``lm_eval/filters/extraction.py::RegexFilter`` (``findall``, pick
``group_select``, first non-empty group of a tuple, ``strip()``, fallback ``"[invalid]"``);
``exact_match`` is ``lm_eval/api/metrics.py::exact_match_hf_evaluate``; the stop strings are
cut as ``lm_eval/models/utils.py::postprocess_generated_text`` does after generation.

This package's own grading (full extraction order + symbolic equivalence) is reported
under its own filter name, ``scdpo-grader``.
"""

from __future__ import annotations

import re

GSM8K_UNTIL = ("Question:", "</s>", "<|im_end|>")
GSM8K_REGEXES_TO_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
FALLBACK = "[invalid]"

# name -> (regex_pattern, group_select), verbatim from gsm8k.yaml v3.0.
GSM8K_FILTERS = {
    "strict-match": (r"#### (\-?[0-9\.\,]+)", 0),
    "flexible-extract": (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
}
_COMPILED = {name: (re.compile(p), g) for name, (p, g) in GSM8K_FILTERS.items()}


def cut_at_stop(text: str, until: tuple[str, ...] = GSM8K_UNTIL, think_end_token: str | None = None) -> str:
    """lm-eval's ``postprocess_generated_text``: text after ``think_end_token`` (off by
    default, as in lm-eval), then cut at each stop string in turn."""
    if think_end_token:
        text = text.split(think_end_token)[-1].lstrip()
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def regex_filter(text: str, pattern: re.Pattern, group_select: int = 0, fallback: str = FALLBACK) -> str:
    """lm-eval's ``RegexFilter`` on one response."""
    if not isinstance(text, str):
        text = ""
    match = pattern.findall(text)
    if not match:
        return fallback
    match = match[group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        match = groups[0] if groups else fallback
    return match.strip()


def apply_gsm8k_filter(name: str, response: str) -> str:
    """The filtered response of lm-eval's GSM8K filter ``name`` (take_first over one response)."""
    pattern, group = _COMPILED[name]
    return regex_filter(cut_at_stop(response), pattern, group)


def _ignore(text: str, regexes: tuple[str, ...]) -> str:
    for r in regexes:
        text = re.sub(r, "", text)
    return text


def exact_match(
    prediction: str,
    reference: str,
    regexes_to_ignore: tuple[str, ...] = GSM8K_REGEXES_TO_IGNORE,
    ignore_case: bool = True,
) -> bool:
    """lm-eval's ``exact_match_hf_evaluate`` for one pair with GSM8K's settings
    (``ignore_punctuation`` and ``ignore_numbers`` off): each regex removed from both
    strings in order, then lower-cased, then compared as strings."""
    p, r = _ignore(prediction, regexes_to_ignore), _ignore(reference, regexes_to_ignore)
    if ignore_case:
        p, r = p.lower(), r.lower()
    return p == r


def gsm8k_lm_eval(response: str, reference: str) -> dict[str, dict]:
    """Every lm-eval GSM8K filter on one response: ``{name: {"filtered": str, "exact_match": bool}}``.

    ``reference`` may be the bare gold number or the dataset's full ``answer`` field
    (lm-eval's target); the ``(?s).*#### `` regex reduces the latter to the former.
    """
    out = {}
    for name in GSM8K_FILTERS:
        filtered = apply_gsm8k_filter(name, response)
        out[name] = {"filtered": filtered, "exact_match": exact_match(filtered, reference)}
    return out
