"""Held-out grading accuracy: this package's grader vs Math-Verify 0.9 on a blind table, one run.

    python scripts/bench/grading_blind.py [--data tests/data/grading_blind.jsonl] [--wrong] [--json OUT]

The table (``tests/data/grading_blind.jsonl``) was written by an outside checker without reading
this package's own grading tables: answer pairs (``kind: pair``: gold, an extracted prediction,
the expected verdict) in the classes numbers / latex / structures / relations / symbolic / gsm8k,
and full completions (``kind: completion``: gold, the model's text, the answer a reader would
extract, the expected verdict). Each row names its source: ``own`` (written for this table) or a
peer's public test suite (Math-Verify's ``tests/test_all.py``, Hendrycks' MATH
``math_equivalence_test.py``, Qwen2.5-Math's ``grader.py``). Expected verdicts are the checker's
reading of MATH/GSM8K conventions, not necessarily the peer's (rounded decimals never equal exact
values: ``0.333`` is not ``1/3``).

Ours: pairs through ``eval.is_equivalent(pred, gold, task)``; completions through
``eval.score.grade_sample`` (``extract_answer`` then ``is_equivalent``).
Math-Verify: ``verify(parse("$gold$"), parse(x))`` where ``x`` is ``"$pred$"`` for a pair (the
prediction as it is when it already holds a ``$``) and the raw text for a completion, the wrapping
its README gives for gold answers; ``--mv-wrap boxed`` wraps gold and pair predictions in
``\\boxed{}`` instead. Both graders are warmed up first; time is per row, wall clock.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from eval import is_equivalent
from eval.score import grade_sample

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "grading_blind.jsonl"


def load_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ours(row: dict) -> bool:
    if row["kind"] == "pair":
        return is_equivalent(row["pred"], row["gold"], row["task"])
    return grade_sample(row["task"], row["pred"], row["gold"])["correct"]


def same_answer(extracted, expected: str, task: str) -> bool:
    if extracted is None:
        return False
    return extracted.replace(" ", "") == expected.replace(" ", "") or is_equivalent(extracted, expected, task)


def math_verify_grader(wrap: str = "dollar"):
    from math_verify import parse, verify

    def box(s: str) -> str:
        return f"${s}$" if wrap == "dollar" else f"\\boxed{{{s}}}"

    def grade(row: dict) -> bool:
        pred = row["pred"]
        if row["kind"] == "pair" and (wrap == "boxed" or "$" not in pred):
            pred = box(pred)
        return bool(verify(parse(box(row["gold"])), parse(pred)))

    return grade


def run(name: str, fn, rows: list[dict]) -> dict:
    verdicts, times = [], []
    for row in rows:
        t = time.perf_counter()
        try:
            v = bool(fn(row))
        except Exception:  # a grader that raises has not matched
            v = False
        times.append(time.perf_counter() - t)
        verdicts.append(v)
    return {"name": name, "verdicts": verdicts, "times": times}


def origin(row: dict) -> str:
    """Batch or peer suite a row comes from (batches 2 and 3 were written after seeing batch 1's results)."""
    src = row["source"]
    if src.startswith("own"):
        return "own batch 3" if "batch 3" in src else "own batch 2" if "batch 2" in src else "own batch 1"
    return src.split()[0].split("@")[0]


def summarize(rows: list[dict], res: dict, key_fn=lambda row: row["class"]) -> dict:
    by = defaultdict(lambda: {"n": 0, "ok": 0, "fp": 0, "fn": 0})
    for row, v in zip(rows, res["verdicts"]):
        for key in (key_fn(row), "ALL"):
            c = by[key]
            c["n"] += 1
            c["ok"] += v == row["expected"]
            c["fp"] += v and not row["expected"]
            c["fn"] += row["expected"] and not v
    return by


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--wrong", action="store_true", help="list the rows each grader gets wrong")
    ap.add_argument("--json", help="write per-row verdicts and times here")
    ap.add_argument(
        "--mv-wrap",
        choices=("dollar", "boxed"),
        default="dollar",
        help="how gold (and pair predictions) reach Math-Verify's parse: $..$ or \\boxed{..}",
    )
    args = ap.parse_args()
    rows = load_rows(Path(args.data))
    mv = math_verify_grader(args.mv_wrap)
    warm = {"kind": "pair", "task": "math", "gold": "2x", "pred": "1", "expected": False}
    ours(warm), mv(warm)  # start the sympy worker / imports outside the timed region
    results = [run("ours", ours, rows), run("math-verify", mv, rows)]
    print(
        f"{len(rows)} rows ({sum(r['kind'] == 'pair' for r in rows)} pairs, "
        f"{sum(r['kind'] == 'completion' for r in rows)} completions) from {args.data}"
    )
    for title, key_fn in (("class", lambda row: row["class"]), ("origin", origin)):
        sums = [summarize(rows, r, key_fn) for r in results]
        keys = sorted(k for k in sums[0] if k != "ALL") + ["ALL"]
        print(f"\n| {title} | n | ours acc | ours FP | ours FN | MV acc | MV FP | MV FN |")
        print("|---|---|---|---|---|---|---|---|")
        for k in keys:
            a, b = sums[0][k], sums[1][k]
            print(
                f"| {k} | {a['n']} | {a['ok']} ({a['ok'] / a['n']:.1%}) | {a['fp']} | {a['fn']} | "
                f"{b['ok']} ({b['ok'] / b['n']:.1%}) | {b['fp']} | {b['fn']} |"
            )
    print()
    for r in results:
        t = r["times"]
        i = max(range(len(t)), key=t.__getitem__)
        print(
            f"{r['name']}: mean {sum(t) / len(t) * 1e3:.2f} ms/row, max {t[i] * 1e3:.1f} ms "
            f"(row {rows[i]['id']}: gold {rows[i]['gold']!r})"
        )
    misread = [
        row["id"]
        for row in rows
        if row["kind"] == "completion"
        and row["expected_extracted"] is not None
        and not same_answer(
            grade_sample(row["task"], row["pred"], row["gold"])["extracted"],
            row["expected_extracted"],
            row["task"],
        )
    ]
    print(f"ours: completions whose extracted answer is not the expected one: {len(misread)} {misread}")
    if args.wrong:
        for r in results:
            print(f"\nrows {r['name']} gets wrong:")
            for row, v in zip(rows, r["verdicts"]):
                if v != row["expected"]:
                    pred = row["pred"] if row["kind"] == "pair" else "[completion] ..." + row["pred"][-80:]
                    print(
                        f"  {row['id']} [{row['class']}] expected {row['expected']}: gold {row['gold']!r} "
                        f"pred {pred!r}"
                    )
    if args.json:
        out = [
            {
                "id": row["id"],
                "expected": row["expected"],
                **{r["name"]: {"verdict": r["verdicts"][i], "s": r["times"][i]} for r in results},
            }
            for i, row in enumerate(rows)
        ]
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
