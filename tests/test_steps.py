"""Step splitting, eligible prefixes, the temperature schedule, the noise filter."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eval.blocks import MARKDOWN, MATHCODER
from mlx_scdpo.steps import (Steps, eligible_prefix_lengths, is_noisy, split_steps, step_temperatures,
                             temperature_for_step)


@pytest.mark.parametrize("i,expected", [(0, 1.1), (1, 1.2), (2, 1.3), (3, 1.4), (4, 1.4), (10, 1.4)])
def test_reference_temperature_schedule(i, expected):
    assert temperature_for_step(i) == pytest.approx(expected)


def test_custom_schedule():
    assert [temperature_for_step(i, 1.0, 0.05, 1.2) for i in range(6)] == pytest.approx([1.0, 1.05, 1.1, 1.15, 1.2, 1.2])


def test_lines_keep_their_newlines():
    sol = "Step 1: 2 * 3 = 6\nStep 2: 6 + 1 = 7\n\nThe answer is \\boxed{7}."
    assert split_steps(sol).steps == ["Step 1: 2 * 3 = 6\n", "Step 2: 6 + 1 = 7\n\n", "The answer is \\boxed{7}."]


def test_paragraphs():
    sol = "First we add.\nStill first.\n\nThen we multiply.\n\nDone."
    assert split_steps(sol, unit="paragraph").steps == ["First we add.\nStill first.\n\n", "Then we multiply.\n\n",
                                                        "Done."]


def test_display_math_and_fences_are_never_split():
    sol = "We have\n$$\na = 1\nb = 2\n$$\nand\n\\begin{align*}\nx &= 1\\\\\ny &= 2\n\\end{align*}\nso\n```python\nx=1\ny=2\n```\nend"
    steps = split_steps(sol).steps
    assert steps == ["We have\n", "$$\na = 1\nb = 2\n$$\n", "and\n", "\\begin{align*}\nx &= 1\\\\\ny &= 2\n\\end{align*}\n",
                     "so\n", "```python\nx=1\ny=2\n```\n", "end"]


@given(st.text(alphabet="ab \n$\\[]{}`", max_size=120))
def test_steps_concatenate_back(text):
    assert "".join(split_steps(text).steps) == text
    assert "".join(split_steps(text, unit="paragraph").steps) == text
    assert "".join(split_steps(text, "code", MARKDOWN).steps) == text


def test_code_steps_are_blocks_and_prefixes_never_end_after_code():
    sol = ("Let us compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo check:\n```python\nprint(1)\n```\n"
           "```output\n1\n```\nThe answer is \\boxed{42}.")
    steps = split_steps(sol, "code", MARKDOWN)
    assert steps.kinds == ["text", "code", "execution", "text", "code", "execution", "text"]
    assert steps.steps[1] == "```python\nprint(6 * 7)\n```\n"
    # k=2 would end right after a code block; the last two steps (k=6, 7) are never prefix ends.
    assert eligible_prefix_lengths(steps) == [1, 3, 4]


def test_cot_prefixes_exclude_last_two_steps():
    assert eligible_prefix_lengths(Steps(["a\n"] * 5, ["text"] * 5)) == [1, 2, 3]
    assert eligible_prefix_lengths(Steps(["a\n"] * 2, ["text"] * 2)) == []


def test_noise_filter():
    assert is_noisy(Steps(["a\n"] * 25, ["text"] * 25))
    assert not is_noisy(Steps(["a\n"] * 24, ["text"] * 24))
    assert is_noisy(Steps(["x" * 3001], ["text"]))
    assert is_noisy(split_steps("```python\nprint(1)\n", "code", MARKDOWN), MARKDOWN)  # never closed
    assert is_noisy(split_steps("<|text|>a<|code|>b<|endofblock|>", "code", MATHCODER), MATHCODER)
    assert not is_noisy(split_steps("```python\nprint(1)\n```\n", "code", MARKDOWN), MARKDOWN)


def test_step_temperatures_follow_token_boundaries():
    tokens = ["Step", " 1", "\n", "Step", " 2", "\n", "\n", "x", "\n", "y", "\n", "z"]
    assert step_temperatures(tokens) == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.4])
