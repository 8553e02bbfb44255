"""Grading accuracy and speed: eval.is_equivalent vs Math-Verify, same pairs, side by side in one run.

    python scripts/bench/grading.py [--math500 ../shared/data/math500_test.jsonl] [--show 10]

Two pair sets, both graders on identical strings (Math-Verify gets each answer as ``\\boxed{..}``
through ``math_verify.parse``/``verify``, its documented use):

1. ``table``: the 400+ labelled (gold, pred, expected) rows of ``tests/grading_cases.py`` (peers' suites +
   own traps), with the hard slice (symbolic, matrices, relations, sets) reported separately.
2. ``math500``: MATH-500's ``answer`` field against model-style rewrites of it (should be equal:
   ``\\dfrac``, ``$..$``, ``\\boxed{}``, ``x = ``, spacing, a unit, ``\\left(..\\right)``, a reordered list, an
   exact decimal) and against wrong answers (another problem's answer, one digit changed).

Reported per set: accuracy against the labels, false positives, pairs/s and the worst pair
(ours under its default 1 s per-pair bound); then where the two graders disagree, by class.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from eval import is_equivalent  # noqa: E402

DEFAULT_MATH500 = ROOT.parent / "shared" / "data" / "math500_test.jsonl"


def hard(gold: str, pred: str) -> bool:
    """Symbolic, matrix, relation or set answers: the slow and error-prone part of grading."""
    s = gold + " " + pred
    if re.search(
        r"\\begin\{|\\cup|\\cap|\\\{|\\emptyset|\\varnothing|\\mathbb|[<>=]|\\le|\\ge|\\ne|\\lt|\\gt", s
    ):
        return True
    stripped = re.sub(r"\\[a-zA-Z]+|\\text\{[^}]*\}", "", s)
    return bool(re.search(r"[a-zA-Z]", stripped))


def disagreement_class(gold: str, pred: str) -> str:
    s = gold + " | " + pred
    words = re.sub(r"\\[a-zA-Z]+", " ", s)  # LaTeX commands are not words
    if re.search(r"[a-zA-Z]{3,}", words) and not re.search(r"\\begin\{|[<>=]", s):
        return "words/units"
    for name, pattern in (
        ("matrix", r"\\begin\{"),
        ("set/interval", r"\\cup|\\\{|\\emptyset|\\mathbb|\\infty"),
        ("relation", r"[<>=]|\\le|\\ge|\\ne"),
        ("percent", r"%|percent|pct"),
        ("units/text", r"\\text|\\mbox"),
        ("thousands", r"\d(?:,\\!|\\,|\{,\}| )\s*\d{3}"),
        ("repeating", r"\\overline"),
        ("base", r"\d_\{?\d"),
        ("list/tuple", r","),
        ("decimal", r"\d\.\d"),
        ("symbolic", r"[a-zA-Z\\]"),
    ):
        if re.search(pattern, s):
            return name
    return "number"


def table_pairs() -> list[tuple[str, str, bool, str]]:
    from grading_cases import ROWS

    return [(p, g, e, src) for g, p, e, src in ROWS]


def _digit_changed(s: str, rng: random.Random) -> str | None:
    digits = [i for i, c in enumerate(s) if c.isdigit()]
    if not digits:
        return None
    i = rng.choice(digits)
    return s[:i] + str((int(s[i]) + rng.randint(1, 8)) % 10) + s[i + 1 :]


def _exact_decimal(s: str) -> str | None:
    m = re.fullmatch(r"(-?)\\d?frac\{(\d+)\}\{(\d+)\}", s.strip())
    if not m or int(m.group(3)) == 0:
        return None
    v = Fraction(int(m.group(2)), int(m.group(3)))
    if v.denominator not in (2, 4, 5, 8, 10, 20, 25, 40, 50, 100):
        return None
    return m.group(1) + format(float(v), "g")


def math500_pairs(path: Path, seed: int = 0) -> list[tuple[str, str, bool, str]]:
    answers = [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    pairs = []
    for i, g in enumerate(answers):
        thousands = re.search(r"\d,(?:\\!)?\s*\d{3}(?!\d)", g)  # "10,\!080" is one number, not a list
        variants = [
            g.replace("\\frac", "\\dfrac"),
            f"${g}$",
            f"\\boxed{{{g}}}",
            g.replace("+", " + ") if thousands else g.replace(",", ", ").replace("+", " + "),
        ]
        if "=" not in g and "," not in g and "\\text" not in g:
            variants.append(f"x = {g}")
        if re.fullmatch(r"-?\d+(\.\d+)?", g.strip()):
            variants.append(f"{g}\\text{{ units}}")
        if g.startswith("(") and g.endswith(")"):
            variants.append(f"\\left{g[0]}{g[1:-1]}\\right{g[-1]}")
        parts = [x.strip() for x in g.split(",")]
        if len(parts) > 1 and not thousands and not re.search(r"[()\[\]{}]", g):
            variants.append(", ".join(reversed(parts)))
        dec = _exact_decimal(g)
        if dec:
            variants.append(dec)
        for v in variants:
            if v != g:
                pairs.append((v, g, True, "math500:rewrite"))
        other = answers[(i + 1 + rng.randrange(len(answers) - 1)) % len(answers)]
        if other.strip() != g.strip():
            pairs.append((other, g, False, "math500:other answer"))
        changed = _digit_changed(g, rng)
        if changed and changed != g:
            pairs.append((changed, g, False, "math500:digit changed"))
    return pairs


def math_verify_fn():
    from math_verify import parse, verify

    def fn(pred, gold):
        return verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + pred + "}"))

    return fn


def run_both(fns, pairs):
    """Time each grader on each pair, alternating pair by pair so machine load hits both alike."""
    out = [([], []) for _ in fns]
    for pred, gold, _, _ in pairs:
        for (verdicts, times), fn in zip(out, fns):
            t = time.perf_counter()
            try:
                v = bool(fn(pred, gold))
            except Exception:
                v = False
            times.append(time.perf_counter() - t)
            verdicts.append(v)
    return out


def summary(name, pairs, verdicts, times, subset=None):
    idx = [i for i in range(len(pairs)) if subset is None or subset(i)]
    if not idx:
        return {}
    correct = sum(verdicts[i] == pairs[i][2] for i in idx)
    fp = sum(verdicts[i] and not pairs[i][2] for i in idx)
    fn = sum(not verdicts[i] and pairs[i][2] for i in idx)
    t = sum(times[i] for i in idx)
    worst = max(idx, key=lambda i: times[i])
    return {
        "grader": name,
        "pairs": len(idx),
        "accuracy": round(correct / len(idx), 4),
        "false_pos": fp,
        "false_neg": fn,
        "pairs_per_s": round(len(idx) / t, 1),
        "worst_ms": round(times[worst] * 1e3),
        "worst_pair": pairs[worst][:2],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--math500", default=str(DEFAULT_MATH500))
    ap.add_argument("--show", type=int, default=8, help="disagreements to print per set")
    args = ap.parse_args()

    from eval.worker import _WARM_PARSE, get_worker

    # Start-up outside the timed region. Our worker fills the ANTLR parser's prediction caches with
    # _WARM_PARSE at start; Math-Verify's parser (the same grammar, in this process) gets the same.
    get_worker().warm()
    mv = math_verify_fn()
    for text in _WARM_PARSE:
        mv(text, text)
    sets = {"table": table_pairs()}
    if Path(args.math500).exists():
        sets["math500"] = math500_pairs(Path(args.math500))
    for set_name, pairs in sets.items():
        ours, theirs = run_both([lambda p, g: is_equivalent(p, g, "math"), mv], pairs)
        print(f"== {set_name}: {len(pairs)} pairs")
        for label, subset in (
            ("all", None),
            ("hard", lambda i, pairs=pairs: hard(pairs[i][1], pairs[i][0])),
            ("easy", lambda i, pairs=pairs: not hard(pairs[i][1], pairs[i][0])),
        ):
            a = summary("eval.is_equivalent", pairs, *ours, subset=subset)
            b = summary("math-verify 0.9", pairs, *theirs, subset=subset)
            if not a:
                continue
            print(f"[{label}] " + json.dumps(a))
            print(f"[{label}] " + json.dumps(b))
            print(
                f"[{label}] speed ratio (pairs/s, ours / math-verify): {a['pairs_per_s'] / b['pairs_per_s']:.1f}x"
            )
        diff = [i for i in range(len(pairs)) if ours[0][i] != theirs[0][i]]
        print(f"agreement with math-verify: {1 - len(diff) / len(pairs):.4f} ({len(diff)} disagreements)")
        classes = Counter(
            (
                disagreement_class(pairs[i][1], pairs[i][0]),
                "ours right" if ours[0][i] == pairs[i][2] else "math-verify right",
            )
            for i in diff
        )
        for (cls, who), n in sorted(classes.items(), key=lambda kv: -kv[1]):
            print(f"  {cls:14s} {who:18s} {n}")
        for i in diff[: args.show]:
            p, g, e, src = pairs[i]
            print(f"  gold={g!r} pred={p!r} expected={e} ours={ours[0][i]} mv={theirs[0][i]} ({src})")


if __name__ == "__main__":
    main()
