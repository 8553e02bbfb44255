"""Gold answers of the shared GSM8K / MATH / MATH-500 test sets.

The specifying test: MATH-500 ships each answer twice, boxed inside the reference
``solution`` and separately in ``answer`` (written by its curators, not by this package's
reader). The full-completion extractor run on the solution must grade equal to the
``answer`` field for every problem. (Measured: the two agree as text, up to spaces, in 496
of 500; the 4 others are a label ``x=``/``y =`` or two boxed forms of one value.)

The round trip below (each reference solution graded against the gold the loader read from
that same solution) is only a smoke test: for MATH both sides come from the same box.
"""

import pytest
from conftest import shared_data

from eval import extract_answer, is_equivalent
from eval.data import load_problems, read_jsonl


def test_math500_solution_matches_separate_answer_field():
    rows = read_jsonl(shared_data("math500_test.jsonl"))
    assert len(rows) == 500
    assert all(r["answer"].strip() for r in rows)
    failures = [
        (i, r["answer"], extract_answer(r["solution"], "math500"))
        for i, r in enumerate(rows)
        if not is_equivalent(extract_answer(r["solution"], "math500"), r["answer"], "math")
    ]
    assert failures == []


def test_math500_answer_field_differs_from_the_box_where_labels_or_lists_are():
    """Where the two fields differ as text (a label ``y =``, two boxed forms of one value), the
    reader's choice is what the comparison above checks; pin those problems so a change shows."""
    rows = read_jsonl(shared_data("math500_test.jsonl"))
    differ = {
        i: (extract_answer(r["solution"], "math500"), r["answer"])
        for i, r in enumerate(rows)
        if extract_answer(r["solution"], "math500").replace(" ", "") != r["answer"].replace(" ", "")
    }
    assert sorted(a for _, a in differ.values()) == sorted(
        ["x=5", "\\frac{639}{40}", "y = 2x + 3", "y = -2x"]
    )


@pytest.mark.parametrize(
    "task,name,field",
    [
        ("gsm8k", "gsm8k_test.jsonl", "answer"),
        ("math", "math_test.jsonl", "solution"),
        ("math500", "math500_test.jsonl", "solution"),
    ],
)
def test_reference_solutions_round_trip_smoke(task, name, field):
    path = shared_data(name)
    rows = read_jsonl(path)
    problems = load_problems(task, data_files=str(path))
    assert len(problems) == {"gsm8k": 1319, "math": 5000, "math500": 500}[task]
    equiv_task = "gsm8k" if task == "gsm8k" else "math"
    failures = [
        (p.doc_id, p.gold)
        for row, p in zip(rows, problems)
        if not is_equivalent(extract_answer(row[field], task), p.gold, equiv_task)
    ]
    assert failures == []


def test_math_keeps_subject_and_level():
    problems = load_problems("math", data_files=str(shared_data("math_test.jsonl")), limit=3)
    assert problems[0].subject == "Algebra" and problems[0].level in range(1, 6)
