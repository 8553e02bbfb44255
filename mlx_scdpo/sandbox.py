"""Sandboxed, stateful Python execution for code-integrated solutions.

    from mlx_scdpo.sandbox import Sandbox
    with Sandbox(timeout=6.0) as sb:
        sb.run("x = 2")
        r = sb.run("x ** 10")      # r.output == "1024\\n", r.error is None, r.timed_out is False

One worker process per ``Sandbox`` keeps its variables across ``run`` calls, like a
Jupyter kernel (the reference implementation gives each solution its own kernel). A
``SandboxPool`` keeps workers started ahead of time so Python's start-up is not paid per
solution. Isolation and limits are described in ``mlx_scdpo.sandbox_worker`` and README.

Every failure comes back as an ``ExecResult`` with ``error`` set to a short kind:
``"timeout"`` (wall time), ``"cpu_time"``, ``"memory"``, ``"exception"`` (a traceback is in
``output``), or ``"killed"`` (the worker died: ``os._exit``, a signal, a crash). After a
timeout or a death the worker is killed with everything it started and replaced by a
fresh one: the variables of earlier blocks are gone (callers replay what they need).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_worker.py")
_UID_BASE = 61000
_uid_counter = itertools.count()


@dataclass
class SandboxLimits:
    timeout: float = field(default=6.0, metadata={"help": "Wall-clock seconds per block (reference: 6)."})
    cpu_time: int = field(default=10, metadata={"help": "CPU seconds per block."})
    memory_mb: int = field(default=2048, metadata={"help": "Address-space limit of the worker."})
    max_processes: int = field(default=32, metadata={"help": "Processes + threads the worker may have."})
    max_output: int = field(default=4000, metadata={"help": "Characters of output kept per block."})
    file_size_mb: int = field(default=16, metadata={"help": "Largest file the code may write."})
    recursion_limit: int = field(default=3000, metadata={"help": "Python recursion limit."})
    network_namespace: bool = field(default=True, metadata={"help": "Use a network namespace if allowed."})
    preload: tuple = field(default=None, metadata={
        "help": "Modules imported before privileges are dropped (default: common math modules, sympy, numpy)."})

    def __post_init__(self):
        if self.preload is None:
            self.preload = default_preload()


#: Standard-library modules math solutions use. Under a private uid the worker may not be
#: able to read the Python installation any more (e.g. pyenv under /root), so whatever the
#: code may import is imported before the privilege drop.
STDLIB_PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "random",
                  "statistics", "re", "string", "heapq", "bisect", "operator", "datetime", "numbers", "typing", "socket")


def default_preload() -> tuple:
    import importlib.util

    extra = tuple(m for m in ("numpy", "sympy") if importlib.util.find_spec(m) is not None)
    return STDLIB_PRELOAD + extra


@dataclass
class ExecResult:
    output: str
    error: str | None = None
    timed_out: bool = False


def _minimal_env(scratch: str) -> dict:
    # No inherited secrets: only what Python needs, single-threaded math libraries.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class _Worker:
    """One started worker process with its scratch directory."""

    def __init__(self, limits: SandboxLimits):
        self.limits = limits
        self.scratch = tempfile.mkdtemp(prefix="mlx-scdpo-sandbox-")
        self.uid = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.uid = _UID_BASE + next(_uid_counter) % 4000
            os.chown(self.scratch, self.uid, self.uid)
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(limits).items()}
        cfg["sys_path"] = [p for p in sys.path if p]  # -I drops site dirs added by .pth / editable installs
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        cfg.update(uid=self.uid, request_fd=req_r, reply_fd=rep_w)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", _WORKER, json.dumps(cfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.scratch, env=_minimal_env(self.scratch), start_new_session=True,
            pass_fds=(req_r, rep_w),
        )
        os.close(req_r)
        os.close(rep_w)
        try:
            hello = self._read(60.0)
        except EOFError:
            hello = None
        if not hello or not hello.get("ready"):
            self.kill()
            raise RuntimeError("the sandbox worker did not start")
        self.isolation = hello["isolation"]

    def _read(self, timeout: float):
        """The next reply; None on timeout; EOFError when the worker is gone."""
        buf = b""
        need = 4
        header = True
        while True:
            ready, _, _ = select.select([self._rep_r], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._rep_r, need - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
            if len(buf) < need:
                continue
            if header:
                need = struct.unpack("<I", buf)[0]
                buf, header = b"", False
            else:
                return json.loads(buf)

    def request(self, code: str, timeout: float):
        data = json.dumps({"code": code}).encode()
        os.write(self._req_w, struct.pack("<I", len(data)) + data)
        return self._read(timeout)

    def kill(self) -> None:
        """Kill the worker, its process group and (with a private uid) every process it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.uid is not None:
            _kill_uid(self.uid)
        self.proc.wait()
        for fd in (self._req_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)

    def exit_reason(self) -> str:
        code = self.proc.wait(timeout=5)
        if code == -signal.SIGXCPU:
            return "cpu_time"
        return f"signal {-code}" if code < 0 else f"exit code {code}"


def _kill_uid(uid: int) -> None:
    """SIGKILL every process owned by ``uid`` (children that left the process group)."""
    for _ in range(3):
        found = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/status") as f:
                    uid_line = next(line for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(uid_line.split()[1]) == uid:
                found = True
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not found:
            return


class Sandbox:
    """A stateful sandboxed Python session (see module docstring)."""

    def __init__(self, timeout: float = 6.0, pool: "SandboxPool | None" = None, **limits):
        self.limits = SandboxLimits(timeout=timeout, **limits) if pool is None else pool.limits
        self._pool = pool
        self._worker: _Worker | None = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure(self) -> _Worker:
        if self._worker is None:
            self._worker = self._pool.take() if self._pool else _Worker(self.limits)
        return self._worker

    @property
    def isolation(self) -> dict:
        """Which mechanisms are in force (network: ``netns+socket-audit`` or ``socket-audit``...)."""
        return self._ensure().isolation

    def run(self, code: str) -> ExecResult:
        worker = self._ensure()
        died = False
        try:
            reply = worker.request(code, self.limits.timeout)
        except (EOFError, OSError):
            reply, died = None, True
        if reply is not None:
            return ExecResult(output=reply["output"], error=reply["error"])
        if not died:  # no answer in time
            result = ExecResult(output=f"TimeoutError: the block ran longer than {self.limits.timeout:g} s",
                                error="timeout", timed_out=True)
        else:
            reason = worker.exit_reason()
            kind = "cpu_time" if reason == "cpu_time" else "killed"
            result = ExecResult(output=f"the sandbox worker died ({reason})", error=kind)
        self.reset()
        return result

    def reset(self) -> None:
        """Drop the worker (and its state); the next ``run`` starts from a fresh one."""
        if self._worker is not None:
            self._worker.kill()
            self._worker = None

    def close(self) -> None:
        self.reset()


class SandboxPool:
    """Keeps ``size`` workers started and idle; ``Sandbox(pool=pool)`` takes one when it first runs."""

    def __init__(self, size: int = 4, **limits):
        self.limits = SandboxLimits(**limits)
        self.size = size
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._starting = 0
        self._closed = False
        for _ in range(size):
            self._spawn_async()

    def _spawn_async(self) -> None:
        self._starting += 1
        threading.Thread(target=self._spawn, daemon=True).start()

    def _spawn(self) -> None:
        try:
            w = _Worker(self.limits)
        except Exception:
            w = None
        with self._cond:
            self._starting -= 1
            if w is not None and not self._closed:
                self._idle.append(w)
            elif w is not None:
                w.kill()
            self._cond.notify_all()

    def take(self) -> _Worker:
        with self._cond:
            if not self._idle and self._starting == 0:
                self._spawn_async()
            while not self._idle:
                self._cond.wait()
            w = self._idle.pop()
            self._spawn_async()  # refill in the background
            return w

    def sandbox(self) -> Sandbox:
        return Sandbox(pool=self)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
