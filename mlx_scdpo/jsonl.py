"""JSONL: strict reading of inputs, and the project's own append-only logs that survive a kill.

Two kinds of files, two readers:

* Inputs (``train --data``, ``build-pairs`` inputs, ``credit --pairs``, ``step-control
  --solutions``, eval problems) are read with ``read_records`` (``eval.records``): any bad
  line is one ``UserError`` naming file, line and field, and the file is never written.
* The project's own append logs (``solutions.jsonl``, ``generations_*.jsonl``, step-control
  outcomes) are read with ``read_finished``: a line torn by a kill, or otherwise damaged,
  is moved aside into ``<file>.damaged`` (appended, so nothing is lost) and the log is
  rewritten without it, so appending continues cleanly; valid lines after a damaged one
  are kept.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from eval.blocks import FORMATS
from eval.data import TASKS
from eval.records import read_records  # noqa: F401  (the one strict reader, re-exported)
from mlx_scdpo.errors import UserError

#: A preference pair (``mlx_scdpo.method.pairs``): TRL's columns, and token ids when present.
PAIR_SCHEMA = {"prompt": "text_or_messages", "chosen": "text_or_messages", "rejected": "text_or_messages"}
PAIR_OPTIONAL = {
    "prompt_ids": "token_ids",
    "chosen_ids": "token_ids",
    "rejected_ids": "token_ids",
    "source": str,
    "k": "int",
    "round": "int",
    "chosen_finish_reason": str,
    "rejected_finish_reason": str,
}
PAIR_IDS_SCHEMA = {"prompt_ids": "token_ids", "chosen_ids": "token_ids", "rejected_ids": "token_ids"}
#: A problem record of ``solutions.jsonl`` (``mlx-scdpo sample``).
SOLUTION_SCHEMA = {
    "problem_id": str,
    "task": str,
    "question": str,
    "gold": str,
    "prompt": str,
    "prompt_ids": "token_ids",
    "samples": "samples",
}


SOLUTION_OPTIONAL = {"solution_format": str, "block_format": str}


def check_solution_record(r: dict, at: str, seen: dict) -> dict:
    """A ``solutions.jsonl`` record (``step-control --solutions``) beyond the schema: a known task and
    format, a non-empty prompt, gold and id, and each problem once (a repeated ``problem_id`` would
    merge two problems' continuations). ``seen`` maps problem ids to where they were read."""
    if r["task"] not in TASKS:
        raise UserError(f"{at}: field 'task' must be one of {', '.join(TASKS)}, not {r['task']!r}")
    if r.get("solution_format") not in (None, "cot", "code"):
        raise UserError(f"{at}: field 'solution_format' must be cot or code, not {r['solution_format']!r}")
    if r.get("block_format") not in (None, *FORMATS):
        raise UserError(f"{at}: field 'block_format' must be one of {', '.join(FORMATS)}")
    for name in ("prompt_ids", "gold", "problem_id"):  # an empty gold grades every continuation wrong
        if not r[name] or isinstance(r[name], str) and not r[name].strip():
            raise UserError(f"{at}: field '{name}' is empty")
    if r["problem_id"] in seen:
        raise UserError(f"{at}: field 'problem_id' {r['problem_id']!r} also on line {seen[r['problem_id']]}")
    seen[r["problem_id"]] = at.rsplit(":", 1)[-1]
    return r


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_line(raw: bytes, key: str | None):
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return row if isinstance(row, dict) and (key is None or key in row) else None


def read_finished(path: str | Path, key: str | None) -> dict | list:
    """Rows of one of the project's append-only JSONL logs, by ``key`` (or as a list when ``key`` is None).

    Damaged lines (torn by a kill, not JSON objects, not UTF-8, without ``key``) are
    appended to ``<file>.damaged`` and the log is rewritten, through a temporary file and a
    rename, with the good lines only. A complete last line that only lacks its newline is
    kept and the newline added.
    """
    rows = list(iter_finished(path, key))
    return {r[key]: r for r in rows} if key else rows


def iter_finished(path: str | Path, key: str | None = None):
    """``read_finished``'s rows one at a time (the log is repaired first): memory stays flat for long logs."""
    path = Path(path)
    if not path.exists():
        return
    clean = True
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n") or _parse_line(raw, key) is None:
                clean = False
                break
    if not clean:
        _repair(path, key)
    with open(path, "rb") as f:
        for raw in f:
            yield _parse_line(raw, key)


def _repair(path: Path, key: str | None) -> None:
    """Good lines stay in ``path`` (rewritten atomically); damaged ones move to ``<path>.damaged``."""
    tmp = path.with_name(path.name + ".tmp")
    damaged = []
    with open(path, "rb") as src, open(tmp, "wb") as good:
        for raw in src:
            line = raw if raw.endswith(b"\n") else raw + b"\n"
            if _parse_line(raw, key) is not None:
                good.write(line)
            elif raw.strip():
                damaged.append(line)  # a few torn lines, not the log: kept in memory
        good.flush()
        os.fsync(good.fileno())
    if damaged:  # set aside before the log loses them
        with open(path.with_name(path.name + ".damaged"), "ab") as bad:
            bad.write(b"".join(damaged))
            bad.flush()
            os.fsync(bad.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w"):
    """An open file that becomes ``path`` only once complete: written to ``<path>.tmp``, synced, and
    renamed over ``path`` (a kill leaves the old file or the new one, never half of one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` to ``path`` through ``atomic_write``."""
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj) -> None:
    """``obj`` as indented JSON to ``path`` through ``atomic_write``."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def write_jsonl_atomic(path: str | Path, rows) -> int:
    """Write all rows to ``path`` through ``atomic_write``; returns the count."""
    n = 0
    with atomic_write(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n
