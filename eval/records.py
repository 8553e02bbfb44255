"""Strict reading of JSONL input files: every bad line is one ``UserError`` naming file, line and field.

Inputs are read-only: this module never writes. A file is rejected (not repaired) when a
line is not UTF-8, is blank, is not JSON, is not a JSON object (a scalar, ``null``, a
list), or when a field has the wrong type. A missing final newline is fine: the last
record is read like any other. (The project's own append logs, which may end in a torn
line after a kill, are read by ``mlx_scdpo.jsonl.read_finished`` instead.)

A schema maps field names to kinds: a Python type (``str``, ``int``, ``float``, ``bool``,
``list``, ``dict``), a tuple of them, or one of the named kinds in ``KINDS``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from eval.errors import UserError, where


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _token_ids(v) -> bool:
    return isinstance(v, list) and all(_is_int(t) and t >= 0 for t in v)


def _text_or_messages(v) -> bool:
    return isinstance(v, str) or (
        isinstance(v, list)
        and bool(v)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in v
        )
    )


def _samples(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(s, dict)
        and isinstance(s.get("text"), str)
        and _token_ids(s.get("ids"))
        and isinstance(s.get("correct"), bool)
        for s in v
    )


#: Named kinds: (check, what the error says the field must be).
KINDS = {
    "token_ids": (_token_ids, "a list of non-negative integer token ids"),
    "text_or_messages": (_text_or_messages, "text or a non-empty list of {role, content} messages"),
    "samples": (_samples, "a list of samples with text, ids (token ids) and correct (true/false)"),
    "int": (_is_int, "an integer"),
}
_TYPE_NAMES = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def check_field(value, kind) -> str | None:
    """None if ``value`` is of ``kind``, else what it must be."""
    if isinstance(kind, str):
        ok, what = KINDS[kind]
        return None if ok(value) else what
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is int and _is_int(value):
            return None
        if k is float and (isinstance(value, float) or _is_int(value)):
            return None
        if k not in (int, float) and isinstance(value, k) and not (k is not bool and isinstance(value, bool)):
            return None
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def first_field(row: dict, names: tuple[str, ...], path, line: int | None = None, required: bool = True):
    """(name, value) of the first of ``names`` (synonyms, e.g. ``question``/``problem``) in ``row``.

    None of them is one ``UserError`` (``path:line: field 'a/b' is missing``), or ``(None, None)``
    when not ``required``.
    """
    for name in names:
        if name in row:
            return name, row[name]
    if required:
        raise UserError(f"{where(path, line, '/'.join(names))} is missing")
    return None, None


def check_record(row, path, lineno: int, schema: dict | None = None, optional: dict | None = None) -> dict:
    """``row`` if it is an object with the ``schema`` fields (and any ``optional`` ones) of the right kinds."""
    if not isinstance(row, dict):
        got = "null" if row is None else type(row).__name__
        raise UserError(f"{where(path, lineno)}: expected a JSON object, got {got}")
    for name, kind in (schema or {}).items():
        present, value = first_field(row, name if isinstance(name, tuple) else (name,), path, lineno)
        bad = check_field(value, kind) if kind is not None else None
        if bad:
            raise UserError(f"{where(path, lineno, present)} must be {bad}")
    for name, kind in (optional or {}).items():
        if name in row and row[name] is not None:
            bad = check_field(row[name], kind)
            if bad:
                raise UserError(f"{where(path, lineno, name)} must be {bad}")
    return row


#: A ``\\uD800``-``\\uDFFF`` escape: valid only as half of a pair (Python's json accepts a lone one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class _NotJSON(ValueError):
    """NaN, Infinity or a number beyond float range: Python's json reads them, JSON (RFC 8259) has none."""


def _no_constant(name: str):
    raise _NotJSON(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJSON(f"{text[:20]} is beyond the range of a number")
    return value


def strict_loads(text: str):
    """``json.loads`` refusing NaN, Infinity and out-of-range numbers (``_NotJSON``)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _check_unicode(value, raw: bytes, at: str) -> None:
    """A lone surrogate escape (``"\\ud800"``) parses, but is not text: it could be neither tokenized
    nor written back as UTF-8. Checked only where such an escape occurs (rare)."""
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{at}: a lone surrogate escape (\\ud800-\\udfff) is not Unicode text") from None


def iter_lines(path: str | Path):
    """(line number, parsed JSON value) of every line of a JSONL file; bad bytes or JSON raise ``UserError``."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{where(path, lineno)}: not UTF-8 text (byte {e.start + 1} of the line)"
                ) from None
            if not line.strip():
                raise UserError(f"{where(path, lineno)}: blank line (expected one JSON object per line)")
            try:
                value = strict_loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where(path, lineno)}: invalid JSON ({e.msg})") from None
            except _NotJSON as e:
                raise UserError(f"{where(path, lineno)}: invalid JSON ({e})") from None
            except RecursionError:
                raise UserError(f"{where(path, lineno)}: JSON nested too deeply") from None
            _check_unicode(value, raw, where(path, lineno))
            yield lineno, value


def read_records(
    path: str | Path,
    schema: dict | None = None,
    optional: dict | None = None,
    *,
    numbered: bool = False,
    allow_empty: bool = False,
    json_array: bool = False,
) -> list:
    """Every record of a JSONL input file, checked against ``schema`` (see module docstring).

    ``numbered``: (line number, record) pairs. ``json_array``: a ``.json`` file may also be one
    JSON array of records (numbered from 1). An empty file raises unless ``allow_empty``.
    """
    path = Path(path)
    if not path.is_file():  # a FIFO or device could hang or never end: only regular files are read
        raise UserError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    try:
        return _read_records(path, schema, optional, numbered, allow_empty, json_array)
    except OSError as e:  # unreadable (permissions, a folder, an I/O error)
        raise UserError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None


def _read_records(path: Path, schema, optional, numbered: bool, allow_empty: bool, json_array: bool) -> list:
    if json_array and path.suffix == ".json" and _starts_with_bracket(path):
        try:
            rows = strict_loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        except _NotJSON as e:
            raise UserError(f"{path}: invalid JSON ({e})") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{where(path, e.lineno)}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise UserError(f"{path}: JSON nested too deeply") from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a JSON array of objects")
        _check_unicode(rows, path.read_bytes(), str(path))
        numbered_rows = list(enumerate(rows, 1))
    else:
        numbered_rows = list(iter_lines(path))
    if not numbered_rows and not allow_empty:
        raise UserError(f"{path}: file is empty")
    out = [(n, check_record(row, path, n, schema, optional)) for n, row in numbered_rows]
    return out if numbered else [row for _, row in out]


def _starts_with_bracket(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"[")
