"""Append-only JSONL files that survive being killed mid-write (resumable runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_finished(path: str | Path, key: str | None) -> dict | list:
    """Rows of an append-only JSONL file, by ``key`` (or as a list when ``key`` is None).

    A torn last line (the process was killed while writing it) is cut from the file, so
    appending can continue cleanly.
    """
    path = Path(path)
    rows: list[dict] = []
    if not path.exists():
        return {} if key else rows
    good = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            good += len(raw)
    if good < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return {r[key]: r for r in rows} if key else rows


def write_jsonl_atomic(path: str | Path, rows) -> int:
    """Write all rows to ``path`` through a temporary file and a rename; returns the count."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
