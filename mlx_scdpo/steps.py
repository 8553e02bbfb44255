"""Steps of a solution, eligible prefixes, and the step-wise temperature ramp.

Step splitting (``split_steps``; the steps always concatenate back to the solution):

* chain-of-thought: a step is a line (``unit="line"``) or a paragraph (``"paragraph"``,
  split at blank lines), each keeping its trailing newline(s). A display-math environment
  (``$$...$$``, ``\\[...\\]``, ``\\begin{...}...\\end{...}``) or a code fence is never split.
  The SCDPO paper gives no rule for chain-of-thought; lines are the natural unit.
* code-integrated: a step is a block (text, code or execution output; SCDPO reference).
  Whitespace between blocks joins the block before it.

Prefixes (``eligible_prefix_lengths``): keep the first k steps with k >= 1; the last two
steps are never a prefix end (reference); a code-integrated prefix ends after a text or
an execution block, never right after a code block.

Temperature ramp: the i-th generated step (0-based) is sampled at
``temperature_for_step(i) = min(T0 + i * dT, Tmax)`` (reference: 1.1, 0.1, 1.4). A step
ends with the token that contains its boundary (a newline for chain-of-thought, a block
fence for code-integrated solutions); a boundary right after a boundary (a blank line)
does not start a new step; execution outputs are inserted, not generated, so they never
count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eval.blocks import BlockFormat, parse

T0, DT, TMAX = 1.1, 0.1, 1.4

_MATH_OPEN = re.compile(r"\$\$|\\\[|\\begin\{([a-zA-Z*]+)\}|```")


def temperature_for_step(i: int, t0: float = T0, dt: float = DT, tmax: float = TMAX) -> float:
    """``min(t0 + i * dt, tmax)`` for the i-th generated step (0-based)."""
    return min(t0 + i * dt, tmax)


def _unsplittable_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of display math and code fences (never split inside)."""
    spans, i = [], 0
    while True:
        m = _MATH_OPEN.search(text, i)
        if not m:
            return spans
        tok = m.group(0)
        if tok == "$$":
            close = "$$"
        elif tok == "\\[":
            close = "\\]"
        elif tok == "```":
            close = "```"
        else:
            close = f"\\end{{{m.group(1)}}}"
        end = text.find(close, m.end())
        end = len(text) if end < 0 else end + len(close)
        spans.append((m.start(), end))
        i = end


def _split_cot(text: str, unit: str) -> list[str]:
    sep = re.compile(r"\n+" if unit == "line" else r"\n\s*\n\s*")
    spans = _unsplittable_spans(text)
    steps, start = [], 0
    for m in sep.finditer(text):
        cut = m.end()
        if any(a < m.start() < b for a, b in spans):
            continue
        if text[start:m.start()].strip():
            steps.append(text[start:cut])
            start = cut
    if start < len(text):
        if steps and not text[start:].strip():
            steps[-1] += text[start:]
        else:
            steps.append(text[start:])
    return steps


def _split_code(text: str, fmt: BlockFormat) -> tuple[list[str], list[str]]:
    from eval.blocks import render

    steps, kinds = [], []
    for b in parse(text, fmt):
        raw = render([b], fmt)
        if not b.marked and not b.content.strip() and steps:
            steps[-1] += raw  # whitespace between blocks belongs to the block before
            continue
        steps.append(raw)
        kinds.append(b.kind)
    return steps, kinds


@dataclass
class Steps:
    steps: list[str]
    kinds: list[str]  # "text" for chain-of-thought steps

    def __len__(self) -> int:
        return len(self.steps)


def split_steps(solution: str, style: str = "cot", fmt: BlockFormat | None = None, unit: str = "line") -> Steps:
    """Split a solution into steps (see module docstring); ``"".join(steps) == solution``."""
    if style == "cot":
        steps = _split_cot(solution, unit)
        return Steps(steps, ["text"] * len(steps))
    if fmt is None:
        raise ValueError("code-integrated splitting needs a block format")
    steps, kinds = _split_code(solution, fmt)
    return Steps(steps, kinds)


def eligible_prefix_lengths(steps: Steps) -> list[int]:
    """Numbers of kept steps k that may end a prefix (see module docstring)."""
    return [k for k in range(1, len(steps) - 1) if steps.kinds[k - 1] != "code"]


def is_noisy(steps: Steps, fmt: BlockFormat | None = None, max_steps: int = 24, max_step_chars: int = 3000) -> bool:
    """Reference noise filter: too many steps, an over-long step, or a stray block marker inside a block."""
    if len(steps) > max_steps or any(len(s) > max_step_chars for s in steps.steps):
        return True
    if fmt is not None:
        markers = {fmt.code_open, fmt.exec_open, fmt.text_open} - {""}
        for b in parse("".join(steps.steps), fmt):
            if not b.closed or any(m in b.content for m in markers):
                return True
    return False


def boundary_chars(style: str, fmt: BlockFormat | None = None) -> tuple[str, ...]:
    """Substrings whose appearance in a token ends a generated step."""
    if style == "cot":
        return ("\n",)
    return tuple({fmt.code_open.strip(), fmt.code_close.strip(), fmt.text_close.strip()} - {""})


def step_temperatures(generated_tokens: list[str], style: str = "cot", fmt: BlockFormat | None = None,
                      t0: float = T0, dt: float = DT, tmax: float = TMAX) -> list[float]:
    """Temperature used for each generated step, from the generated tokens' texts (mirrors the ramp)."""
    marks = boundary_chars(style, fmt)
    temps, i, open_step = [], 0, False
    for piece in generated_tokens:
        is_boundary = any(m in piece for m in marks)
        if is_boundary and not open_step:
            continue  # a blank line belongs to the step before it
        if not open_step:
            temps.append(temperature_for_step(i, t0, dt, tmax))
            open_step = True
        if is_boundary:
            i += 1
            open_step = False
    return temps
