"""The host's view of a sandbox's processes, read from ``/proc`` (Linux): children, all
descendants, whether a process is a zombie or stopped. Used by ``mlx_scdpo.sandbox.process``
to kill what a block left behind and to pause the worker between blocks."""

from __future__ import annotations

import os


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):  # kernels without CONFIG_PROC_CHILDREN
        return [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _parent(p) == pid]
    out = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], _children(pid)
    while todo and len(out) < 10000:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _all_stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (or gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in "TtZX":
                    return False
        except (OSError, IndexError):
            pass
    return True


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True
