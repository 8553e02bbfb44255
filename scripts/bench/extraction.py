"""Answer extraction: eval.extract_answer vs Math-Verify's parser, same completions, one run.

    python scripts/bench/extraction.py [--math500 ../shared/data/math500_test.jsonl]

1. The realistic completions of ``tests/extraction_table.py`` (issue-10 failure shapes plus
   MATH-500 / GSM8K / Minerva style, and a fresh batch written after the extractor). This package: ``is_equivalent(extract_answer(c), gold)``;
   also judged by Math-Verify's ``verify`` on the extracted string, so that the extraction is
   measured apart from either equivalence checker. Math-Verify: ``verify(parse(gold),
   parse(c))`` with ``LatexExtractionConfig`` + ``ExprExtractionConfig`` (its defaults).
2. Math-Verify's own test-suite completions (``tests/data/math_verify_completions.json``),
   both judged by Math-Verify's ``verify`` against the suite's gold and expected verdict.
3. MATH-500: the answer read from each ``solution`` against the separate ``answer`` field, and
   the same solutions restyled so that the final box becomes another answer form (the answer
   text is the dataset curators', not written here): ``The answer is $X$``, Minerva's
   ``Final Answer: ...``, display math after "the answer is", ``\\(X\\)`` with no anchor,
   and an earlier wrong box before the final one.
4. GSM8K test: each reference answer (calculator ``<<..>>`` notes dropped) with its ``#### N``
   line restyled (``The answer is N.``, ``\\boxed{N}``, Minerva's phrase, a bold ``**N**``
   closing sentence, ``#### N`` twice with a corrected last one); also scored by lm-eval's
   ``flexible-extract`` (``eval.lm_eval_filters``), which reads the last number-like run.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from extraction_table import FRESH, FRESH2, FRESH3, FRESH_KNOWN_WRONG, REALISTIC  # noqa: E402

from eval import extract_answer, is_equivalent  # noqa: E402
from eval.data import read_jsonl  # noqa: E402
from eval.extract import _boxes  # noqa: E402
from eval.lm_eval_filters import gsm8k_lm_eval  # noqa: E402

DEFAULT_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"
GSM8K_STYLES = {
    "answer-is": lambda body, n, w: f"{body}\nThe answer is {n}.",
    "boxed": lambda body, n, w: f"{body}\nSo the final answer is $\\boxed{{{n}}}$.",
    "minerva": lambda body, n, w: f"{body}\nFinal Answer: The final answer is {n}. I hope it is correct.",
    "bold-sentence": lambda body, n, w: f"{body}\n\nSo the total is **{n}**.",
    "corrected-####": lambda body, n, w: (
        f"{body}\n#### {w}\nWait, I mis-added; recomputing gives {n}.\n#### {n}"
    ),
}

STYLES = {
    "answer-is": lambda body, x: f"{body}\n\nThe answer is ${x}$.",
    "minerva": lambda body, x: f"{body}\nFinal Answer: The final answer is ${x}$. I hope it is correct.",
    "display-after-anchor": lambda body, x: f"{body}\n\nTherefore, the answer is\n\\[\n{x}\n\\]",
    "inline-no-anchor": lambda body, x: f"{body}\n\nSo the result is \\({x}\\).",
}


def restyle(solution: str, other: str) -> dict[str, str] | None:
    """The solution in each style; its boxes are unboxed (``\\boxed{X}`` -> ``X``) first."""
    boxes = _boxes(solution)
    if not boxes:
        return None
    body, last = solution, 0
    parts = []
    for start, end, content in boxes:
        parts.append(solution[last:start] + content)
        last = end
    body = "".join(parts) + solution[last:]
    x = boxes[-1][2]
    out = {name: f(body, x) for name, f in STYLES.items()}
    out["earlier-wrong-box"] = f"First guess: $\\boxed{{{other}}}$, but that ignores a case.\n\n{solution}"
    return out


DEFAULT_MATH500 = ROOT.parent / "shared" / "data" / "math500_test.jsonl"


def _mv():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def parse_any(text: str):
        return parse(text, extraction_config=configs, parsing_timeout=5)

    def gold(g: str):
        return parse_any(f"${g}$")

    return parse_any, gold, verify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--math500", type=Path, default=DEFAULT_MATH500)
    ap.add_argument("--gsm8k", type=Path, default=DEFAULT_GSM8K)
    args = ap.parse_args()
    parse_any, gold_of, verify = _mv()

    ours = ours_mv = theirs = 0
    missed: Counter = Counter()
    mv_missed: Counter = Counter()
    table = REALISTIC + FRESH + FRESH2 + FRESH3 + [row[:4] for row in FRESH_KNOWN_WRONG]
    for cls, task, completion, gold in table:
        got = extract_answer(completion, task)
        ok = is_equivalent(got, gold, "gsm8k" if task == "gsm8k" else "math")
        ours += ok
        ours_mv += got is not None and bool(verify(gold_of(gold), gold_of(got)))
        mv_ok = bool(verify(gold_of(gold), parse_any(completion)))
        theirs += mv_ok
        missed[cls] += not ok
        mv_missed[cls] += not mv_ok
    n = len(table)
    print(f"realistic completions: n={n}")
    print(f"  eval.extract_answer, judged by eval.is_equivalent: {ours}/{n} = {100 * ours / n:.1f}%")
    print(f"  eval.extract_answer, judged by math_verify.verify:  {ours_mv}/{n} = {100 * ours_mv / n:.1f}%")
    print(f"  math_verify.parse + verify:                         {theirs}/{n} = {100 * theirs / n:.1f}%")
    print(
        "  misses by class (ours / Math-Verify):",
        {
            c: (missed[c], mv_missed[c])
            for c in sorted(set(missed) | set(mv_missed))
            if missed[c] or mv_missed[c]
        },
    )

    rows = read_jsonl(str(args.math500))
    agree = sum(is_equivalent(extract_answer(r["solution"], "math500"), r["answer"], "math") for r in rows)
    mv_agree = sum(bool(verify(gold_of(r["answer"]), parse_any(r["solution"]))) for r in rows)
    print(f"MATH-500 solution vs answer field: ours {agree}/{len(rows)}, Math-Verify {mv_agree}/{len(rows)}")

    ok: Counter = Counter()
    mv_ok: Counter = Counter()
    total: Counter = Counter()
    for i, r in enumerate(rows):
        styled = restyle(r["solution"], rows[(i + 1) % len(rows)]["answer"])
        for name, completion in (styled or {}).items():
            total[name] += 1
            ok[name] += is_equivalent(extract_answer(completion, "math500"), r["answer"], "math")
            mv_ok[name] += bool(verify(gold_of(r["answer"]), parse_any(completion)))
    n = sum(total.values())
    print(
        f"MATH-500 restyled: n={n}: ours {sum(ok.values())}/{n} = {100 * sum(ok.values()) / n:.1f}%, "
        f"Math-Verify {sum(mv_ok.values())}/{n} = {100 * sum(mv_ok.values()) / n:.1f}%"
    )
    for name in total:
        print(f"  {name:<22} ours {ok[name]}/{total[name]}  Math-Verify {mv_ok[name]}/{total[name]}")

    rng = random.Random(0)
    ok, lm_ok, total = Counter(), Counter(), Counter()
    for r in read_jsonl(str(args.gsm8k)):
        body, _, n = r["answer"].rpartition("####")
        body, n = re.sub(r"<<[^>]*>>", "", body).strip(), n.strip()
        wrong = str(int(n.replace(",", "")) + rng.randint(1, 9)) if n.replace(",", "").isdigit() else "0"
        for name, style in GSM8K_STYLES.items():
            completion = style(body, n, wrong)
            total[name] += 1
            ok[name] += is_equivalent(extract_answer(completion, "gsm8k"), n, "gsm8k")
            lm_ok[name] += gsm8k_lm_eval(completion, r["answer"])["flexible-extract"]["exact_match"]
    n_all = sum(total.values())
    print(
        f"GSM8K restyled: n={n_all}: ours {sum(ok.values())}/{n_all} = {100 * sum(ok.values()) / n_all:.1f}%, "
        f"lm-eval flexible-extract {sum(lm_ok.values())}/{n_all} = {100 * sum(lm_ok.values()) / n_all:.1f}%"
    )
    for name in total:
        print(
            f"  {name:<22} ours {ok[name]}/{total[name]}  lm-eval flexible-extract {lm_ok[name]}/{total[name]}"
        )

    import json

    suite = json.loads(
        (ROOT / "tests" / "data" / "math_verify_completions.json").read_text(encoding="utf-8")
    )["cases"]
    ours_s = sum(
        bool(verify(parse_any(c["gold"]), parse_any("$" + (extract_answer(c["completion"]) or "") + "$")))
        == c["expected_equal"]
        for c in suite
    )
    mv_s = sum(
        bool(verify(parse_any(c["gold"]), parse_any(c["completion"]))) == c["expected_equal"] for c in suite
    )
    print(
        f"Math-Verify suite completions (verdicts by math_verify.verify): n={len(suite)}: "
        f"ours {ours_s}/{len(suite)}, Math-Verify {mv_s}/{len(suite)}"
    )


if __name__ == "__main__":
    main()
