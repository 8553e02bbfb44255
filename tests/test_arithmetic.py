"""``eval.arithmetic``: exact plain arithmetic, anything else None (never executed)."""

from fractions import Fraction

import pytest

from eval.arithmetic import checked_result, evaluate


@pytest.mark.parametrize(
    "s,value",
    [
        ("10 - 2", 8),
        ("3 × (4 + 1) / 2", Fraction(15, 2)),
        ("2 \\times 3", 6),
        ("12 \\div 4", 3),
        ("3 x 4", 12),
        ("-3", -3),
        ("- 3", -3),
        ("$1,000 + $5", 1005),
        (".5 * 4", 2),
        ("1/0", None),
        ("2**3", None),
        ("x + 1", None),
        ("__import__('os')", None),
        ("(1 + 2", None),
        ("1 +", None),
        ("", None),
        ("9" * 100, None),
    ],
)
def test_evaluate(s, value):
    assert evaluate(s) == value


@pytest.mark.parametrize(
    "s,result",
    [
        ("10 - 2 = 8", "8"),
        ("4 + 4 = 2 * 4 = 8", "8"),
        ("10 - 3 = 8", None),
        ("x = 8", None),
        ("8 =", None),
        ("10 - 2 = 4 + 4", None),
        ("5:00 = 5", None),
    ],
)
def test_checked_result(s, result):
    assert checked_result(s) == result
