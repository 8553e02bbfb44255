"""Control groups for sandbox workers (Linux): memory, process and CPU limits for a whole sandbox.

A cgroup limits every process of a sandbox together, which rlimits cannot: memory including
tmpfs and shared memory, the number of processes for root (the kernel never applies
``RLIMIT_NPROC`` to uid 0, even inside a user namespace), and CPU share (one CPU per sandbox,
so processes left running cannot starve other solutions). Which hierarchy exists is
detected, never assumed:

* cgroup v2 where this process's cgroup delegates ``memory`` and ``pids`` to children
  (``cgroup.subtree_control``) and may create them (root, or a delegated systemd scope);
* otherwise the v1 ``pids`` controller (and ``memory``, ``cpu`` where also writable);
* otherwise none: ``SandboxLimits`` rlimits apply alone and ``isolation["cgroup"]`` says so.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

_counter = itertools.count()
CPU_PERIOD_US = 100_000


def _mounts(root: str = "/") -> list[tuple[str, str, set]]:
    out = []
    try:
        with open(os.path.join(root, "proc/self/mounts")) as f:
            for line in f:
                _, mnt, fstype, opts = line.split()[:4]
                if fstype in ("cgroup", "cgroup2"):
                    out.append((fstype, mnt, set(opts.split(","))))
    except OSError:
        pass
    return out


def _own_paths(root: str = "/") -> dict[str, str]:
    """``{"": v2 path, "pids": v1 path, ...}`` from /proc/self/cgroup."""
    out = {}
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    out[c] = path
    except (OSError, ValueError):
        pass
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def find_parents(root: str = "/") -> tuple[str, dict[str, str]] | None:
    """``("v2", {"": dir})`` or ``("v1", {controller: dir})``: where sandbox cgroups may be created."""
    mounts, own = _mounts(root), _own_paths(root)
    for fstype, mnt, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            d = os.path.join(root, mnt.lstrip("/"), own[""].lstrip("/"))
            enabled = set(_read(os.path.join(d, "cgroup.subtree_control")).split())
            if {"memory", "pids"} <= enabled and os.access(d, os.W_OK):
                return "v2", {"": d}
    v1 = {}
    for fstype, mnt, opts in mounts:
        for c in ("pids", "memory", "cpu"):
            if fstype == "cgroup" and c in opts and c in own and c not in v1:
                d = os.path.join(root, mnt.lstrip("/"), own[c].lstrip("/"))
                if os.access(d, os.W_OK):
                    v1[c] = d
    return ("v1", v1) if "pids" in v1 else None


def remove_stale(parents: tuple[str, dict[str, str]]) -> None:
    """Remove sandbox cgroups left by processes that were killed before their clean-up, and
    whatever still runs in them (a worker that outlived its parent)."""
    for parent in parents[1].values():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            parts = name.split("-")
            if (
                len(parts) == 4
                and name.startswith("mlx-scdpo-")
                and parts[2].isdigit()
                and not os.path.exists(f"/proc/{parts[2]}")
            ):
                Cgroup(parents[0], [os.path.join(parent, name)]).remove()  # its processes killed first


class Cgroup:
    """The cgroup(s) of one sandbox; ``procs`` are the files a starting process writes its pid to."""

    def __init__(self, version: str, dirs: list[str]):
        self.version, self.dirs = version, dirs
        self.procs = [os.path.join(d, "cgroup.procs") for d in dirs]

    def remove(self) -> None:
        """Kill what is left and remove the cgroup(s); bounded in time, never raises."""
        for d in self.dirs:
            kill = os.path.join(d, "cgroup.kill")
            if os.path.exists(kill):
                _write(kill, "1")
            else:  # cgroup v1: no cgroup.kill
                for pid in _read(os.path.join(d, "cgroup.procs")).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (OSError, ValueError):
                        pass
        for d in self.dirs:
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def create(parents: tuple[str, dict[str, str]], *, memory_bytes: int, pids: int) -> Cgroup | None:
    """A new cgroup with these limits and one CPU, or None when the kernel refuses one."""
    version, dirs = parents
    name = f"mlx-scdpo-{os.getpid()}-{next(_counter)}"
    made = []
    try:
        for controller, parent in dirs.items():
            d = os.path.join(parent, name)
            os.mkdir(d)
            made.append(d)
            if version == "v2":
                ok = _write(os.path.join(d, "memory.max"), str(memory_bytes)) and _write(
                    os.path.join(d, "pids.max"), str(pids)
                )
                _write(os.path.join(d, "memory.swap.max"), "0")
                _write(os.path.join(d, "cpu.max"), f"{CPU_PERIOD_US} {CPU_PERIOD_US}")
            elif controller == "pids":
                ok = _write(os.path.join(d, "pids.max"), str(pids))
            elif controller == "memory":
                ok = _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_bytes))
                _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_bytes))
            else:
                ok = _write(os.path.join(d, "cpu.cfs_period_us"), str(CPU_PERIOD_US)) and _write(
                    os.path.join(d, "cpu.cfs_quota_us"), str(CPU_PERIOD_US)
                )
            if not ok:
                raise OSError(f"cannot set the limits of {d}")
    except OSError:
        Cgroup(version, made).remove()
        return None
    return Cgroup(version, made)


def wrap(cgroup: Cgroup, argv: list[str]) -> list[str]:
    """``argv`` started inside ``cgroup``: the shell moves itself there, then becomes ``argv``."""
    script = (
        'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 97; shift; n=$((n-1)); done; exec "$@"'
    )
    return ["/bin/sh", "-c", script, "sh", str(len(cgroup.procs)), *cgroup.procs, *argv]
