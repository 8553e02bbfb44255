"""Block format parsing: lossless round trip, typed blocks, code-answer extraction."""

from hypothesis import given, settings
from hypothesis import strategies as st

from eval.blocks import EMPTY_OUTPUT, MARKDOWN, MATHCODER, Block, parse, pending_code, render
from eval.extract import extract_code_answer

PIECES = [
    "```python\n",
    "```output\n",
    "```",
    "\n",
    "x = 1",
    "print(x)",
    "<|text|>",
    "<|code|>",
    "<|execution|>",
    "<|endofblock|>",
    "\\boxed{3}",
    " ",
    "`",
    "``",
    "so",
    "<|",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.sampled_from([MARKDOWN, MATHCODER]))
def test_render_parse_roundtrip(pieces, fmt):
    text = "".join(pieces)
    assert render(parse(text, fmt), fmt) == text


@given(st.text(max_size=200))
def test_roundtrip_arbitrary_text(text):
    assert render(parse(text)) == text


def test_markdown_blocks():
    text = "Compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo \\boxed{42}."
    assert parse(text) == [
        Block("text", "Compute.\n", marked=False),
        Block("code", "print(6 * 7)\n"),
        Block("text", "\n", marked=False),
        Block("execution", "42\n"),
        Block("text", "\nSo \\boxed{42}.", marked=False),
    ]


def test_mathcoder_blocks_and_open_block():
    text = "<|text|>Let x.<|endofblock|><|code|>x = 2\nx<|endofblock|><|execution|>2<|endofblock|><|text|>So"
    assert parse(text, MATHCODER) == [
        Block("text", "Let x."),
        Block("code", "x = 2\nx"),
        Block("execution", "2"),
        Block("text", "So", closed=False),
    ]


def test_pending_code_only_for_a_closed_unexecuted_block():
    assert pending_code("a\n```python\nprint(1)\n```") == "print(1)\n"
    assert pending_code("a\n```python\nprint(1)\n``") is None
    assert pending_code("a\n```python\nprint(1)\n```\n```output\n1\n```\n") is None
    assert pending_code("<|code|>x<|endofblock|>", MATHCODER) == "x"


def test_execution_block_text():
    assert MARKDOWN.execution_block("42\n") == "\n```output\n42\n```\n"
    assert MARKDOWN.execution_block("") == f"\n```output\n{EMPTY_OUTPUT}\n```\n"
    assert MATHCODER.execution_block("7") == "<|execution|>7<|endofblock|>"


def test_extract_code_answer():
    sol = "```python\nprint('\\\\boxed{1}')\n```\n```output\n\\boxed{1}\n```\nThe answer is $\\boxed{2}$."
    assert extract_code_answer(sol) == "2"
    assert extract_code_answer("```python\nprint(5)\n```\n```output\n5\n```\n") == "5"
    assert (
        extract_code_answer("<|code|>print(5)<|endofblock|><|execution|>5<|endofblock|>", "mathcoder") == "5"
    )
    assert extract_code_answer("") is None
