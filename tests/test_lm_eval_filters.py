"""lm-eval's GSM8K filters, checked on literal cases against its documented regexes.

Source: EleutherAI/lm-evaluation-harness ``lm_eval/tasks/gsm8k/gsm8k.yaml`` (version 3.0),
``lm_eval/filters/extraction.py::RegexFilter``, ``lm_eval/api/metrics.py::exact_match_hf_evaluate``.
Expected values were worked out by hand from those definitions; several show where lm-eval's
verdict differs from this package's grader (that is the point of keeping the names apart).
"""

import re

import pytest

from eval.lm_eval_filters import (
    GSM8K_FILTERS,
    GSM8K_REGEXES_TO_IGNORE,
    apply_gsm8k_filter,
    cut_at_stop,
    exact_match,
    gsm8k_lm_eval,
    regex_filter,
)

FULL_ANSWER = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
)


def test_yaml_constants_verbatim():
    assert GSM8K_FILTERS == {
        "strict-match": ("#### (\\-?[0-9\\.\\,]+)", 0),
        "flexible-extract": ("(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
    }
    assert GSM8K_REGEXES_TO_IGNORE == (",", "\\$", "(?s).*#### ", "\\.$")


@pytest.mark.parametrize(
    "response,expected",
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("#### 1,000", "1,000"),
        ("#### 5.", "5."),
        ("#### -3", "-3"),
        ("#### 3\n#### 4", "3"),  # take_first: the FIRST match, not the last
        ("####1000", "[invalid]"),  # the space after #### is required
        ("#### $5", "[invalid]"),  # a dollar sign is not in the class
        ("The answer is 72.", "[invalid]"),
        ("Question: x\n#### 8", "[invalid]"),  # cut at the stop string "Question:" first
    ],
)
def test_strict_match(response, expected):
    assert apply_gsm8k_filter("strict-match", response) == expected


@pytest.mark.parametrize(
    "response,expected",
    [
        ("The answer is 42.", "42."),
        ("3 + 4 = 7", "7"),
        ("It costs $1,250.", "$1,250."),
        ("so 5 apples and 12 oranges", "12"),
        ("The answer is 5, so", "5,"),
        ("The result is 1.5e3", "3"),  # the last number-like run, not the number
        ("Wait... so 7", "7"),
        ("It is 7...", "7..."),
        ("Total: -3", "-3"),
        ("#### 72\n\nQuestion: next 99", "72"),
        ("no digits", "[invalid]"),
        ("x </s> 9", "[invalid]"),
        ("x 9<|im_end|>garbage 10", "9"),
        ("So the final answer is $\\boxed{18}$.", "$."),  # "$." is the last run of [$0-9.,]{2,}
    ],
)
def test_flexible_extract(response, expected):
    assert apply_gsm8k_filter("flexible-extract", response) == expected


@pytest.mark.parametrize(
    "pred,ref,expected",
    [
        ("42.", "42", True),  # "\.$" drops one trailing dot
        ("7...", "7", False),  # only one
        ("$1,250.", "1250", True),
        ("1,000", "1000", True),
        ("1000.00", "1000", False),  # no numeric normalization in lm-eval
        ("72", FULL_ANSWER, True),  # the target is the full answer; "(?s).*#### " cuts it
        ("[invalid]", "72", False),
        ("ABC", "abc", True),  # ignore_case
        ("5,", "5", True),
        ("-3", "3", False),
        ("$.", "18", False),  # "$." reduces to "" and scores 0 (a boxed answer in dollars)
    ],
)
def test_exact_match(pred, ref, expected):
    assert exact_match(pred, ref) is expected


def test_regex_filter_tuple_and_fallback():
    pat = re.compile(r"(a)|(b)")
    assert regex_filter("xab", pat, -1) == "b"
    assert regex_filter("xab", pat, 0) == "a"
    assert regex_filter(None, pat) == "[invalid]"
    assert regex_filter("zz", pat, fallback="F") == "F"


def test_cut_at_stop_order_and_think():
    assert cut_at_stop("a Question: b </s> c") == "a "
    assert cut_at_stop("<think>x</think> 5") == "<think>x</think> 5"  # off by default, as in lm-eval
    assert cut_at_stop("<think>x</think> 5", think_end_token="</think>") == "5"


def test_gsm8k_lm_eval_both_filters():
    got = gsm8k_lm_eval("So she has 3 + 4 = 7 apples.\n#### 7", FULL_ANSWER.replace("72", "7"))
    assert got == {
        "strict-match": {"filtered": "7", "exact_match": True},
        "flexible-extract": {"filtered": "7", "exact_match": True},
    }
    # A boxed answer: lm-eval's flexible filter sees "}" after the number and still finds it;
    # its strict filter does not.
    got = gsm8k_lm_eval("so \\boxed{18}", "18")
    assert got["flexible-extract"] == {"filtered": "18", "exact_match": True}
    assert got["strict-match"] == {"filtered": "[invalid]", "exact_match": False}


def test_gsm8k_reference_answers_pass_both_lm_eval_filters():
    """lm-eval's target is the dataset's full ``answer``; each reference answer, as a response, scores 1."""
    from conftest import shared_data

    from eval.data import read_jsonl

    rows = read_jsonl(shared_data("gsm8k_test.jsonl"))
    assert len(rows) == 1319
    bad = [
        i
        for i, r in enumerate(rows)
        if not all(v["exact_match"] for v in gsm8k_lm_eval(r["answer"], r["answer"]).values())
    ]
    assert bad == []
