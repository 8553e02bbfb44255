"""Code-integrated solutions as typed blocks: text, code and execution output.

Two formats:

* ``markdown`` (default; ToRA / Qwen2.5-Math-TIR style, what ordinary chat models write)::

      Some reasoning.
      ```python
      print(6 * 7)
      ```
      ```output
      42
      ```
      So the answer is $\\boxed{42}$.

* ``mathcoder`` (MathCoder's special tokens, as in the SCDPO reference implementation):
  ``<|text|>...<|endofblock|><|code|>...<|endofblock|><|execution|>...<|endofblock|>``.

``parse`` is lossless: ``render(parse(x), fmt) == x`` for every string ``x``. Text between
fenced blocks (often just ``"\\n"``) is kept as unmarked text blocks; a block still open at
the end (generation stopped inside it) has ``closed=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.errors import UserError

#: Shown in an execution block when the code printed nothing (the reference shows an
#: explicit marker rather than an empty block, so the model sees that the code ran).
EMPTY_OUTPUT = "[no output]"


@dataclass(frozen=True)
class BlockFormat:
    name: str
    code_open: str
    code_close: str
    exec_open: str
    exec_close: str
    text_open: str = ""
    text_close: str = ""

    def openers(self) -> list[tuple[str, str]]:
        out = [("code", self.code_open), ("execution", self.exec_open)]
        if self.text_open:
            out.append(("text", self.text_open))
        return out

    def delimiters(self, kind: str) -> tuple[str, str]:
        return {
            "code": (self.code_open, self.code_close),
            "execution": (self.exec_open, self.exec_close),
            "text": (self.text_open, self.text_close),
        }[kind]

    def execution_block(self, output: str) -> str:
        """The text appended after a code block once it ran (with separating newlines)."""
        body = output.rstrip("\n") or EMPTY_OUTPUT
        if self.name == "markdown":
            return f"\n{self.exec_open}{body}\n{self.exec_close}\n"
        return f"{self.exec_open}{body}{self.exec_close}"


MARKDOWN = BlockFormat("markdown", "```python\n", "```", "```output\n", "```")
MATHCODER = BlockFormat(
    "mathcoder", "<|code|>", "<|endofblock|>", "<|execution|>", "<|endofblock|>", "<|text|>", "<|endofblock|>"
)
FORMATS = {f.name: f for f in (MARKDOWN, MATHCODER)}


def block_format(solution_format: str | None, block_format: str | None = None) -> BlockFormat | None:
    """The block syntax of a solution format: None for chain-of-thought (``cot``), else the named
    block format (markdown by default); anything else is a one-line ``UserError``."""
    if solution_format in (None, "cot"):
        return None
    if solution_format != "code":
        raise UserError(f"--format {solution_format}: choose cot or code")
    name = block_format or "markdown"
    if name not in FORMATS:
        raise UserError(f"--block-format {name}: choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def grade_format(fmt: BlockFormat | None) -> str:
    """What the grader is told (``eval.score.grade_sample``): ``cot`` or the block format's name."""
    return fmt.name if fmt is not None else "cot"


@dataclass(frozen=True)
class Block:
    kind: str  # "text" | "code" | "execution"
    content: str
    marked: bool = True  # delimiters present (unmarked text lies between fenced blocks)
    closed: bool = True  # closing delimiter present


def parse(text: str, fmt: BlockFormat = MARKDOWN) -> list[Block]:
    """Split a solution into blocks (lossless; see module docstring)."""
    blocks: list[Block] = []
    i = 0
    openers = fmt.openers()
    while i < len(text):
        hits = [(text.find(tok, i), kind, tok) for kind, tok in openers]
        hits = [h for h in hits if h[0] >= 0]
        if not hits:
            blocks.append(Block("text", text[i:], marked=False))
            break
        start, kind, opener = min(hits, key=lambda h: (h[0], -len(h[2])))
        if start > i:
            blocks.append(Block("text", text[i:start], marked=False))
        body_start = start + len(opener)
        close = fmt.delimiters(kind)[1]
        end = text.find(close, body_start)
        if end < 0:
            blocks.append(Block(kind, text[body_start:], closed=False))
            break
        blocks.append(Block(kind, text[body_start:end]))
        i = end + len(close)
    return blocks


def render(blocks: list[Block], fmt: BlockFormat = MARKDOWN) -> str:
    """Inverse of ``parse``."""
    out = []
    for b in blocks:
        if not b.marked:
            out.append(b.content)
            continue
        opener, closer = fmt.delimiters(b.kind)
        out.append(opener + b.content + (closer if b.closed else ""))
    return "".join(out)


def pending_code(text: str, fmt: BlockFormat = MARKDOWN) -> str | None:
    """The code of a just-closed code block that has not been executed yet, else None."""
    blocks = [b for b in parse(text, fmt) if b.marked or b.content.strip()]
    if blocks and blocks[-1].kind == "code" and blocks[-1].closed:
        return blocks[-1].content
    return None


def final_text(text: str, fmt: BlockFormat = MARKDOWN) -> str:
    """Text after the last code / execution block (where the final answer is written)."""
    blocks = parse(text, fmt)
    tail = []
    for b in reversed(blocks):
        if b.kind != "text":
            break
        tail.append(b.content)
    return "".join(reversed(tail))


def last_execution(text: str, fmt: BlockFormat = MARKDOWN) -> str | None:
    for b in reversed(parse(text, fmt)):
        if b.kind == "execution" and b.content.strip() and b.content.strip() != EMPTY_OUTPUT:
            return b.content.strip()
    return None
