"""Steps of a solution, eligible prefixes, and the step-wise temperature ramp.

Step splitting (``split_steps``, at the step ends ``StepScanner`` finds; the steps always
concatenate back to the solution):

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
``temperature_for_step(i) = min(T0 + i * dT, Tmax)`` (reference: 1.1, 0.1, 1.4). The ramp
(``mlx_scdpo.generation.ramp``) counts generated steps with ``StepScanner``, the same definition
``split_steps`` cuts with: the temperature rises on the token after the one that ends a
step (the newline, or a block's closing delimiter); a blank line after a step end, a
newline inside display math or a fence, and execution outputs (inserted, not generated)
never start a step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eval.blocks import BlockFormat, parse, render

T0, DT, TMAX = 1.1, 0.1, 1.4

_BEGIN_PARTIAL = re.compile(r"\\(b(e(g(i(n(\{[a-zA-Z*]*)?)?)?)?)?)?")
_BEGIN = re.compile(r"\\begin\{([a-zA-Z*]+)\}\Z")
#: Chain-of-thought openers of a span never split (display math, code fences) and their closers.
_COT_SPANS = {"$$": "$$", "\\[": "\\]", "```": "```"}
#: Characters that start an opener or a closer, or may end a step: any other one only marks content.
_COT_SPECIAL = frozenset("\n$\\`")


def temperature_for_step(i: int, t0: float = T0, dt: float = DT, tmax: float = TMAX) -> float:
    """``min(t0 + i * dt, tmax)`` for the i-th generated step (0-based)."""
    return min(t0 + i * dt, tmax)


def _partial_suffix(s: str, is_partial) -> str:
    """The longest suffix of ``s`` that ``is_partial`` accepts ("" if none)."""
    for k in range(len(s), 0, -1):
        if is_partial(s[-k:]):
            return s[-k:]
    return ""


def _cot_opener_partial(s: str) -> bool:
    return any(op.startswith(s) and op != s for op in _COT_SPANS) or bool(_BEGIN_PARTIAL.fullmatch(s))


class StepScanner:
    """Where steps end, found one character at a time: the one definition of a step.

    ``split_steps`` cuts a solution where this scanner reports a step end, and the
    temperature ramp (``mlx_scdpo.generation.ramp``) counts the steps a generation has completed with
    it, so the two never disagree. ``feed(text)`` returns one ``(index, kind)`` per step
    completed in ``text`` (``index``: the character that completed it):

    * chain-of-thought: a step ends at the first newline (``unit="line"``) or the second
      newline of a blank line (``"paragraph"``) after some non-blank text since the last
      step end, unless it lies inside display math (``$$...$$``, ``\\[...\\]``,
      ``\\begin{env}...\\end{env}``) or a code fence (the first closer after the opener ends
      it; one never closed runs to the end);
    * code-integrated (``fmt``): a block (``eval.blocks.parse``) ends at its closing
      delimiter; unmarked text ends where the next block's opener completes, unless it is
      blank and follows another step (then it belongs to that step).

    ``generated`` counts completed steps other than execution outputs (inserted, not
    generated). ``key()`` is the whole state apart from the counts: equal keys react alike
    to any further text.
    """

    def __init__(self, style: str = "cot", fmt: BlockFormat | None = None, unit: str = "line"):
        if style != "cot" and fmt is None:
            raise ValueError("code-integrated steps need a block format")
        self.style, self.fmt, self.unit = style, fmt if style != "cot" else None, unit
        self.pos = 0
        self.steps = 0
        self.generated = 0
        self.tail = ""  # a marker begun but not complete
        self.span = None  # cot: the closer awaited; code: the kind of the open block
        self.content = False  # cot: non-blank text since the last step end; code: in the unmarked text
        self.newlines = 0  # cot paragraphs: newlines in the current blank run (0, 1, 2+)
        self.text_len = 0  # code: characters of unmarked text so far (0 or more, capped at 1)

    def key(self) -> tuple:
        return (self.span, self.tail, self.content, self.newlines, self.text_len, self.steps > 0)

    def copy(self) -> "StepScanner":
        new = StepScanner.__new__(StepScanner)
        new.__dict__.update(self.__dict__)
        return new

    def trigger_chars(self) -> set[str]:
        """Characters one of which every step-ending piece of text holds."""
        if self.fmt is None:
            return {"\n"}
        return {
            m[-1] for kind, opener in self.fmt.openers() for m in (opener, self.fmt.delimiters(kind)[1]) if m
        }

    def feed(self, text: str) -> list[tuple[int, str]]:
        events = []
        cot = self.fmt is None
        step = self._cot_char if cot else self._code_char
        for ch in text:
            if cot and not self.tail and ch not in _COT_SPECIAL:  # the common case, in short
                if not ch.isspace():
                    self.content, self.newlines = True, 0
                self.pos += 1
                continue
            kind = step(ch)
            if kind is not None:
                events.append((self.pos, kind))
                self.steps += 1
                self.generated += kind != "execution"
            self.pos += 1
        return events

    def _cot_char(self, ch: str) -> str | None:
        if self.span is not None:  # inside display math or a fence: only its closer matters
            s = self.tail + ch
            if s.endswith(self.span):
                self.span, self.tail = None, ""
            else:
                self.tail = _partial_suffix(s, lambda x: self.span.startswith(x))
            if not ch.isspace():
                self.content = True
                self.newlines = 0
            return None
        if ch == "\n":
            self.tail = ""
            self.newlines = min(self.newlines + 1, 2)
            ends = self.content and (self.unit == "line" or self.newlines == 2)
            if ends:
                self.content = False
                return "text"
            return None
        if ch.isspace():
            self.tail = ""
            return None
        self.content, self.newlines = True, 0
        s = self.tail + ch
        for opener, closer in _COT_SPANS.items():
            if s.endswith(opener):
                self.span, self.tail = closer, ""
                return None
        m = _BEGIN.search(s)
        if m:
            self.span, self.tail = f"\\end{{{m.group(1)}}}", ""
            return None
        self.tail = _partial_suffix(s, _cot_opener_partial)
        return None

    def _code_char(self, ch: str) -> str | None:
        fmt = self.fmt
        s = self.tail + ch
        if self.span is not None:  # inside a block: only its closer matters
            closer = fmt.delimiters(self.span)[1]
            if s.endswith(closer):
                kind, self.span, self.tail = self.span, None, ""
                return kind
            self.tail = _partial_suffix(s, lambda x: closer.startswith(x))
            return None
        for kind, opener in sorted(fmt.openers(), key=lambda o: -len(o[1])):
            if s.endswith(opener):  # the text before the opener (outside the marker) is complete
                self._commit(s[: len(s) - len(opener)])
                ended = self.text_len and (self.content or self.steps == 0)
                self.span, self.tail, self.content, self.text_len = kind, "", False, 0
                return "text" if ended else None
        self.tail = _partial_suffix(s, lambda x: any(op.startswith(x) for _, op in fmt.openers()))
        self._commit(s[: len(s) - len(self.tail)])  # characters that can no longer start an opener
        return None

    def _commit(self, text: str) -> None:
        if text:
            self.text_len = 1
            self.content = self.content or bool(text.strip())


def _split_cot(text: str, unit: str) -> list[str]:
    cuts = []
    for i, _ in StepScanner("cot", unit=unit).feed(text):
        end = i + 1  # the step keeps its newline(s) (paragraphs: all the blank run)
        while end < len(text) and (text[end] == "\n" if unit == "line" else text[end].isspace()):
            end += 1
        cuts.append(end)
    steps = [text[a:b] for a, b in zip([0] + cuts, cuts)]
    rest = text[cuts[-1] if cuts else 0 :]
    if rest:
        if steps and not rest.strip():
            steps[-1] += rest
        else:
            steps.append(rest)
    return steps


def _split_code(text: str, fmt: BlockFormat) -> tuple[list[str], list[str]]:
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


def split_steps(
    solution: str, style: str = "cot", fmt: BlockFormat | None = None, unit: str = "line"
) -> Steps:
    """Split a solution into steps (see module docstring); ``"".join(steps) == solution``."""
    if style == "cot":
        steps = _split_cot(solution, unit)
        return Steps(steps, ["text"] * len(steps))
    if fmt is None:
        raise ValueError("code-integrated splitting needs a block format")
    steps, kinds = _split_code(solution, fmt)
    return Steps(steps, kinds)


def step_style(fmt: BlockFormat | None) -> str:
    """The style of a solution format: "code" (blocks) with a block format, "cot" without."""
    return "cot" if fmt is None else "code"


def solution_steps(text: str, fmt: BlockFormat | None, unit: str = "line") -> Steps:
    """``split_steps`` of a solution in its own format (None: chain-of-thought, cut by ``unit``)."""
    return split_steps(text, step_style(fmt), fmt, unit)


def eligible_prefix_lengths(steps: Steps) -> list[int]:
    """Numbers of kept steps k that may end a prefix (see module docstring)."""
    return [k for k in range(1, len(steps) - 1) if steps.kinds[k - 1] != "code"]


def is_noisy(
    steps: Steps, fmt: BlockFormat | None = None, max_steps: int = 24, max_step_chars: int = 3000
) -> bool:
    """Reference noise filter: too many steps, an over-long step, or a stray block marker inside a block."""
    if len(steps) > max_steps or any(len(s) > max_step_chars for s in steps.steps):
        return True
    if fmt is not None:
        markers = {fmt.code_open, fmt.exec_open, fmt.text_open} - {""}
        for b in parse("".join(steps.steps), fmt):
            if not b.closed or any(m in b.content for m in markers):
                return True
    return False
