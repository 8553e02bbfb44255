"""Step splitting, eligible prefixes, the temperature schedule, the noise filter."""

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eval.blocks import MARKDOWN, MATHCODER
from mlx_scdpo.method.steps import (
    Steps,
    StepScanner,
    eligible_prefix_lengths,
    is_noisy,
    split_steps,
    temperature_for_step,
)


@pytest.mark.parametrize("i,expected", [(0, 1.1), (1, 1.2), (2, 1.3), (3, 1.4), (4, 1.4), (10, 1.4)])
def test_reference_temperature_schedule(i, expected):
    assert temperature_for_step(i) == pytest.approx(expected)


def test_custom_schedule():
    assert [temperature_for_step(i, 1.0, 0.05, 1.2) for i in range(6)] == pytest.approx(
        [1.0, 1.05, 1.1, 1.15, 1.2, 1.2]
    )


def test_lines_keep_their_newlines():
    sol = "Step 1: 2 * 3 = 6\nStep 2: 6 + 1 = 7\n\nThe answer is \\boxed{7}."
    assert split_steps(sol).steps == [
        "Step 1: 2 * 3 = 6\n",
        "Step 2: 6 + 1 = 7\n\n",
        "The answer is \\boxed{7}.",
    ]


def test_paragraphs():
    sol = "First we add.\nStill first.\n\nThen we multiply.\n\nDone."
    assert split_steps(sol, unit="paragraph").steps == [
        "First we add.\nStill first.\n\n",
        "Then we multiply.\n\n",
        "Done.",
    ]


def test_display_math_and_fences_are_never_split():
    sol = "We have\n$$\na = 1\nb = 2\n$$\nand\n\\begin{align*}\nx &= 1\\\\\ny &= 2\n\\end{align*}\nso\n```python\nx=1\ny=2\n```\nend"
    steps = split_steps(sol).steps
    assert steps == [
        "We have\n",
        "$$\na = 1\nb = 2\n$$\n",
        "and\n",
        "\\begin{align*}\nx &= 1\\\\\ny &= 2\n\\end{align*}\n",
        "so\n",
        "```python\nx=1\ny=2\n```\n",
        "end",
    ]


@given(st.text(alphabet="ab \n$\\[]{}`", max_size=120))
def test_steps_concatenate_back(text):
    assert "".join(split_steps(text).steps) == text
    assert "".join(split_steps(text, unit="paragraph").steps) == text
    assert "".join(split_steps(text, "code", MARKDOWN).steps) == text


def test_code_steps_are_blocks_and_prefixes_never_end_after_code():
    sol = (
        "Let us compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo check:\n```python\nprint(1)\n```\n"
        "```output\n1\n```\nThe answer is \\boxed{42}."
    )
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


# The regex splitter the scanner replaced, kept as an oracle: the scanner must cut exactly where it did.
_MATH_OPEN = re.compile(r"\$\$|\\\[|\\begin\{([a-zA-Z*]+)\}|```")


def _regex_spans(text):
    spans, i = [], 0
    while m := _MATH_OPEN.search(text, i):
        tok = m.group(0)
        close = {"$$": "$$", "\\[": "\\]", "```": "```"}.get(tok) or f"\\end{{{m.group(1)}}}"
        end = text.find(close, m.end())
        end = len(text) if end < 0 else end + len(close)
        spans.append((m.start(), end))
        i = end
    return spans


def _regex_split(text, unit):
    sep = re.compile(r"\n+" if unit == "line" else r"\n\s*\n\s*")
    spans = _regex_spans(text)
    steps, start = [], 0
    for m in sep.finditer(text):
        if any(a < m.start() < b for a, b in spans):
            continue
        if text[start : m.start()].strip():
            steps.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        if steps and not text[start:].strip():
            steps[-1] += text[start:]
        else:
            steps.append(text[start:])
    return steps


TEXTS = st.lists(
    st.sampled_from(
        [
            "a",
            " ",
            "\n",
            "$",
            "\\",
            "[",
            "]",
            "{",
            "}",
            "`",
            "\\begin{align}",
            "\\end{align}",
            "\\begin{",
            "gin{x*}",
            "$$",
            "```",
            "x",
            "\\[",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
@example("$$a$$\nb\n\nc\n$$\n\n$$d\n")
@example("x\\begin{align}\na\n\\end{align}\nb\n\\[c\n\\]\n```\nd\n```\ne")
def test_cot_scanner_cuts_where_the_regex_splitter_did(text):
    for unit in ("line", "paragraph"):
        assert split_steps(text, unit=unit).steps == _regex_split(text, unit)


CODE_TEXTS = st.lists(
    st.sampled_from(
        [
            "a",
            " ",
            "\n",
            "`",
            "```",
            "```python\n",
            "```output\n",
            "print(1)\n",
            "x",
            "<|text|>",
            "<|code|>",
            "<|execution|>",
            "<|endofblock|>",
            "<|",
            "|>",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(TEXTS, st.sampled_from(["line", "paragraph"]))
@example("a\n$$b\n$$ \n\n c\n", "paragraph")
def test_scanner_count_is_the_number_of_complete_steps(text, unit):
    # After any text, the steps the scanner has ended are the steps split_steps makes of it,
    # but for the last (which whatever comes next may still extend).
    scanner = StepScanner("cot", unit=unit)
    for i in range(len(text) + 1):
        assert scanner.steps == len(split_steps(text[:i] + "x", unit=unit)) - 1
        scanner.feed(text[i : i + 1])


@settings(max_examples=300, deadline=None)
@given(CODE_TEXTS, st.sampled_from([MARKDOWN, MATHCODER]))
@example(" \n```python\nx\n```\n```output\n1\n```\n b", MARKDOWN)
@example("<|text|>a<|endofblock|> <|code|>b<|endofblock|><|execution|>1<|endofblock|>", MATHCODER)
def test_code_scanner_count_is_the_number_of_complete_blocks(text, fmt):
    scanner = StepScanner("code", fmt)
    for i in range(len(text) + 1):
        steps = split_steps(text[:i] + "x", "code", fmt)
        assert scanner.steps == len(steps) - 1
        assert scanner.generated == sum(k != "execution" for k in steps.kinds[:-1])
        scanner.feed(text[i : i + 1])


@settings(max_examples=300, deadline=None)
@given(TEXTS, TEXTS)
def test_equal_keys_react_alike(a, b):
    # What the ramp's per-state tables rely on: the key is the whole state apart from the counts.
    for unit in ("line", "paragraph"):
        sa, sb = StepScanner("cot", unit=unit), StepScanner("cot", unit=unit)
        sa.feed(a)
        sb.feed(b)
        if sa.key() == sb.key():
            for piece in ("\n", "\n\n", "a\n", "$$\n", "\\]\n", "}\n", "```\n", " \n"):
                x, y = sa.copy(), sb.copy()
                assert len(x.feed(piece)) == len(y.feed(piece))
