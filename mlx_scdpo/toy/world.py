"""A toy world where SCDPO can be run end to end on a laptop CPU in minutes.

Problems are seeded multi-step arithmetic: first ``a * b`` (a, b in 2..9), then 1-2 more
operations (``+ k``, ``- k`` with k in 1..9, ``* k`` with k in 2..3, ``/ k`` with k in 2..5),
every intermediate value an integer in 0..99 (the compact form trained best in the
first feasibility trial, ``TOYWORLD_NOTES.md``). Solutions have one step per line::

    Q: 6 * 7, + 5, / 3
    Step 1: 6 * 7 = 42
    Step 2: 42 + 5 = 47
    ...
    The answer is \\boxed{47}.

The generator knows the true value of every step, so the first wrong step of any
solution is known exactly (``first_wrong_step``), which the credit-assignment analysis
uses. Train and test problems are disjoint (test problems are filtered out of train).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

OPS = ("+", "-", "*", "/")
CHARSET = ["\n"] + [chr(c) for c in range(32, 127)]  # printable ASCII: every digit its own token
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
#: The user turn's first line is the question; the rest (the boxed instruction) is not shown
#: to the toy model, which was trained on this compact format.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}Q: "
    "{{ message['content'].split('\\n')[0] }}\n{% else %}{{ message['content'] }}<|im_end|>\n"
    "{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class ToyProblem:
    a: int
    b: int
    ops: tuple[tuple[str, int], ...]

    @property
    def question(self) -> str:
        return f"{self.a} * {self.b}" + "".join(f", {op} {k}" for op, k in self.ops)

    def values(self) -> list[int]:
        """True value after each step."""
        v = self.a * self.b
        out = [v]
        for op, k in self.ops:
            v = apply(v, op, k)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def solution(self) -> str:
        vals = self.values()
        lines = [f"Step 1: {self.a} * {self.b} = {vals[0]}"]
        for i, ((op, k), v) in enumerate(zip(self.ops, vals[1:]), 2):
            lines.append(f"Step {i}: {vals[i - 2]} {op} {k} = {v}")
        lines.append(f"The answer is \\boxed{{{self.answer}}}.")
        return "\n".join(lines)

    def code_solution(self) -> str:
        """The code-integrated variant (markdown fences)."""
        vals = self.values()
        parts = [
            f"Multiply first.\n```python\nv = {self.a} * {self.b}\nprint(v)\n```\n```output\n{vals[0]}\n```\n"
        ]
        for (op, k), v in zip(self.ops, vals[1:]):
            pyop = "//" if op == "/" else op
            parts.append(
                f"Apply {op} {k}.\n```python\nv = v {pyop} {k}\nprint(v)\n```\n```output\n{v}\n```\n"
            )
        parts.append(f"The answer is \\boxed{{{self.answer}}}.")
        return "".join(parts)


def apply(v: int, op: str, k: int) -> int:
    return {"+": v + k, "-": v - k, "*": v * k, "/": v // k}[op]


def _valid_ops(rng: random.Random, v: int) -> tuple[str, int]:
    while True:
        op = rng.choice(OPS)
        k = rng.randint(1, 9) if op in "+-" else rng.randint(2, 3) if op == "*" else rng.randint(2, 5)
        if op == "/" and v % k:
            continue
        w = apply(v, op, k)
        if 0 <= w <= 99:
            return op, k


def make_problem(rng: random.Random, min_ops: int = 1, max_ops: int = 2) -> ToyProblem:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    v, ops = a * b, []
    for _ in range(rng.randint(min_ops, max_ops)):
        op, k = _valid_ops(rng, v)
        ops.append((op, k))
        v = apply(v, op, k)
    return ToyProblem(a, b, tuple(ops))


def make_splits(n_train: int, n_test: int, seed: int = 0, min_ops: int = 1, max_ops: int = 2):
    """Disjoint train / test problems (test drawn first, then excluded from train)."""
    rng = random.Random(seed)
    test, seen = [], set()
    while len(test) < n_test:
        p = make_problem(rng, min_ops, max_ops)
        if p.question not in seen:
            seen.add(p.question)
            test.append(p)
    train = []
    rng = random.Random(seed + 1)
    while len(train) < n_train:
        p = make_problem(rng, min_ops, max_ops)
        if p.question not in seen:
            train.append(p)
    return train, test


#: Largest test and validation splits; smaller ones are prefixes of these (same problems
#: whatever ``n_test`` a run asks for), and training problems never come from them.
MAX_TEST, MAX_VALID = 4000, 1000
#: The two settings of the experiment: ``(min_steps, max_steps)``.
SETTINGS = {"short": (2, 3), "long": (4, 6)}
#: The 256 test problems the previous embedded model was selected on (``make_splits(0, 256)``):
#: kept out of today's validation and test splits so that selection cannot touch them.
_LEGACY_TEST = 256


@dataclass
class ToySplits:
    train: list[ToyProblem]
    valid: list[ToyProblem]
    test: list[ToyProblem]


def _draw(rng: random.Random, n: int, min_ops: int, max_ops: int, exclude: set[str], unique: bool = True):
    out, seen = [], set()
    for _ in range(200 * n + 1000):  # bounded: a tiny step range may not hold n distinct problems
        if len(out) >= n:
            break
        p = make_problem(rng, min_ops, max_ops)
        if p.question in exclude or (unique and p.question in seen):
            continue
        seen.add(p.question)
        out.append(p)
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct toy problems of this size could be drawn (asked for {n})")
    return out


@lru_cache(maxsize=8)
def held_out(min_steps: int, max_steps: int) -> tuple[tuple[ToyProblem, ...], tuple[ToyProblem, ...]]:
    """The full test and validation splits of one step range (``MAX_TEST``, ``MAX_VALID`` problems).

    Each range has its own fixed streams, so the splits do not depend on any run's seed, and
    the legacy 256-problem test set of the first embedded model is excluded from both.
    """
    min_ops, max_ops = min_steps - 1, max_steps - 1
    legacy = {p.question for p in make_splits(0, _LEGACY_TEST, seed=0)[1]}
    test = _draw(random.Random(f"test/{min_steps}-{max_steps}"), MAX_TEST, min_ops, max_ops, legacy)
    valid = _draw(
        random.Random(f"valid/{min_steps}-{max_steps}"),
        MAX_VALID,
        min_ops,
        max_ops,
        legacy | {p.question for p in test},
    )
    return tuple(test), tuple(valid)


def reserved_questions() -> set[str]:
    """Every validation and test question of both settings: training draws never use them."""
    out = set()
    for lo, hi in SETTINGS.values():
        test, valid = held_out(lo, hi)
        out |= {p.question for p in test + valid}
    return out


def toy_splits(
    n_train: int, n_valid: int, n_test: int, *, min_steps: int = 2, max_steps: int = 3, seed: int = 0
) -> ToySplits:
    """Disjoint train / validation / test problems of ``min_steps..max_steps`` steps.

    Validation and test are prefixes of the fixed ``held_out`` splits of the range; the
    ``n_train`` training problems are drawn with ``seed`` and never come from any range's
    validation or test split. Selection (checkpoints, learning rate, beta) uses validation;
    test is for the final table only.
    """
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}..{max_steps}")
    if n_test > MAX_TEST or n_valid > MAX_VALID:
        raise ValueError(f"at most {MAX_TEST} test and {MAX_VALID} validation problems")
    test, valid = held_out(min_steps, max_steps)
    exclude = reserved_questions() | {p.question for p in test + valid}
    train = _draw(
        random.Random(f"train/{seed}/{min_steps}-{max_steps}"),
        n_train,
        min_steps - 1,
        max_steps - 1,
        exclude,
        unique=False,
    )
    return ToySplits(train, list(valid[:n_valid]), list(test[:n_test]))


def write_jsonl(problems: list[ToyProblem], path: str | Path) -> None:
    """GSM8K-shaped rows (``question``, ``answer`` ending in ``#### N``) that ``--task gsm8k`` reads."""
    with open(path, "w") as f:
        for p in problems:
            f.write(
                json.dumps({"question": p.question, "answer": p.solution() + f"\n#### {p.answer}"}) + "\n"
            )


# Toy values stay far below 18 digits (9**13 at 12 steps); a longer number is a wrong step, never an
# int() of thousands of digits (Python refuses over 4,300: a ValueError from hostile text).
_STEP = re.compile(r"Step (\d+): (-?\d{1,18}) ([-+*/]) (-?\d{1,18}) = (-?\d{1,18})")


def parse_question(question: str) -> ToyProblem | None:
    m = re.fullmatch(r"(\d) \* (\d)((?:, [-+*/] \d)*)", question.strip())
    if not m:
        return None
    ops = tuple((o, int(k)) for o, k in re.findall(r", ([-+*/]) (\d)", m.group(3)))
    return ToyProblem(int(m.group(1)), int(m.group(2)), ops)


def first_wrong_step(problem: ToyProblem, solution: str) -> int | None:
    """1-based index of the first line that is not the correct step, None if all steps are right.

    A step is right when it applies the problem's next operation to the true previous
    value and gets the true result. The final line must state the true answer.
    """
    lines = solution.strip("\n").split("\n")
    vals = problem.values()
    expected = [(problem.a, "*", problem.b, vals[0])] + [
        (vals[i], op, k, vals[i + 1]) for i, (op, k) in enumerate(problem.ops)
    ]
    for i, exp in enumerate(expected):
        if i >= len(lines):
            return i + 1
        m = _STEP.fullmatch(lines[i].strip())
        if not m or (int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))) != exp:
            return i + 1
    final = len(expected)
    if final >= len(lines) or f"\\boxed{{{problem.answer}}}" not in lines[final]:
        return final + 1
    return None


def erring_solution(problem: ToyProblem, wrong_step: int, delta: int) -> str:
    """The solution with step ``wrong_step`` (1-based, >= 2) off by ``delta`` and later steps
    computed consistently from the wrong value: the first wrong step is known exactly."""
    vals = problem.values()
    lines = [f"Step 1: {problem.a} * {problem.b} = {vals[0]}"]
    v = vals[0]
    for i, (op, k) in enumerate(problem.ops, 2):
        w = apply(v, op, k) + (delta if i == wrong_step else 0)
        lines.append(f"Step {i}: {v} {op} {k} = {w}")
        v = w
    lines.append(f"The answer is \\boxed{{{v}}}.")
    return "\n".join(lines)
