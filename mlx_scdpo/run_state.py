"""One run per output folder: a lock, and a record of what defines the run.

* ``folder_lock``: an exclusive ``flock`` on ``FOLDER/.mlx-scdpo.lock`` for the run's
  lifetime. The kernel drops it when the holder dies (even on kill -9), so a stale lock
  needs no clean-up; a live holder is named (pid, host, command) in a one-line error.
* ``check_identity``: ``FOLDER/<name>.json`` records the run's identity (model and adapter
  identities, data hashes, the settings that change results). A later run in the same
  folder with a different identity is refused with one line naming what differs.
* ``kill_point``: a test hook. ``MLX_SCDPO_KILL_AT=name[:n]`` kills the process with
  SIGKILL the n-th time (default 1st) it passes ``kill_point(name)``, so tests can kill a
  run at an exact moment (between two writes of a checkpoint, between two renames).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from mlx_scdpo.errors import UserError
from mlx_scdpo.jsonl import write_json_atomic

LOCK_NAME = ".mlx-scdpo.lock"
_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process here when ``MLX_SCDPO_KILL_AT`` names this point (tests only)."""
    want = os.environ.get("MLX_SCDPO_KILL_AT")
    if not want:
        return
    point, _, count = want.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def folder_lock(folder: str | Path, command: str):
    """Hold ``folder`` for this run; a second run on it stops with one line naming the holder."""
    folder = Path(folder)
    make_folder(folder)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise UserError(
                f"{folder}: in use by {holder}; wait for it to finish or use another folder"
            ) from None
        except OSError:  # a file system without locks (some network mounts): run unguarded, as before
            pass
        # Ours now (any earlier holder is gone): record who holds it, for the message above.
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def refuse_overwriting(inputs, folder: str | Path, names: tuple[str, ...]) -> None:
    """Inputs are never written: one that is also one of the run's outputs (``folder/name``, by any
    path or link; e.g. a problems file named ``solutions.jsonl`` in the output folder) is one line."""
    for name in names:
        out = Path(folder) / name
        for i in inputs:
            if i is not None and out.exists() and Path(i).exists() and os.path.samefile(i, out):
                raise UserError(
                    f"{i}: is also an output of this command ({out}); use another output folder "
                    f"(inputs are never changed)"
                )


def check_output_folder(folder: str | Path, option: str) -> None:
    """A folder to be written later must not be (or sit under) a file: one line now, not a traceback later."""
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{existing}: exists and is not a folder ({option} {folder})")


def make_folder(folder: str | Path) -> Path:
    """``folder`` created if missing; a file in its place (or in its path) is one line, not a traceback."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder (an output folder is needed here)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the output folder ({e.strerror})") from None
    return folder


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"'{info.get('command', '?')}' (pid {info.get('pid', '?')} on {info.get('host', '?')})"
    except (OSError, ValueError):
        return "another process"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def model_identity(model: str) -> str:
    """A model folder's identity: config and tokenizer bytes, weight files' names, sizes and times.

    Weights are not hashed (gigabytes); a changed file changes its size or modification
    time. A hub id is its own identity.
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file():
            continue
        if f.suffix in (".json", ".model", ".txt", ".jinja") or f.name.startswith("tokenizer"):
            h.update(f"{f.name}:{file_digest(f)}".encode())
        elif f.suffix in (".safetensors", ".npz", ".gguf", ".bin"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.resolve()}@{h.hexdigest()[:16]}"


def adapter_identity(adapter_path: str | None) -> str | None:
    """Hash of an adapter folder's weights and config (None: no adapters)."""
    if adapter_path is None:
        return None
    path = Path(adapter_path)
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapters.safetensors"):
        if (path / name).is_file():
            h.update(file_digest(path / name).encode())
    return h.hexdigest()[:16]


def data_identity(*paths) -> str | None:
    """Hash of input files' bytes (None when none exists, e.g. a hub dataset)."""
    found = [Path(p) for p in paths if p is not None and Path(p).is_file()]
    if not found:
        return None
    return hashlib.sha256("".join(file_digest(p) for p in found).encode()).hexdigest()[:16]


def check_identity(
    folder: str | Path, name: str, identity: dict, outputs: tuple[str, ...], *, what: str = "run"
) -> None:
    """Refuse a different run in ``folder`` (one line naming what differs); record this one.

    The recorded run binds only once it has written some of its ``outputs`` (file names in
    ``folder``): a run that failed before producing anything (a mistyped model) is replaced.
    """
    folder = Path(folder)
    path = folder / f"{name}.json"
    if path.is_file() and any((folder / o).exists() for o in outputs):
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            old = None
        if not isinstance(old, dict):
            raise UserError(f"{path}: damaged (not a JSON object); remove it or use another folder")
        diff = [k for k in identity if old.get(k) != identity[k]] + [k for k in old if k not in identity]
        if diff:
            shown = ", ".join(f"{k} ({old.get(k)!r} then, {identity.get(k)!r} now)" for k in diff[:3])
            raise UserError(f"{folder}: holds a different {what}: {shown}; use another folder")
        return
    write_json_atomic(path, identity)
