"""Sandboxed, stateful Python execution for code-integrated solutions.

    from mlx_scdpo.sandbox.pool import Sandbox
    with Sandbox(timeout=6.0) as sb:
        sb.run("x = 2")
        r = sb.run("x ** 10")      # r.output == "1024\\n", r.error is None, r.timed_out is False

One worker process per ``Sandbox`` keeps its variables across ``run`` calls, like a
Jupyter kernel (the reference implementation gives each solution its own kernel). A
``SandboxPool`` keeps workers started ahead of time so start-up is not paid per solution.
Isolation is in ``mlx_scdpo.sandbox.isolation`` (bubblewrap on Linux, Seatbelt on macOS) and
``mlx_scdpo.sandbox.cgroup``, the worker process and its protocol in ``mlx_scdpo.sandbox.process``;
creating a ``Sandbox`` or ``SandboxPool`` raises ``SandboxUnavailable`` where there is none.

``run`` and ``close`` never raise and never hang. The parent trusts nothing a worker sends:
one deadline covers writing the block and reading the whole reply, a reply is bounded in
size and schema-checked, and output is made valid UTF-8. Every failure comes back as an
``ExecResult`` with ``error`` set to a short kind: ``"timeout"`` (wall time), ``"cpu_time"``,
``"memory"``, ``"exception"`` (a traceback is in ``output``), ``"killed"`` (the worker died:
``os._exit``, a signal, a crash), ``"protocol"`` (the worker broke the protocol) or
``"start"`` (no worker could be started). After any failure but ``"exception"`` and
``"memory"`` the worker is killed with everything it started and replaced by a fresh one:
the variables of earlier blocks are gone (callers replay what they need).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import dataclass, field

from mlx_scdpo.sandbox import isolation as iso
from mlx_scdpo.sandbox.isolation import SandboxUnavailable  # noqa: F401  (part of this module's API)
from mlx_scdpo.sandbox.process import WORKER_PATH, _Died, _Protocol, _Timeout, _valid_text, _Worker  # noqa: F401


@dataclass
class SandboxLimits:
    timeout: float = field(default=6.0, metadata={"help": "Wall-clock seconds per block (reference: 6)."})
    cpu_time: int = field(default=10, metadata={"help": "CPU seconds per block (SIGXCPU)."})
    cpu_time_total: int = field(
        default=60,
        metadata={
            "help": "CPU seconds per worker process over its life (hard limit: SIGKILL, cannot be raised or caught)."
        },
    )
    memory_mb: int = field(default=2048, metadata={"help": "Address-space limit of each worker process."})
    max_processes: int = field(default=32, metadata={"help": "Processes + threads the worker may have."})
    max_output: int = field(default=4000, metadata={"help": "Characters of output kept per block."})
    file_size_mb: int = field(default=16, metadata={"help": "Largest file the code may write."})
    scratch_mb: int = field(default=64, metadata={"help": "Size of the scratch directory (Linux: a tmpfs)."})
    tmp_mb: int = field(
        default=8, metadata={"help": "Size of each private /tmp, /var/tmp, /dev/shm, /run (Linux)."}
    )
    recursion_limit: int = field(default=3000, metadata={"help": "Python recursion limit."})
    start_timeout: float = field(default=60.0, metadata={"help": "Seconds a worker may take to start."})
    disable: tuple = field(
        default=(),
        metadata={
            "help": "Isolation features to switch off (bwrap, seatbelt, seccomp): tests run other platforms' paths."
        },
    )
    preload: tuple = field(
        default=None,
        metadata={
            "help": "Modules imported when a worker starts (default: common math modules, sympy, numpy)."
        },
    )

    def __post_init__(self):
        if self.preload is None:
            self.preload = default_preload()
        self.disable = tuple(self.disable)


#: Standard-library modules math solutions use, imported while the worker starts (a pool
#: hides that cost) so that blocks do not pay for them.
STDLIB_PRELOAD = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "itertools",
    "functools",
    "collections",
    "random",
    "statistics",
    "re",
    "string",
    "heapq",
    "bisect",
    "operator",
    "datetime",
    "numbers",
    "typing",
)


def default_preload() -> tuple:
    extra = tuple(m for m in ("numpy", "sympy") if importlib.util.find_spec(m) is not None)
    return STDLIB_PRELOAD + extra


@dataclass
class ExecResult:
    output: str
    error: str | None = None
    timed_out: bool = False


class Sandbox:
    """A stateful sandboxed Python session (see module docstring)."""

    def __init__(self, timeout: float = 6.0, pool: "SandboxPool | None" = None, **limits):
        self.limits = SandboxLimits(timeout=timeout, **limits) if pool is None else pool.limits
        self._mode = iso.detect(self.limits.disable) if pool is None else pool.mode
        self._pool = pool
        self._worker: _Worker | None = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure(self) -> _Worker:
        if self._worker is None:
            self._worker = self._pool.take() if self._pool else _Worker(self.limits, self._mode)
        return self._worker

    @property
    def isolation(self) -> dict:
        """What confines the worker: ``mode`` (bwrap, seatbelt, unconfined), ``limits``, ``seccomp``."""
        try:
            return dict(self._ensure().isolation)
        except Exception as e:
            return {"mode": "none", "error": str(e)}

    def run(self, code: str) -> ExecResult:
        try:
            return self._run(code)
        except Exception as e:  # run() never raises: whatever went wrong, the worker is replaced
            self.reset()
            return ExecResult(output=f"the sandbox failed: {type(e).__name__}: {e}", error="protocol")

    def _run(self, code: str) -> ExecResult:
        try:
            worker = self._ensure()
        except Exception as e:
            return ExecResult(output=_valid_text(str(e)), error="start")
        deadline = time.monotonic() + self.limits.timeout  # starting a worker is not the block's time
        try:
            reply = worker.request(code, deadline)
        except _Timeout:
            result = ExecResult(
                output=f"TimeoutError: the block ran longer than {self.limits.timeout:g} s",
                error="timeout",
                timed_out=True,
            )
        except _Died:
            reason = worker.exit_reason()
            kind = "cpu_time" if reason == "cpu_time" else "killed"
            result = ExecResult(output=f"the sandbox worker died ({reason})", error=kind)
        except _Protocol as e:
            result = ExecResult(output=f"the sandbox worker broke the protocol: {e}", error="protocol")
        else:
            output = reply["output"]
            if len(output) > self.limits.max_output + 100:
                output = output[: self.limits.max_output] + "\n... [output truncated]"
            return ExecResult(output=_valid_text(output), error=reply["error"])
        self.reset()
        return result

    def reset(self) -> None:
        """Drop the worker (and its state); the next ``run`` starts from a fresh one. Never raises."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()

    def close(self) -> None:
        self.reset()


class SandboxPool:
    """Keeps ``size`` workers started and idle; ``Sandbox(pool=pool)`` takes one when it first runs."""

    def __init__(self, size: int = 4, **limits):
        self.limits = SandboxLimits(**limits)
        self.mode = iso.detect(self.limits.disable)  # SandboxUnavailable: one line, before any thread starts
        self.size = size
        self._idle: list[_Worker] = []
        self._errors: list[str] = []
        self._cond = threading.Condition(threading.Lock())
        self._starting = 0
        self._closed = False
        with self._cond:
            for _ in range(size):
                self._spawn_async()

    def _spawn_async(self) -> None:  # with self._cond held
        self._starting += 1
        threading.Thread(target=self._spawn, daemon=True, name="sandbox-start").start()

    def _spawn(self) -> None:
        w, err = None, None
        try:
            w = _Worker(self.limits, self.mode)
        except Exception as e:
            err = str(e)
        with self._cond:
            self._starting -= 1
            if w is not None and not self._closed:
                self._idle.append(w)
                w = None
            if err is not None:
                self._errors = (self._errors + [err])[-4:]
            self._cond.notify_all()
        if w is not None:
            w.kill()

    def take(self) -> _Worker:
        """An idle worker; raises ``RuntimeError`` in bounded time when none could be started."""
        deadline = time.monotonic() + self.limits.start_timeout + 5
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the sandbox pool is closed")
                if self._idle:
                    w = self._idle.pop()
                    self._spawn_async()  # refill in the background
                    return w
                if self._errors:
                    raise RuntimeError(self._errors.pop(0))
                if self._starting == 0:
                    self._spawn_async()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no sandbox worker started within {self.limits.start_timeout:g} s")
                self._cond.wait(left)

    def sandbox(self) -> Sandbox:
        return Sandbox(pool=self)

    def close(self) -> None:
        """Kill the idle workers (workers in use die with their ``Sandbox``). Never raises."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for w in idle:
            w.kill()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
