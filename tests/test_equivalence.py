"""Equivalence tables in the style of Math-Verify's ``tests/test_all.py``: (gold, pred, expected).

Conventions cited: Hendrycks et al. 2021 (MATH ``is_equiv`` / ``strip_string``), Minerva
(Lewkowycz et al. 2022, ``normalize_final_answer``), lm-eval's GSM8K filters, and
Math-Verify's interval / set / relation handling.
"""

import os

import pytest

from eval import is_equivalent

# Integers, decimals, fractions, mixed numbers: exact rational comparison.
NUMBERS = [
    ("5", "5", True),
    ("5", "5.0", True),
    ("5", "5.00", True),
    ("5", "05", True),
    ("-3", "-3", True),
    ("-3", "3", False),
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac{1}{2}", ".5", True),
    ("\\frac12", "1/2", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\tfrac{3}{4}", "\\frac34", True),
    ("\\frac{6}{8}", "\\frac{3}{4}", True),
    ("2\\frac{1}{2}", "\\frac{5}{2}", True),
    ("2\\frac{1}{2}", "2.5", True),
    ("-2\\frac{1}{2}", "-\\frac{5}{2}", True),
    ("\\frac{1}{3}", "0.333", False),
    ("\\frac{1}{3}", "0.3333333", False),
    ("\\frac{2}{3}", "0.67", False),
    ("123456", "123450", False),
    ("18", "1800", False),
    ("18", "180", False),
    ("100", "1000", False),
    ("1000", "1,000", True),
    ("1000", "1{,}000", True),
    ("1000000", "1,000,000", True),
    ("1234.5", "1,234.5", True),
    ("7", "+7", True),
    ("0", "0", True),
    ("0", "-0", True),
    ("10", "10.", True),
    ("3", "3.", True),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", True),
    ("-\\frac{1}{2}", "-0.5", True),
    ("\\frac{1}{2}", "\\frac{2}{4}", True),
    ("0.1", "\\frac{1}{10}", True),
    ("0.125", "\\frac18", True),
    ("2", "\\frac{4}{2}", True),
    ("3", "\\frac{10}{3}", False),
    ("1.5", "1.50", True),
    ("1.5", "1.05", False),
    ("12", "21", False),
    ("9", "9.01", False),
    ("0.01", "0.1", False),
]

# LaTeX cleanup: wrappers, spacing, text, units, degrees, percent.
CLEANUP = [
    ("5", "$5$", True),
    ("5", "\\$5", True),
    ("5", "5\\text{ cm}", True),
    ("5", "5 \\text{ cm}^2", True),
    ("5", "5\\text{ inches}", True),
    ("5", "\\text{5}", True),
    ("90", "90^\\circ", True),
    ("90", "90^{\\circ}", True),
    ("90^\\circ", "90", True),
    ("30", "30°", True),
    ("50", "50\\%", True),
    ("50\\%", "50", True),
    ("50\\%", "0.5", True),
    ("5", "5.", True),
    ("\\frac{1}{2}", "\\left(\\frac{1}{2}\\right)", True),
    ("10", "10\\,", True),
    ("10", "10\\!", True),
    ("2\\sqrt{3}", "2 \\sqrt{3}", True),
    ("2\\sqrt{3}", "2\\sqrt3", True),
    ("\\sqrt{3}", "\\sqrt3", True),
    ("5", "x = 5", True),
    ("5", "x=5", True),
    ("5", "k = 5", True),
    ("-2", "y = -2", True),
    ("5", "5 = x", True),
    ("12", "\\$12", True),
    ("12", "12 \\text{ dollars}", True),
    ("12", "\\textbf{12}", True),
    ("7", "\\mbox{7}", True),
    ("\\text{(A)}", "(A)", True),
    ("\\text{(B)}", "(A)", False),
    ("\\text{Monday}", "Monday", True),
    ("\\text{Monday}", "\\text{Tuesday}", False),
    ("x", "x", True),
    ("5", "\\displaystyle 5", True),
    ("4", "4\\text{ square units}", True),
    ("8", "8 \\text{ feet}", True),
    ("6", "6 \\mbox{ units}", True),
    ("45", "45^\\circ\\text{}", True),
    ("20", "20\\%", True),
    ("0.2", "20\\%", True),
    ("2", "20\\%", False),
]

# Symbolic forms (sympy in the worker process).
SYMBOLIC = [
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\sqrt{12}", "2\\sqrt{3}", True),
    ("\\sqrt{12}", "3\\sqrt{2}", False),
    ("(x+1)^2", "x^2+2x+1", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2-1", "(x-1)^2", False),
    ("2\\pi", "2 \\pi", True),
    ("\\pi", "3.14", False),
    ("\\pi", "3.14159", False),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("\\frac{\\pi}{2}", "\\frac12\\pi", True),
    ("\\sqrt[3]{8}", "2", True),
    ("\\sqrt[3]{27}", "3", True),
    ("2^{10}", "1024", True),
    ("2^{10}", "1000", False),
    ("3+4i", "4i+3", True),
    ("3+4i", "3-4i", False),
    ("i", "i", True),
    ("\\frac{1+\\sqrt{5}}{2}", "\\frac{\\sqrt5+1}{2}", True),
    ("\\frac{1+\\sqrt{5}}{2}", "\\frac{1-\\sqrt{5}}{2}", False),
    ("\\sin x", "\\sin(x)", True),
    ("e^x", "e^{x}", True),
    ("2x+3", "3+2x", True),
    ("2x+3", "2x-3", False),
    ("\\frac{x}{2}", "0.5x", False),
    ("a^2b", "ba^2", True),
    ("\\binom{5}{2}", "10", True),
    ("\\log_2 8", "3", True),
    ("\\frac{3\\sqrt{3}}{2}", "\\frac{3}{2}\\sqrt{3}", True),
    ("\\sqrt{2}", "1.41421356237", True),
    ("\\sqrt{2}", "1.4142", False),
    ("4\\sqrt{2}", "\\sqrt{32}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt3}", True),
    ("\\infty", "\\infty", True),
    ("-\\infty", "\\infty", False),
    ("2^{-1}", "\\frac12", True),
    ("x^{2}", "x^2", True),
    ("6\\sqrt{6}", "\\sqrt{216}", True),
    ("\\frac \\pi4 + 2", "\\dfrac \\pi 4 + 2", True),
    ("\\frac\\pi4", "\\frac{\\pi}{3}", False),
    ("\\frac{9}{4}\\pi", "\\frac{9\\pi}{4}", True),
    ("10\\pi", "31.4", False),
]

# Intervals (open/closed differ), unions, tuples / points / vectors (ordered), lists / sets (unordered).
STRUCTURES = [
    ("(3,-2)", "x=3, y=-2", True),
    ("(3,-2)", "y=-2, x=3", True),
    ("(3,-2)", "x=-2, y=3", False),
    ("(3,-2)", "a=3, b=-2", False),
    ("(1,2,3)", "x=1, y=2, z=3", True),
    ("(1,2,3)", "x=1, y=2", False),
    ("(1, 2, 3)", "\\langle 1, 2, 3 \\rangle", True),
    ("(1, 2, 3)", "\\langle 1, 2, 4 \\rangle", False),
    ("(1,2)", "(1,2)", True),
    ("(1,2)", "(2,1)", False),
    ("(1,2]", "(1,2)", False),
    ("[1,2]", "[1, 2]", True),
    ("[1,2)", "(1,2]", False),
    ("(-\\infty,3]", "(-\\infty, 3]", True),
    ("(-\\infty,3]", "(-\\infty,3)", False),
    ("(-\\infty,3]\\cup(4,\\infty)", "(4,\\infty)\\cup(-\\infty,3]", True),
    ("(-\\infty,3]\\cup(4,\\infty)", "(-\\infty,3]", False),
    ("[2,5)", "x \\in [2,5)", True),
    ("(\\frac12, 3)", "(0.5, 3)", True),
    ("(3, \\frac{\\pi}{2})", "(3,\\frac{\\pi}{2})", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", True),
    ("(1,2,3)", "(1,2,3)", True),
    ("(1,2,3)", "(1,3,2)", False),
    ("(1,2,3)", "(1,2)", False),
    ("1,2", "2,1", True),
    ("1,2,3", "3, 1, 2", True),
    ("1,2,3", "1,2", False),
    ("1,2", "1,2,2", False),
    ("-2, 3", "3, -2", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\frac12, 2", "2, 0.5", True),
    ("1, -1", "\\pm 1", True),
    ("1\\pm\\sqrt2", "1+\\sqrt2, 1-\\sqrt2", True),
    ("1\\pm\\sqrt2", "1+\\sqrt2", False),
    ("\\pm 3", "3, -3", True),
    ("x=2, 3", "2, 3", True),
    ("2, 3", "x=2, x=3", True),
    ("2, 3", "x=3, x=2", True),
    ("(1,2)", "1,2", False),
    ("[1,2]", "(1,2)", False),
    ("(2, -1)", "(2,-1)", True),
    ("(2, -1)", "(-1, 2)", False),
    ("(0, 0, 1)", "(0,0,1)", True),
    ("a, b", "b, a", True),
]

MATRICES = [
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", False),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", False),
    ("\\begin{pmatrix}\\frac12\\\\0\\end{pmatrix}", "\\begin{pmatrix}0.5\\\\0\\end{pmatrix}", True),
    ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ("\\begin{bmatrix}1&0\\\\0&1\\end{bmatrix}", "\\begin{bmatrix}1&0\\\\0&1\\end{bmatrix}", True),
    ("\\begin{pmatrix}\\sqrt{8}\\\\1\\end{pmatrix}", "\\begin{pmatrix}2\\sqrt2\\\\1\\end{pmatrix}", True),
]

RELATIONS = [
    ("x = \\pm 3", "-3, 3", True),
    ("x = \\pm 3", "3", False),
    ("x = \\pm 3", "y = \\pm 3", False),
    ("x = 1", "y = 1", False),
    ("y = 2", "x = 2", False),
    ("a_{1} = 3", "a_1 = 3", True),
    ("x = 1", "1", True),
    ("y=2x+3", "y = 2x + 3", True),
    ("y=2x+3", "2x+3", True),
    ("y=2x+3", "2x+3=y", True),
    ("x+y=5", "5=x+y", True),
    ("x+2y=3", "2x+4y=6", True),
    ("x+2y=3", "x+2y=4", False),
    ("x+y=5", "x-y=5", False),
    ("x>3", "3<x", True),
    ("x>3", "x>=3", False),
    ("x\\ge 3", "3\\le x", True),
    ("x<3", "x>3", False),
    ("2x<6", "x<3", True),
    ("x\\leq 2", "x \\le 2", True),
    ("-x<-3", "x>3", True),
    ("x<3", "-x<-3", False),
    ("y = x^2", "x^2 = y", True),
]

# Hedged answers never equal a single gold value.
HEDGES = [
    ("18", "18 or 19", False),
    ("18", "18 \\text{ or } 19", False),
    ("18", "either 18 or 19", False),
    ("2", "2 or -2", False),
    ("\\text{yes or no}", "\\text{yes or no}", True),
]

# Text answers and odd inputs.
TEXT = [
    ("\\text{odd}", "odd", True),
    ("\\text{even}", "odd", False),
    ("A", "A", True),
    ("A", "B", False),
    ("5", "", False),
    ("5", "None", False),
    ("\\frac{1}{2}", "\\frac{1}{2", False),
    ("5", "}", False),
    ("5", "\\", False),
]

# Graded wrong today (strict xfail: a fix shows up as XPASS). Found while timing the worker.
_COMPILE_REFUSED = (
    "sympy's simplify of the two sides' ratio compiles a string, which the grading worker's guard "
    "refuses (eval/guard.py audit hook): the equal equations grade False"
)
KNOWN_WRONG = [
    pytest.param(
        "(x^2-1)^{2}=y+1",
        "(x+1)^{2}(x-1)^{2}=y+1",
        True,
        marks=pytest.mark.xfail(strict=True, reason=_COMPILE_REFUSED),
    ),
]

ALL_MATH = NUMBERS + CLEANUP + SYMBOLIC + STRUCTURES + MATRICES + RELATIONS + HEDGES + TEXT + KNOWN_WRONG


@pytest.mark.parametrize("gold,pred,expected", ALL_MATH)
def test_math_equivalence(gold, pred, expected):
    assert is_equivalent(pred, gold, "math") is expected


GSM8K = [
    ("18", "18", True),
    ("18", "18.0", True),
    ("18", "18.00", True),
    ("18", "$18", True),
    ("18", "\\$18", True),
    ("18", "$18.00", True),
    ("1000", "1,000", True),
    ("1000", "1{,}000", True),
    ("1000", "$1,000.00", True),
    ("18", "19", False),
    ("18", "180", False),
    ("18", "1.8", False),
    ("123456", "123450", False),
    ("-5", "-5", True),
    ("-5", "5", False),
    ("5", "5 apples", True),
    ("5", "5\\text{ apples}", True),
    ("20", "20%", True),
    ("0.5", "1/2", True),
    ("18", "18 or 19", False),
    ("18", "18, 19", False),
    ("18", "", False),
    ("18", "eighteen", True),
    ("7/2", "3 1/2", True),
    ("-3", "−3", True),
    ("3", "−3", False),
    ("1250", "1 250", True),
    ("0", "().__class__.__bases__[0]", False),
    ("1200", "1,200", True),
    ("1200", "1.200", False),
    ("3", "3.", True),
    ("42", "\\boxed{42}", True),
    ("70000", "70,000", True),
    # Working is read only when right; a clock time equals only itself.
    ("8", "10 - 2 = 8", True),
    ("8", "10 - 3 = 8", False),
    ("18", "18 - 3 = 15", False),
    ("12", "3 \\times 4 = 12", True),
    ("8", "x = 8", False),
    ("8", "1/0 = 8", False),
    ("-3", "- 3", True),
    ("3", "- 3", False),
    ("5:00", "5:00", True),
    ("5", "5:00", False),
    ("5:00", "5", False),
    ("5:00", "6:00", False),
]


@pytest.mark.parametrize("gold,pred,expected", GSM8K)
def test_gsm8k_equivalence(gold, pred, expected):
    assert is_equivalent(pred, gold, "gsm8k") is expected


def test_none_and_empty_are_not_equal():
    assert is_equivalent(None, "5") is False
    assert is_equivalent("5", None) is False
    assert is_equivalent("  ", "  ") is False


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("10^{10^{10}}+1", "10^{10^{10}}+2"),
        ("10^{10^{10}}", "1"),
        ("2^{2^{2^{2^{2}}}}", "3"),
        ("9^{9^{9}}", "9^{9^{9}}+1"),
        ("10^{100000}+1", "10^{100000}"),
        ("(10^{10^{10}}+1)!", "5"),
    ],
)
def test_power_towers_return_fast_and_definite(pred, gold):
    """Definite, not a timeout: under a generous bound the verdict is False and no worker call was killed
    (a tower that sympy tried to expand would run into the bound; a wall-clock check would flake under load)."""
    from eval.worker import get_worker

    worker = get_worker()
    worker.warm()
    before = worker.timeouts, worker.not_ready
    assert is_equivalent(pred, gold, timeout=30.0) is False
    assert (worker.timeouts, worker.not_ready) == before


def test_hard_timeout_kills_worker_and_recovers():
    from eval.worker import get_worker

    worker = get_worker()
    is_equivalent("x+1", "1+x")  # running (started by an earlier test, or now)
    before, pid = worker.timeouts, worker.pid
    # A pair whose simplify takes seconds; a 50 ms bound forces the kill path. Checked by its outcome (one
    # more timeout, the old process gone), not by a wall clock that a loaded machine would stretch.
    assert (
        worker.call(
            "relation", ("(x+1)^{301}(x-1)^{301}", "=", "y"), ("(x^2-1)^{301}", "=", "y"), timeout=0.05
        )
        is False
    )
    assert worker.timeouts == before + 1
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left computing
        os.kill(pid, 0)
    worker.warm()  # the replacement may still be starting
    assert is_equivalent("\\sqrt{8}", "2\\sqrt{2}") is True  # a fresh worker answers


def test_threads_get_bounded_answers():
    from concurrent.futures import ThreadPoolExecutor

    from eval.worker import get_worker

    get_worker().warm()  # a worker replaced by an earlier test may still be starting
    pairs = [("(x+1)^2", "x^2+2x+1"), ("10^{10^{10}}", "1"), ("\\frac12", "0.5")] * 4
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda pg: is_equivalent(*pg), pairs))
    assert got == [True, False, True] * 4


def test_pair_after_a_timeout_is_not_charged_a_restart(monkeypatch):
    """A warm spare replaces a killed worker: the next pair does not wait for sympy to load."""
    from eval import worker as worker_module

    worker = worker_module.get_worker()
    worker.warm()
    not_ready = worker.not_ready
    assert (
        worker.call(
            "relation", ("(x+1)^{303}(x-1)^{303}", "=", "y"), ("(x^2-1)^{303}", "=", "y"), timeout=0.05
        )
        is False
    )
    # Counted, not timed: the pair is answered by the promoted spare, so the only process started is the
    # next spare (a restart would start two: a new worker and its spare). The bound is generous so that a
    # loaded machine does not turn the answer into a timeout.
    spawned = []
    real_spawn = worker_module._spawn
    monkeypatch.setattr(worker_module, "_spawn", lambda: spawned.append(1) or real_spawn())
    assert is_equivalent("x^2-1", "(x-1)(x+1)", timeout=30.0) is True
    assert len(spawned) == 1 and worker.not_ready == not_ready


def test_one_time_bound_covers_all_calls_of_a_pair():
    """A list of slow items shares one bound: the pair answers False in about `timeout`, not n times it."""
    from eval.worker import get_worker

    worker = get_worker()
    worker.warm()
    # Four equations, each seconds of simplify (different exponents: sympy caches results).
    slow = ", ".join(f"(x+1)^{{{n}}}(x-1)^{{{n}}}=y+1" for n in (311, 313, 315, 317))
    gold = ", ".join(f"(x^2-1)^{{{n}}}=y+1" for n in (311, 313, 315, 317))
    before = worker.timeouts
    assert is_equivalent(slow, gold, timeout=0.5) is False
    # Counted, not timed: the first slow call spends the whole bound and is killed; no later call starts
    # (a bound per call would kill one worker per equation).
    assert worker.timeouts == before + 1


@pytest.mark.slow  # waits for three worker start-ups (seconds each)
def test_pairs_right_after_repeated_kills_stay_bounded(monkeypatch):
    """Kills in a row outpace the spare: later pairs answer False within their bound, never wait."""
    from eval import worker as worker_module

    worker = worker_module.get_worker()
    worker.warm()
    waits = []  # every wait of the grader on a worker (select's timeout), instead of a wall clock
    real_select = worker_module.select.select
    monkeypatch.setattr(
        worker_module.select,
        "select",
        lambda r, w, x, timeout: waits.append(timeout) or real_select(r, w, x, timeout),
    )
    for n in range(3):  # each kill promotes the spare; the next spare is still starting
        worker.call(
            "relation",
            (f"(x+1)^{{{321 + n}}}(x-1)^{{{321 + n}}}", "=", "y"),
            (f"(x^2-1)^{{{321 + n}}}", "=", "y"),
            timeout=0.05,
        )
        waits.clear()
        is_equivalent("x^2-1", "(x-1)(x+1)", timeout=0.5)
        assert waits and max(waits) <= 0.5  # never the start-up bound
    monkeypatch.undo()
    worker.warm()
    assert is_equivalent("x^2-1", "(x-1)(x+1)") is True
