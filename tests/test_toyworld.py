"""Toy world generator, step verification, and credit-assignment measures."""

import random

import pytest

from eval import extract_answer, is_equivalent
from mlx_scdpo.method.steps import split_steps
from mlx_scdpo.toy.world import ToyProblem, first_wrong_step, make_problem, make_splits, parse_question
from mlx_scdpo.training.credit import TokenRewards, negative_share_after, to_html, toy_error_start


def test_problems_are_integral_bounded_and_seeded():
    rng = random.Random(0)
    problems = [make_problem(rng) for _ in range(500)]
    assert all(0 <= v <= 99 for p in problems for v in p.values())
    assert all(1 <= len(p.ops) <= 2 for p in problems)
    assert [p.question for p in make_splits(5, 5, seed=3)[0]] == [
        p.question for p in make_splits(5, 5, seed=3)[0]
    ]


def test_splits_are_disjoint():
    train, test = make_splits(2000, 200, seed=0)
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in test}) == 200


def test_solution_format_and_grading():
    p = ToyProblem(6, 7, (("+", 5), ("/", 3)))
    assert p.question == "6 * 7, + 5, / 3"
    sol = p.solution()
    assert sol == "Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47\nStep 3: 47 / 3 = 15\nThe answer is \\boxed{15}."
    assert is_equivalent(extract_answer(sol, "gsm8k"), "15", "gsm8k")
    assert len(split_steps(sol).steps) == 4
    assert parse_question(p.question) == p


@pytest.mark.parametrize(
    "solution,expected",
    [
        ("Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47\nThe answer is \\boxed{47}.", None),
        ("Step 1: 6 * 7 = 48\nStep 2: 48 + 5 = 53\nThe answer is \\boxed{53}.", 1),
        ("Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 46\nThe answer is \\boxed{46}.", 2),
        ("Step 1: 6 * 7 = 42\nStep 2: 42 - 5 = 37\nThe answer is \\boxed{37}.", 2),
        ("Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47\nThe answer is \\boxed{48}.", 3),
        ("Step 1: 6 * 7 = 42\n", 2),
        # hostile text: a 5,000-digit number (int() refuses over 4,300 digits), garbage, nothing
        ("Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = " + "9" * 5000 + "\nThe answer is \\boxed{47}.", 2),
        ("Step 1: 6 * 7 = " + "4" * 5000, 1),
        ("\x00\ud800 Step 1: 6 * 7 = 42", 1),
        ("", 1),
    ],
)
def test_first_wrong_step(solution, expected):
    assert first_wrong_step(ToyProblem(6, 7, (("+", 5),)), solution) == expected


def test_code_variant_runs_in_the_sandbox():
    from mlx_scdpo.sandbox.pool import Sandbox

    p = ToyProblem(6, 7, (("+", 5), ("/", 3)))
    code = [
        b.content
        for b in __import__("eval.blocks", fromlist=["parse"]).parse(p.code_solution())
        if b.kind == "code"
    ]
    with Sandbox(timeout=5) as sb:
        outs = [sb.run(c).output.strip() for c in code]
    assert outs == ["42", "47", "15"]


def test_negative_share_after_literal():
    tr = TokenRewards(["ab", "c\n", "de", "f"], [-1.0, 0.5, -3.0, 0.0])
    assert negative_share_after(tr, 3) == pytest.approx(0.75)  # "de" starts at char 3
    assert negative_share_after(tr, 0) == pytest.approx(1.0)
    assert negative_share_after(TokenRewards(["a"], [0.1]), 0) is None
    assert "background" in to_html([("rejected", tr)]) and "&#8629;" in to_html([("rejected", tr)])


def test_toy_error_start_in_rejected_response():
    pair = {
        "question": "6 * 7, + 5",
        "prefix": "Step 1: 6 * 7 = 42\n",
        "rejected": "Step 2: 42 + 5 = 46\nThe answer is \\boxed{46}.",
    }
    assert toy_error_start(pair) == 0
    pair = {
        "question": "6 * 7, + 5",
        "prefix": "",
        "rejected": "Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 46\nThe answer is \\boxed{46}.",
    }
    assert toy_error_start(pair) == len("Step 1: 6 * 7 = 42\n")


@pytest.mark.parametrize("wrong", [2, 3])
def test_erring_solution_first_error_is_known(wrong):
    from mlx_scdpo.toy.world import erring_solution

    p = ToyProblem(6, 7, (("+", 5), ("-", 2)))
    sol = erring_solution(p, wrong, 2)
    assert first_wrong_step(p, sol) == wrong
    assert sol.splitlines()[: wrong - 1] == p.solution().splitlines()[: wrong - 1]
