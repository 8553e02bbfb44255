"""Answer extraction from a full model completion.

The order is fixed and documented (first rule that yields an answer wins):

1. Reasoning models: only the text after the last closing ``</think>`` is read
   (DeepSeek-R1 / Qwen3 convention; lm-eval's ``think_end_token``).
2. Invented few-shot continuations are cut: everything from the first
   ``\\n\\nQuestion:`` / ``\\n\\nProblem:`` on (lm-eval's GSM8K / Minerva stop strings).
3. The last balanced ``\\boxed{...}`` / ``\\fbox{...}`` (also ``\\boxed 5``), as in Hendrycks
   et al.'s ``last_boxed_only_string`` (copied by lm-eval's ``minerva_math/utils.py`` and
   Qwen2.5-Math's ``parser.py``). Boxes right before it that are separated from it only by
   connectors (``,``, ``and``, ``or``, ``\\quad``, ``\\text{ and }``, ``x =``) are one answer
   list (``\\boxed{-2} \\text{ and } \\boxed{1}`` is ``-2, 1``, Math-Verify's ``test_all.py``
   cases); boxes separated by prose are earlier attempts or sub-answers and are dropped
   (``\\boxed{7}, no: the correct count is \\boxed{8}`` is ``8``). An answer phrase (rule 5)
   after the last box that holds a number or formula overrides it (Math-Verify's
   ``test_math_extraction_additional_cases``: boxed steps, then ``Final Answer: ...``).
4. GSM8K's ``#### N`` (the dataset's own answer marker; the last one counts).
5. The last answer phrase: Minerva's ``Final Answer: The final answer is X. I hope it is
   correct.`` (Lewkowycz et al. 2022, lm-eval ``get_unnormalized_answer``), ``the answer is X``
   (chain-of-thought prompting, Wei et al. 2022; Qwen2.5-Math ``"he answer is"``) and
   ``Answer: X``. When ``X`` opens with math (``$..$``, ``\\(..\\)``, ``\\[..\\]``, ``$$..$$``,
   also on the next line) the whole formula is the answer.
6. The last execution-output block of a code-integrated solution
   (```` ```output ```` fences, ToRA / Qwen-TIR; or MathCoder's ``<|execution|>``).
7. Plain text ``x = 3 or x = -3`` at the end, also ``$x = 3$ or $x = -3$`` (``3, -3``; this
   package's rule for issue 10's plain-text alternatives, ``eval.phrases``).
8. The last inline/display formula when no bare number follows it (Math-Verify's
   ``LatexExtractionConfig`` reads the last LaTeX environment), its last ``=`` side
   (``\\(3 \\times 4 = 12\\)`` is ``12``; an equation named as such stays whole); when the
   last formula is a condition (``is $9$ when $x = 3$``) the formula before it (both this
   package's rules, from the fresh batches in ``tests/extraction_table.py``).
9. The last number in the text (Qwen2.5-Math's ``use_last_number``; lm-eval's GSM8K
   ``flexible-extract`` idea, whose exact regex lives in ``eval.lm_eval_filters``).

Every answer is cleaned the same way (``clean_answer``): math delimiters and a final period
dropped, a label ``p(8) =`` / ``(p,q,r) =`` before the value dropped (not around an
inequality), and alternatives joined by ``and``/``or``/``;``/``\\quad`` become a list ``a, b``.
Nothing found gives ``None``; no input raises.
"""

from __future__ import annotations

import re

from eval.blocks import FORMATS, final_text, last_execution
from eval.phrases import answer_sentence, plain_alternatives

_THINK_END = "</think>"
_FEWSHOT_CUTS = ("\n\nQuestion:", "\n\nProblem:")

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_GSM8K_MARKER = re.compile(r"####[ \t]*([^\n]*)")
# Answer phrases, case-insensitive; the LAST occurrence of any of them wins.
_ANCHORS = re.compile(
    r"final answer is\s*:?"  # Minerva / lm-eval minerva_math
    r"|the answer is\s*:?"  # Wei et al. CoT; Qwen2.5-Math "he answer is"
    # "Answer:", "**Final Answer:**"
    r"|(?:^|\n)[ \t]*(?:[*#]+[ \t]*)?(?:final[ \t]+)?answer[ \t]*(?:\*+[ \t]*)?:[ \t]*\**",
    re.IGNORECASE,
)
_HOPE = re.compile(r"I hope it is correct", re.IGNORECASE)
_OUTPUT_FENCE = re.compile(r"```output\n(.*?)(?:```|$)", re.DOTALL)
_MATHCODER_EXEC = re.compile(r"<\|execution\|>(.*?)(?:<\|endofblock\|>|$)", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# Math spans, in the four delimiters Math-Verify's LaTeX extraction reads.
_MATH_OPEN = re.compile(r"(?<!\\)\$\$|\\\[|\\\(|(?<!\\)\$")
_MATH_CLOSE = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
_OPENERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))

# Text allowed between two boxes of one answer list.
_LIST_GAP = re.compile(
    r"(?:\s|\$|\\[()\[\]]|[,;.:]|\\q?quad|\\[,;:! ]|&|\\\\|\\(?:text|textnormal|mbox|mathrm)\{\s*(?:and|or)?\s*,?\s*\}"
    r"|\band\b|\bor\b|(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\s*=)*"
)
# Connectors that join alternatives inside one answer (top level only).
_ALTERNATIVE = re.compile(
    r"(?<!\s)(?:\s*(?:,\s*)?(?:\\(?:text|textnormal|mbox|mathrm)\{\s*(?:,\s*)?(?:and|or)\s*\}|\\q?quad|;"
    r"|(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z])))+\s*"
)
# Relations other than "=": never split an answer around "=" when one is present.
_RELATION = re.compile(
    r"[<>≤≥≠]|\\(?:le|ge|leq|geq|lt|gt|ne|neq|leqslant|geqslant|approx|sim|equiv)(?![a-zA-Z])"
)
# A label before "=": x, a_1, p(8), f(-1), \theta, |AB|, \angle ABC, (p,q,r), AB, m\angle A.
_LABEL = re.compile(
    r"^(?:m?\\angle\s*[A-Z]{1,3}|\|[A-Z]{1,3}\||[A-Z]{2,3}"
    r"|\\?[a-zA-Z]+(?:_\{?\w+\}?)?'*(?:\s*\([^()=]*\))?"
    r"|\((?:\s*\\?[a-zA-Z]+(?:_\{?\w+\}?)?\s*,)+\s*\\?[a-zA-Z]+(?:_\{?\w+\}?)?\s*\))$"
)
# Prose that introduces a condition rather than a value: "..., attained at $x = 1$".
_CONDITION = re.compile(
    r"^[\s,;]*(?:(?:which\s+is\s+)?(?:attained|achieved|reached|occurring|obtained)\s+)?"
    r"(?:at|when|for|where|if|in|on|over|within)\s*$",
    re.I,
)
_TRAILING_CLAUSE = re.compile(
    r"(?:,\s+|(?<![\s,])\s+)(?:because|since|which|as|so that|where|not|rather than|instead of)\b.*$",
    re.DOTALL,
)


def strip_think(text: str) -> str:
    """Text after the last ``</think>``; the whole text when there is none."""
    i = text.rfind(_THINK_END)
    return text if i < 0 else text[i + len(_THINK_END) :]


def cut_fewshot(text: str) -> str:
    """Cut an invented next few-shot example (``\\n\\nQuestion:`` / ``\\n\\nProblem:``)."""
    cut = min((i for i in (text.find(s) for s in _FEWSHOT_CUTS) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each balanced ``{`` -> index of its ``}`` (``\\{`` and ``\\}`` are text), in one pass:
    linear even on hostile input such as ``"\\boxed{" * 20000``."""
    pairs, stack = {}, []
    for i, c in enumerate(text):
        if c not in "{}" or i and text[i - 1] == "\\":
            continue
        if c == "{":
            stack.append(i)
        elif stack:
            pairs[stack.pop()] = i
        # an unmatched "}" closes nothing (as Hendrycks' last_boxed_only_string, which stops at depth 0)
    return pairs


def _boxes(text: str) -> list[tuple[int, int, int, int]]:
    """(start, end, content_start, content_end) of every ``\\boxed``/``\\fbox``, in order.

    Hendrycks' ``last_boxed_only_string``: a balanced brace group, or the ``\\boxed 5`` form
    which runs to the next ``$`` or whitespace (its trailing ``.``/``,`` left out). Unbalanced
    boxes (a truncated completion) are skipped. Offsets, not copies: nested boxes would make
    copying every content quadratic (``"\\boxed{" * 20000 + "}" * 20000``); ``_content`` reads one.
    """
    found = []
    pairs = None
    for m in _BOX.finditer(text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            pairs = _brace_pairs(text) if pairs is None else pairs
            if j in pairs:
                found.append((m.start(), pairs[j] + 1, j + 1, pairs[j]))
        elif j > m.end():  # "\boxed 5"
            k = j
            while k < len(text) and not text[k].isspace() and text[k] != "$":
                k += 1
            if k > j:
                end = k
                while end > j and text[end - 1] in ".,":
                    end -= 1
                found.append((m.start(), k, j, end))
    return found


def _content(text: str, box: tuple[int, int, int, int]) -> str:
    return text[box[2] : box[3]].strip()


_NONBLANK = re.compile(r"\S")


def find_boxed(text: str) -> list[tuple[int, str]]:
    """All ``\\boxed``/``\\fbox`` contents with their start offsets, in order."""
    return [(box[0], _content(text, box)) for box in _boxes(text)]


def last_boxed(text: str) -> str | None:
    """The last boxed answer, with the boxes listed right before it (module rule 3) joined by ``, ``."""
    boxes = [b for b in _boxes(text) if _NONBLANK.search(text, b[2], b[3])]  # a non-empty content
    if not boxes:
        return None
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        gap = text[prev[1] : group[0][0]]
        if prev[1] > group[0][0] or len(gap) > 120 or not _LIST_GAP.fullmatch(gap):  # nested: not a list
            break
        group.insert(0, prev)
    return ", ".join(dict.fromkeys(_content(text, b) for b in group))


def _split_top(s: str, pattern: re.Pattern) -> list[str]:
    """Split ``s`` at matches of ``pattern`` that lie outside any bracket or brace."""
    depth, before, after = 0, [], []
    for c in s:
        before.append(depth)
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        after.append(depth)
    parts, last = [], 0
    for m in pattern.finditer(s):
        if m.end() > m.start() and before[m.start()] == 0 and after[m.end() - 1] == 0:
            parts.append(s[last : m.start()])
            last = m.end()
    parts.append(s[last:])
    return parts


def _rhs(s: str, any_lhs: bool = False) -> str:
    """The value after a label: ``p(8) = \\frac{3}{56}`` -> ``\\frac{3}{56}``.

    The last side is taken after a label or a computation with no letters (``3! \\times 5! =
    720``); with ``any_lhs`` (a formula read from running text: ``\\frac{1}{3}\\pi r^2 h = 12\\pi``)
    after any left side unless the value is ``0``. Kept whole when it holds another relation
    (``-2 \\le x = ...``), when the left side is an expression (``x + 2y = 4`` is an equation),
    or when the value side is empty.
    """
    if _RELATION.search(s):
        return s
    sides = [p.strip() for p in _split_top(s, re.compile(r"(?<![=!<>\\])=(?!=)"))]
    if len(sides) < 2 or not sides[-1]:
        return s
    if len(sides) > 2 and len(_split_top(s, re.compile(","))) > 1:  # "x=2, y=3": several labelled values
        return s
    lhs = re.sub(r"\\left|\\right|\\!|\\,", "", sides[0]).strip()
    if _LABEL.match(lhs) or not re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", lhs)):
        return sides[-1]  # a label, or a computation "3! \times 5! = 720"
    if any_lhs and sides[-1] != "0":  # "x^2 - 5x + 6 = 0" is an equation, not a value
        return sides[-1]
    return s


def _mathy(part: str) -> bool:
    return bool(re.search(r"[\d\\]", part)) or len(part.strip()) <= 3


def strip_math(s: str) -> str:
    """Drop surrounding ``$``/``$$``/``\\(..\\)``/``\\[..\\]``, quotes, a final period, and ``**``."""
    s = s.strip().strip("*").strip()
    s = re.sub(r'^(?:\\?"|“)', "", s).strip()  # quoted: "\"$12$\"" (Math-Verify suite)
    s = re.sub(r'(?:\\?"|”)$', "", s).strip()
    changed = True
    while changed and s:
        changed = False
        for open_, close in _OPENERS:
            inner = s[len(open_) : -len(close)]
            if (
                len(s) >= len(open_) + len(close)
                and s.startswith(open_)
                and s.endswith(close)
                and open_ not in inner
                and close not in inner
            ):  # not "$12$ and $13$"
                s, changed = inner.strip(), True
                break
        stripped = s.rstrip(" \t\n.").strip("*").strip()
        if stripped != s:
            s, changed = stripped, True
    return s


def clean_answer(ans: str | None, any_lhs: bool = False) -> str | None:
    """Delimiters off, alternatives joined as ``a, b``, labels before ``=`` dropped."""
    if ans is None:
        return None
    s = strip_math(ans)
    parts = [p.strip().strip(",").strip() for p in _split_top(s, _ALTERNATIVE)]
    if len(parts) > 1 and all(p and _mathy(p) for p in parts):
        s = ", ".join(dict.fromkeys(_rhs(strip_math(p), any_lhs) for p in parts))
    else:
        s = _rhs(s, any_lhs)
    return s or None


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of ``$$..$$``, ``\\[..\\]``, ``\\(..\\)``, ``$..$`` spans, left to right
    (the delimiters Math-Verify's LaTeX extraction reads). ``\\$`` is a dollar sign, not a
    delimiter. Linear time: an opener with no closer after it disables that kind."""
    spans, i, dead = [], 0, set()
    while True:
        m = _MATH_OPEN.search(text, i)
        if m is None:
            return spans
        op = m.group(0)
        if op in dead:
            i = m.end()
            continue
        close = _MATH_CLOSE[op]
        j = text.find(close, m.end())
        while j >= 0 and close[0] == "$" and text[j - 1] == "\\":
            j = text.find(close, j + 1)
        if j < 0:
            dead.add(op)
            i = m.end()
            continue
        content = text[m.end() : j]
        if content.strip():
            spans.append((m.start(), j + len(close), content))
        i = j + len(close)


def _phrase(rest: str) -> str | None:
    """The answer right after an anchor: a formula that opens it (possibly on the next lines),
    else the first line up to the sentence end."""
    hope = _HOPE.search(rest)
    if hope:
        rest = rest[: hope.start()].rstrip().rstrip(".")
    rest = rest.lstrip(" \t:*\n")
    if re.match(r"not\b", rest):  # "the answer is not 5; it is 6": no answer here
        return None
    spans = math_spans(rest)
    if spans and spans[0][0] == 0:
        return spans[0][2]
    line = rest.split("\n", 1)[0]
    boxed = last_boxed(line)
    if boxed is not None:
        return boxed
    line = re.split(r"\.\s+(?=[A-Z])", line, maxsplit=1)[0]
    line = _TRAILING_CLAUSE.sub("", line)
    line = answer_sentence(line)
    spans = math_spans(line)
    prose = "".join(
        line[a:b] for a, b in zip([0] + [e for _, e, _ in spans], [st for st, _, _ in spans] + [len(line)])
    )
    words = set(re.findall(r"[a-zA-Z]{3,}", prose)) - {"and", "text"}
    if spans and words and not re.search(r"\d", prose):
        # "the larger of the two: $x=1$": the formula, not the prose around it
        return spans[-1][2]
    return line.strip() or None


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


def _last_formula(text: str, spans: list[tuple[int, int, str]]) -> str | None:
    """The last math span when no bare number follows it; dollar amounts with prose in
    between (``$5 and $7``) are not formulas."""
    if not spans:
        return None
    _, end, content = spans[-1]
    if len(spans) > 1:
        gap = text[spans[-2][1] : spans[-1][0]]
        if _CONDITION.search(gap) and "\n" not in gap and not _NUMBER.search(gap):
            _, _, content = spans[-2]  # "is $2\sqrt{2}$, attained at $x=\sqrt{2}$": the value, not where
    words = re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}", re.sub(r"\\[a-zA-Z]+(\{[^{}]*\})?", "", content))
    if _NUMBER.search(text[end:]) or words:
        return None
    return content.strip() or None


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
        # A Minerva-style answer phrase written after the last box is the later answer
        # (lm-eval's minerva_math reads only that phrase); prose after a box is not.
        after = [m for m in _ANCHORS.finditer(text) if m.start() >= _boxes(text)[-1][1]]
        for m in reversed(after):
            got = clean_answer(_phrase(text[m.end() :]))
            if got and re.search(r"[\d\\]", got):
                return got
        return clean_answer(boxed)
    markers = [m for m in _GSM8K_MARKER.findall(text) if m.strip()]
    if markers:
        inner = list(_ANCHORS.finditer(markers[-1]))  # "#### The answer is 42"
        got = clean_answer(_phrase(markers[-1][inner[-1].end() :] if inner else markers[-1]))
        if got:
            return got
    anchors = list(_ANCHORS.finditer(text))
    for m in reversed(anchors):
        got = clean_answer(_phrase(text[m.end() :]))
        if got:
            return got
    out = last_execution_output(text)
    if out is not None:
        return out.splitlines()[-1].strip()
    got = plain_alternatives(text)
    if got:
        return clean_answer(got, any_lhs=True)
    spans = math_spans(text)
    got = _last_formula(text, spans)
    if got:
        # "the equation of the circle is \[(x-1)^2 + (y+2)^2 = 9\]": the equation is the answer
        before = text[max(0, spans[-1][0] - 80) : spans[-1][0]]
        equation = re.search(r"equation|line|plane|circle|parabola", before, re.I)
        return clean_answer(got, any_lhs=not equation)
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
        return clean_answer(boxed)
    out = last_execution(text, fmt)
    if out is not None:
        return out.splitlines()[-1].strip()
    return extract_answer(text)
