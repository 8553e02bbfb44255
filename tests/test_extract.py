"""Extraction tables: (completion, task, expected answer).

Conventions: Hendrycks' ``last_boxed_only_string`` (MATH), lm-eval's GSM8K strict
(``#### N``) and flexible (last number) filters, Minerva's "Final Answer: The final
answer is X. I hope it is correct.", chain-of-thought "The answer is X" (Wei et al.
2022), DeepSeek-R1 ``</think>``, ToRA / Qwen-TIR ```` ```output ```` blocks.
"""

import pytest

from eval import extract_answer
from eval.extract import find_boxed, last_boxed

CASES = [
    # Boxes: last balanced one wins.
    ("So the answer is $\\boxed{5}$.", "math", "5"),
    ("\\boxed{3}\nthen later \\boxed{7}", "math", "7"),
    ("\\boxed{\\frac{1}{2}}", "math", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}.", "math", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{{1,2}}", "math", "{1,2}"),
    ("\\fbox{12}", "math", "12"),
    ("The answer is \\boxed 5", "math", "5"),
    ("the result is $\\boxed 5$.", "math", "5"),
    ("\\boxed{ 42 }", "math", "42"),
    ("\\boxed{\\text{(C)}}", "math", "\\text{(C)}"),
    ("\\boxed{x^{2}}", "math", "x^{2}"),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "math", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\boxed{5} and a truncated \\boxed{6", "math", "5"),
    ("\\boxed{}", "math", None),
    ("\\boxed{\\{1, 2\\}}", "math", "\\{1, 2\\}"),
    # Several boxes on the final line form one answer; duplicates collapse.
    ("The roots are $\\boxed{2}$ and $\\boxed{3}$.", "math", "2, 3"),
    ("First \\boxed{1}.\nSo the roots are \\boxed{2}, \\boxed{-2}", "math", "2, -2"),
    ("\\boxed{350}, i.e. \\boxed{350}", "math", "350"),
    ("a \\boxed{1}\nfinally \\boxed{4}", "math", "4"),
    # </think> wins; few-shot continuations are cut.
    ("<think>maybe \\boxed{3}</think>The answer is \\boxed{4}.", "math", "4"),
    ("<think>long \\boxed{3}</think> so 12", "math", "12"),
    ("<think>\\boxed{1}</think><think>\\boxed{2}</think>\\boxed{5}", "math", "5"),
    ("The answer is 7.\n\nQuestion: what is 2+2?\nAnswer: 4", "gsm8k", "7"),
    ("So \\boxed{9}\n\nProblem: next one \\boxed{10}", "math", "9"),
    # GSM8K marker.
    ("She has 3 + 4 = 7 apples.\n#### 7", "gsm8k", "7"),
    ("#### 1,000", "gsm8k", "1,000"),
    ("#### $18", "gsm8k", "$18"),
    ("#### -3", "gsm8k", "-3"),
    # Answer phrases.
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "math", "\\frac{1}{2}"),
    ("Final Answer: The final answer is 18. I hope it is correct.", "gsm8k", "18"),
    ("The final answer is: 42", "math", "42"),
    ("So the answer is 25.", "gsm8k", "25"),
    ("The answer is $12$.", "math", "12"),
    ("Thus the answer is \\boxed{3}.", "math", "3"),
    ("Answer: 17", "gsm8k", "17"),
    ("**Answer:** 17", "gsm8k", "17"),
    ("The answer is 5 apples\nbut wait", "gsm8k", "5 apples"),
    # Code-integrated: last execution output.
    ("```python\nprint(2+3)\n```\n```output\n5\n```\n", "math", "5"),
    ("```python\nx=1\n```\n```output\n1\n```\n```python\nprint(x+1)\n```\n```output\n2\n```", "math", "2"),
    ("```python\nprint(1)\n```\n```output\n1\n```\nSo \\boxed{1}.", "math", "1"),
    ("<|code|>print(6)<|endofblock|><|execution|>6<|endofblock|>", "math", "6"),
    ("```python\nprint('a')\n```\n```output\n\n```\nThen 7", "math", "7"),
    # Last number fallback.
    ("3 + 4 = 7", "gsm8k", "7"),
    ("It costs 1,250 dollars", "gsm8k", "1,250"),
    ("it is -2.5 now", "math", "-2.5"),
    ("we get 3/4", "math", "3/4"),
    ("There are 5 cats and 12 dogs.", "gsm8k", "12"),
    # Nothing.
    ("", "math", None),
    ("   ", "gsm8k", None),
    ("no numbers here", "gsm8k", None),
    (None, "math", None),
    (12, "math", None),
]


@pytest.mark.parametrize("completion,task,expected", CASES)
def test_extract_answer(completion, task, expected):
    assert extract_answer(completion, task) == expected


def test_find_boxed_offsets_and_nesting():
    text = "a \\boxed{x_{1}} b \\fbox{2}"
    assert find_boxed(text) == [(2, "x_{1}"), (18, "2")]
    assert last_boxed("none") is None


@pytest.mark.parametrize("junk", ["\\boxed{" * 50, "}" * 100, "\\boxed\\boxed", "$$$$", "\\", "{{{{", "#### ", "</think>"])
def test_extraction_never_raises(junk):
    extract_answer(junk, "math")
    extract_answer(junk, "gsm8k")
