"""Every gold answer in the shared GSM8K / MATH test sets grades equal to itself.

The gold is read by the dataset loader (``####`` / last ``\\boxed{}`` / ``answer`` field);
the prediction is the same reference solution passed through the full-completion
extractor, as a model's response would be. MATH-500's separate ``answer`` field is also
checked against its solution. (lm-eval's Minerva checker fails about 6% of these.)
"""

import pytest

from conftest import shared_data
from eval import extract_answer, is_equivalent
from eval.data import load_problems, read_jsonl


@pytest.mark.parametrize("task,name,field", [
    ("gsm8k", "gsm8k_test.jsonl", "answer"),
    ("math", "math_test.jsonl", "solution"),
    ("math500", "math500_test.jsonl", "solution"),
])
def test_reference_solutions_grade_correct(task, name, field):
    path = shared_data(name)
    rows = read_jsonl(path)
    problems = load_problems(task, data_files=str(path))
    assert len(problems) == {"gsm8k": 1319, "math": 5000, "math500": 500}[task]
    equiv_task = "gsm8k" if task == "gsm8k" else "math"
    failures = [
        (p.doc_id, p.gold) for row, p in zip(rows, problems)
        if not is_equivalent(extract_answer(row[field], task), p.gold, equiv_task)
    ]
    assert failures == []


def test_math_keeps_subject_and_level():
    problems = load_problems("math", data_files=str(shared_data("math_test.jsonl")), limit=3)
    assert problems[0].subject == "Algebra" and problems[0].level in range(1, 6)
