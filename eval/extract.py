"""Answer extraction from a full model completion.

The order is fixed and documented (first rule that yields an answer wins):

1. Reasoning models: only the text after the last closing ``</think>`` is read
   (DeepSeek-R1 / Qwen3 convention).
2. Invented few-shot continuations are cut: everything from the first
   ``\\n\\nQuestion:`` / ``\\n\\nProblem:`` on (lm-eval's GSM8K / Minerva stop strings).
3. The last balanced ``\\boxed{...}`` / ``\\fbox{...}`` (also ``\\boxed 5``), as in
   Hendrycks et al.'s ``last_boxed_only_string``. When the final line holds several
   boxes (``\\boxed{2}, \\boxed{3}``) they form one answer ``2, 3``.
4. GSM8K's ``#### N`` (the dataset's own answer marker).
5. Minerva's ``Final Answer: The final answer is X. I hope it is correct.``,
   then ``The answer is X`` (chain-of-thought prompting, Wei et al.), then ``Answer: X``.
6. The last execution-output block of a code-integrated solution
   (```` ```output ```` fences, ToRA / Qwen-TIR; or MathCoder's ``<|execution|>``).
7. The last number in the text (lm-eval's GSM8K "flexible-extract" fallback).

Nothing found gives ``None``; no input raises.
"""

from __future__ import annotations

import re

from eval.blocks import FORMATS, final_text, last_execution

_THINK_END = "</think>"
_FEWSHOT_CUTS = ("\n\nQuestion:", "\n\nProblem:")
_BOX_MACROS = ("\\boxed", "\\fbox")

# lm-eval gsm8k "strict-match": r"#### (\-?[0-9\.\,]+)"
_GSM8K_STRICT = re.compile(r"####\s*(\-?[0-9\.\,]+)")
_GSM8K_MARKER = re.compile(r"####\s*(.+)")
# Minerva (Lewkowycz et al. 2022) answer phrase.
_FINAL_ANSWER = re.compile(
    r"final answer is\s*:?\s*(.+?)(?:\.?\s*I hope it is correct|\n|$)", re.IGNORECASE | re.DOTALL
)
_ANSWER_IS = re.compile(r"the answer is\s*:?\s*(.+?)(?:\n|$)", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"(?:^|\n)\s*\**answer\**\s*:\s*(.+?)(?:\n|$)", re.IGNORECASE)
_OUTPUT_FENCE = re.compile(r"```output\n(.*?)(?:```|$)", re.DOTALL)
_MATHCODER_EXEC = re.compile(r"<\|execution\|>(.*?)(?:<\|endofblock\|>|$)", re.DOTALL)
# lm-eval gsm8k "flexible-extract": r"(-?[$0-9.,]{2,})|(-?[0-9]+)", last match.
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def strip_think(text: str) -> str:
    """Text after the last ``</think>``; the whole text when there is none."""
    i = text.rfind(_THINK_END)
    return text if i < 0 else text[i + len(_THINK_END) :]


def cut_fewshot(text: str) -> str:
    """Cut an invented next few-shot example (``\\n\\nQuestion:`` / ``\\n\\nProblem:``)."""
    cut = min((i for i in (text.find(s) for s in _FEWSHOT_CUTS) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _read_braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the balanced ``{...}`` opening at ``text[start]`` and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif c == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def find_boxed(text: str) -> list[tuple[int, str]]:
    """All ``\\boxed``/``\\fbox`` contents with their start offsets, in order.

    Follows Hendrycks' ``last_boxed_only_string``: a balanced brace group, or the
    ``\\boxed 5`` form which runs to the next ``$`` or whitespace. Unbalanced boxes
    (a truncated completion) are skipped.
    """
    found = []
    pattern = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
    for m in pattern.finditer(text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            got = _read_braced(text, j)
            if got is not None:
                found.append((m.start(), got[0].strip()))
        elif j > m.end():  # "\boxed 5"
            k = j
            while k < len(text) and not text[k].isspace() and text[k] != "$":
                k += 1
            if k > j:
                found.append((m.start(), text[j:k].rstrip(".,")))
    return found


def last_boxed(text: str) -> str | None:
    """The last boxed answer; several boxes on the final boxed line are joined by ``, ``."""
    boxes = find_boxed(text)
    if not boxes:
        return None
    last_start = boxes[-1][0]
    line_start = text.rfind("\n", 0, last_start) + 1
    same_line = list(dict.fromkeys(b for start, b in boxes if start >= line_start))
    return ", ".join(same_line) if len(same_line) > 1 else boxes[-1][1]


def _clean_phrase(ans: str) -> str | None:
    ans = ans.strip().strip("*").strip()
    boxed = last_boxed(ans)
    if boxed is not None:
        return boxed
    ans = ans.rstrip(".").strip()
    if len(ans) >= 2 and ans[0] == "$" and ans[-1] == "$":
        ans = ans.strip("$").strip()
    return ans or None


def extract_gsm8k_strict(text: str) -> str | None:
    """lm-eval's GSM8K strict match: the number after the first ``####``."""
    m = _GSM8K_STRICT.search(text)
    return m.group(1).rstrip(".").rstrip(",") if m else None


def last_execution_output(text: str) -> str | None:
    """Content of the last code-execution output block, stripped."""
    outs = _OUTPUT_FENCE.findall(text) or _MATHCODER_EXEC.findall(text)
    for out in reversed(outs):
        if out.strip():
            return out.strip()
    return None


def last_number(text: str) -> str | None:
    """The last number in the text, thousands separators kept for normalization."""
    nums = _NUMBER.findall(text)
    return nums[-1].rstrip(".,") if nums else None


def extract_answer(completion: str, task: str = "math") -> str | None:
    """Extract the final answer of ``completion`` following the module's documented order.

    ``task`` ("gsm8k", "math" or "math500") is accepted for API symmetry: the order is
    the same for every task so a verdict never depends on which prompt style was used.
    """
    if not isinstance(completion, str) or not completion.strip():
        return None
    text = cut_fewshot(strip_think(completion))
    boxed = last_boxed(text)
    if boxed:
        return boxed
    m = _GSM8K_MARKER.search(text)
    if m and m.group(1).strip():
        return _clean_phrase(m.group(1))
    for pattern in (_FINAL_ANSWER, _ANSWER_IS, _ANSWER_COLON):
        hits = pattern.findall(text)
        if hits:
            got = _clean_phrase(hits[-1])
            if got:
                return got
    out = last_execution_output(text)
    if out is not None:
        return out.splitlines()[-1].strip()
    return last_number(text)


def extract_code_answer(completion: str, block_format: str = "markdown") -> str | None:
    """Answer of a code-integrated solution: the last ``\\boxed{}`` of the final text block,
    then the last execution output (SCDPO reference), then the general order above."""
    if not isinstance(completion, str) or not completion.strip():
        return None
    fmt = FORMATS[block_format]
    text = cut_fewshot(strip_think(completion))
    boxed = last_boxed(final_text(text, fmt))
    if boxed:
        return boxed
    out = last_execution(text, fmt)
    if out is not None:
        return out.splitlines()[-1].strip()
    return extract_answer(text)
