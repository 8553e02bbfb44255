"""Standalone GSM8K / MATH grading harness (no MLX import anywhere in this package).

Public API (stable)::

    from eval import extract_answer, is_equivalent
    extract_answer(completion, task) -> str | None
    is_equivalent(pred, gold, task="math") -> bool
"""

from eval.equivalence import is_equivalent
from eval.extract import extract_answer

__all__ = ["extract_answer", "is_equivalent", "grade"]


def grade(completion: str, gold: str, task: str = "math") -> bool:
    """Extract the answer of ``completion`` and compare it with ``gold``."""
    return is_equivalent(extract_answer(completion, task), gold, "gsm8k" if task == "gsm8k" else "math")
