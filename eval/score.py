"""Grade completions and write lm-eval-shaped reports.

Output files (lm-evaluation-harness layout):

* ``results_<time>.json``: ``results[task]`` with ``exact_match,<filter>`` and
  ``exact_match_stderr,<filter>`` (sample standard error, as lm-eval's ``mean_stderr``),
  ``n-samples``, ``config``, ``versions``; MATH adds ``breakdown`` by subject and level.
* ``samples_<task>_<time>.jsonl``: one line per document with ``doc_id``, ``prompt``,
  ``response``, ``extracted``, ``target``, ``correct`` (and ``lm_eval`` for GSM8K).

Filter names: ``scdpo-grader`` is this package's grading (``extract_answer`` then
``is_equivalent``), for every task. For GSM8K the report also has lm-eval's own filters,
``strict-match`` and ``flexible-extract``, computed exactly as lm-eval computes them
(``eval.lm_eval_filters``), so those keys can be compared with lm-eval's numbers.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from eval.data import Problem, check_task, load_problems, read_jsonl
from eval.equivalence import is_equivalent
from eval.errors import UserError, where
from eval.extract import extract_answer, extract_code_answer
from eval.lm_eval_filters import GSM8K_FILTERS, gsm8k_lm_eval
from eval.records import first_field

GRADER_FILTER = "scdpo-grader"
RESPONSE_FIELDS = ("response", "completion", "output", "text")
TARGET_FIELDS = ("target", "gold")


def mean_stderr(values: list[float]) -> float:
    """Standard error of the mean with the n-1 sample variance (lm-eval's ``mean_stderr``)."""
    n = len(values)
    if n < 2:
        return 0.0
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def grade_sample(task: str, response: str, target: str, solution_format: str = "cot") -> dict:
    """Extraction and verdicts for one response.

    ``solution_format``: ``cot``, or a code-integrated block format (``markdown``,
    ``mathcoder``) whose answer is the final text block's box, else the last output.
    """
    equiv_task = "gsm8k" if task == "gsm8k" else "math"
    if solution_format == "cot":
        extracted = extract_answer(response, task)
    else:
        extracted = extract_code_answer(response, solution_format)
    return {"extracted": extracted, "correct": is_equivalent(extracted, target, equiv_task)}


def _metric(values: list[bool], name: str) -> dict:
    xs = [float(v) for v in values]
    return {
        f"exact_match,{name}": sum(xs) / len(xs) if xs else 0.0,
        f"exact_match_stderr,{name}": mean_stderr(xs),
    }


def aggregate(task: str, samples: list[dict]) -> dict:
    """Task metrics from graded samples."""
    res = {"alias": task, **_metric([s["correct"] for s in samples], GRADER_FILTER)}
    if task == "gsm8k":
        for name in GSM8K_FILTERS:
            res.update(_metric([s["lm_eval"][name]["exact_match"] for s in samples], name))
        return res
    groups: dict[str, dict] = {"subject": defaultdict(list), "level": defaultdict(list)}
    for s in samples:
        if s.get("subject") is not None:
            groups["subject"][str(s["subject"])].append(s["correct"])
        if s.get("level") is not None:
            groups["level"][str(s["level"])].append(s["correct"])
    res["breakdown"] = {
        kind: {k: {"exact_match": sum(v) / len(v), "n": len(v)} for k, v in sorted(g.items())}
        for kind, g in groups.items()
    }
    return res


def _field(row: dict, names: tuple[str, ...], path, required: bool = True):
    _, v = first_field(row, names, path, row.get("__line__"), required)
    while isinstance(v, list) and v:  # lm-eval "resps": [[text]]
        v = v[0]
    return v


def _validated(rows: list[dict], by_id: dict, path) -> list[tuple[dict, str, str, Problem | None]]:
    """(row, response, target, problem) for every row; the first bad row raises ``UserError``."""
    out, seen = [], {}
    for row in rows:
        line = row.get("__line__")
        if not isinstance(row.get("doc_id"), int) or isinstance(row["doc_id"], bool):
            raise UserError(f"{where(path, line, 'doc_id')} is missing or not an integer")
        if row["doc_id"] in seen:  # graded twice, it would count twice
            raise UserError(
                f"{where(path, line, 'doc_id')} {row['doc_id']} also on line {seen[row['doc_id']]}"
            )
        seen[row["doc_id"]] = line
        response = _field(row, RESPONSE_FIELDS, path)
        if not isinstance(response, str):
            raise UserError(f"{where(path, line, 'response')} is not a string")
        problem = by_id.get(row["doc_id"])
        target = _field(row, TARGET_FIELDS, path, required=problem is None)
        if (
            target is None
            and problem is None
            or isinstance(target, bool)
            or target is not None
            and not isinstance(target, (str, int, float))
        ):
            raise UserError(f"{where(path, line, 'target')} must be text or a number")
        out.append((row, response, str(problem.gold if target is None else target), problem))
    return out


def score_rows(
    task: str,
    rows: list[dict],
    problems: list[Problem] | None = None,
    path="<completions>",
    progress: bool = False,
    solution_format: str = "cot",
) -> list[dict]:
    """Grade completion rows (``doc_id``, response, optional target); returns lm-eval-style samples."""
    items = _validated(rows, {p.doc_id: p for p in problems} if problems else {}, path)
    items = tqdm(items, desc=f"grading {task}", unit="doc", disable=not progress)
    samples = []
    for row, response, target, problem in items:
        sample = {
            "doc_id": row["doc_id"],
            "prompt": row.get("prompt", problem.question if problem else None),
            "response": response,
            "target": target,
        }
        if problem is not None:
            sample.update(subject=problem.subject, level=problem.level)
        else:
            sample.update(subject=row.get("subject") or row.get("type"), level=row.get("level"))
        sample.update(grade_sample(task, response, target, solution_format))
        if task == "gsm8k":
            sample["lm_eval"] = gsm8k_lm_eval(response, target)
        samples.append(sample)
    return samples


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("mlx-scdpo", "sympy", "mlx", "mlx-lm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_report(output_dir: str | Path, task: str, samples: list[dict], config: dict) -> tuple[Path, Path]:
    """Write ``results_<time>.json`` and ``samples_<task>_<time>.jsonl``; returns their paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S") + f".{int(time.time() * 1e6) % 1_000_000:06d}"
    results = {
        "results": {task: aggregate(task, samples)},
        "n-samples": {task: {"original": len(samples), "effective": len(samples)}},
        "config": config,
        "versions": versions(),
        "date": time.time(),
    }
    res_path = out / f"results_{stamp}.json"
    sam_path = out / f"samples_{task}_{stamp}.jsonl"
    # Write to temporary names and rename: never leave a half-written report.
    tmp = sam_path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for s in sorted(samples, key=lambda s: s["doc_id"]):
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    tmp.replace(sam_path)
    tmp = res_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(res_path)
    return res_path, sam_path


def score_file(
    path: str,
    task: str,
    output_dir: str | None = None,
    data_files: str | None = None,
    dataset: str | None = None,
    progress: bool = True,
    solution_format: str = "cot",
):
    """Grade a completions JSONL file; targets come from the file or, when absent, from the dataset."""
    check_task(task)
    rows = read_jsonl(path, required=("doc_id",))
    needs_gold = any(not any(f in r for f in TARGET_FIELDS) for r in rows)
    problems = load_problems(task, data_files=data_files, dataset=dataset) if needs_gold else None
    samples = score_rows(task, rows, problems, path, progress=progress, solution_format=solution_format)
    config = {
        "task": task,
        "completions": str(path),
        "data_files": data_files,
        "dataset": dataset,
        "solution_format": solution_format,
    }
    res_path, sam_path = write_report(output_dir or Path(path).parent, task, samples, config)
    return aggregate(task, samples), res_path, sam_path


def format_summary(task: str, metrics: dict) -> str:
    """A short human-readable table of the headline metrics."""
    lines = [f"{task}:"]
    for k, v in metrics.items():
        if k.startswith("exact_match,"):
            se = metrics.get(k.replace("exact_match,", "exact_match_stderr,"), 0.0)
            lines.append(f"  {k.split(',')[1]:<18} {100 * v:6.2f} ± {100 * se:.2f}")
    for kind, groups in metrics.get("breakdown", {}).items():
        for name, g in groups.items():
            lines.append(f"  {kind} {name:<24} {100 * g['exact_match']:6.2f}  (n={g['n']})")
    return "\n".join(lines)
