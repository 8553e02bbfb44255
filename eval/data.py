"""Benchmark problems from the Hugging Face hub or local JSON / JSONL / parquet files.

Gold answers follow each dataset's own convention:

* GSM8K (Cobbe et al. 2021): the number after ``####`` in ``answer``.
* MATH (Hendrycks et al. 2021): an ``answer`` field if present (MATH-500), else the last
  ``\\boxed{}`` of ``solution``. ``type``/``subject`` and ``level`` (``"Level 5"`` or ``5``)
  are kept for per-subject and per-level breakdowns.

Local JSON/JSONL files are read line by line so that a bad line is reported with its
number; parquet files and hub names go through ``datasets.load_dataset``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from eval.errors import UserError, where
from eval.extract import clean_answer, last_boxed
from eval.records import first_field, read_records

TASKS = ("gsm8k", "math", "math500")

#: Default hub locations: (repo, configs, split).
HUB_DEFAULTS = {
    "gsm8k": ("openai/gsm8k", ["main"], "test"),
    "math": (
        "EleutherAI/hendrycks_math",
        [
            "algebra",
            "counting_and_probability",
            "geometry",
            "intermediate_algebra",
            "number_theory",
            "prealgebra",
            "precalculus",
        ],
        "test",
    ),
    "math500": ("HuggingFaceH4/MATH-500", [None], "test"),
}
_QUESTION_FIELDS = ("question", "problem")


@dataclass
class Problem:
    doc_id: int
    question: str
    gold: str
    subject: str | None = None
    level: int | None = None
    unique_id: str | None = None


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UserError(f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    return task


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a JSONL (or JSON array) file; bad input raises ``UserError`` naming file, line and field.

    ``required``: field names (a tuple of names: any one of them). Each row gets ``__line__``.
    """
    out = []
    for lineno, row in read_records(path, {f: None for f in required}, numbered=True, json_array=True):
        row["__line__"] = lineno
        out.append(row)
    return out


def gsm8k_gold(answer: str) -> str | None:
    """The number after ``####`` with thousands separators removed."""
    m = re.search(r"####\s*(.+)", answer)
    return m.group(1).strip().replace(",", "") if m else None


def math_gold(row: dict) -> str | None:
    if row.get("answer") not in (None, ""):
        return str(row["answer"]).strip()
    return clean_answer(last_boxed(row.get("solution") or ""))


def _level(value) -> int | None:
    if value is None:
        return None
    m = re.search(r"\d+", str(value))
    return int(m.group(0)) if m else None


#: Optional fields and what they must be when present (not null): a gold answer given as a list
#: or ``true`` would otherwise be graded as the text "[1]" or "True", silently.
_FIELD_KINDS = {
    "answer": ((str, int, float), "text or a number"),
    "solution": ((str,), "text"),
    "type": ((str,), "text"),
    "subject": ((str,), "text"),
    "unique_id": ((str,), "text"),
    "level": ((str, int), "text or an integer"),
}


def _check_types(row: dict, source, line) -> None:
    for name, (kinds, what) in _FIELD_KINDS.items():
        value = row.get(name)
        if value is None and not (name == "answer" and "answer" in row and "solution" not in row):
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            shown = json.dumps(value, default=str)[:40]
            raise UserError(f"{where(source, line, name)} must be {what}, not {shown}")


def row_to_problem(task: str, row: dict, doc_id: int, source: str = "") -> Problem:
    """Turn one dataset row into a ``Problem``; missing fields raise ``UserError``."""
    line = row.get("__line__")
    _check_types(row, source, line)
    _, question = first_field(row, _QUESTION_FIELDS, source, line, required=False)
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where(source, line, 'question/problem')} is missing or empty")
    if task == "gsm8k":
        first_field(row, ("answer",), source, line)
        gold = gsm8k_gold(str(row["answer"]))
        if gold is None:
            gold = str(row["answer"]).strip()
    else:
        first_field(row, ("solution", "answer"), source, line)
        gold = math_gold(row)
        if gold is None:
            raise UserError(f"{where(source, line, 'solution')} has no \\boxed{{}} answer")
    return Problem(
        doc_id=doc_id,
        question=question,
        gold=gold,
        subject=row.get("type") or row.get("subject"),
        level=_level(row.get("level")),
        unique_id=row.get("unique_id"),
    )


def _rows_from_datasets(path: str, configs, split: str, data_files=None) -> list[dict]:
    import datasets  # imported lazily: slow, and unneeded for local JSONL

    rows = []
    try:
        if data_files is not None:  # a local file: no progress bars or log lines around a one-line error
            datasets.disable_progress_bars()
            datasets.utils.logging.set_verbosity(datasets.logging.CRITICAL)
            ds = datasets.load_dataset(path, data_files=data_files, split=split)
            rows.extend(ds)
        else:
            for config in configs:
                rows.extend(datasets.load_dataset(path, config, split=split))
    except Exception as e:  # network, missing repo, bad parquet: all user-facing
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{data_files or path}: could not load dataset ({msg})") from None
    return [dict(r) for r in rows]


def load_problems(
    task: str,
    data_files: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Problems of ``task`` from a local file (``data_files``) or the hub (``dataset`` or the default)."""
    check_task(task)
    if data_files:
        suffix = Path(data_files).suffix
        if suffix in (".jsonl", ".json"):
            rows, source = read_jsonl(data_files), data_files
        elif suffix == ".parquet":
            if not Path(data_files).is_file():
                raise UserError(f"{data_files}: no such file")
            rows, source = _rows_from_datasets("parquet", None, "train", data_files), data_files
        else:
            raise UserError(f"{data_files}: unsupported file type (use .jsonl, .json or .parquet)")
    else:
        repo, configs, default_split = HUB_DEFAULTS[task]
        repo = dataset or repo
        rows, source = (
            _rows_from_datasets(repo, configs if not dataset else [None], split or default_split),
            repo,
        )
    if limit is not None:
        rows = rows[:limit]
    return [row_to_problem(task, row, i, source) for i, row in enumerate(rows)]
