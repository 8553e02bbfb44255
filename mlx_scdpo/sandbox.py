"""Sandboxed, stateful Python execution for code-integrated solutions.

    from mlx_scdpo.sandbox import Sandbox
    with Sandbox(timeout=6.0) as sb:
        sb.run("x = 2")
        r = sb.run("x ** 10")      # r.output == "1024\\n", r.error is None, r.timed_out is False

One worker process per ``Sandbox`` keeps its variables across ``run`` calls, like a
Jupyter kernel (the reference implementation gives each solution its own kernel). A
``SandboxPool`` keeps workers started ahead of time so start-up is not paid per solution.
Isolation is in ``mlx_scdpo.sandbox_isolation`` (bubblewrap on Linux, Seatbelt on macOS);
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

import atexit
import functools
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from mlx_scdpo import sandbox_cgroup as cgroups
from mlx_scdpo import sandbox_isolation as iso
from mlx_scdpo.sandbox_isolation import SandboxUnavailable  # noqa: F401  (part of this module's API)

WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_worker.py")
_WORKER_ERRORS = (None, "exception", "memory")


@dataclass
class SandboxLimits:
    timeout: float = field(default=6.0, metadata={"help": "Wall-clock seconds per block (reference: 6)."})
    cpu_time: int = field(default=10, metadata={"help": "CPU seconds per block (SIGXCPU)."})
    cpu_time_total: int = field(default=60, metadata={
        "help": "CPU seconds per worker process over its life (hard limit: SIGKILL, cannot be raised or caught)."})
    memory_mb: int = field(default=2048, metadata={"help": "Address-space limit of each worker process."})
    max_processes: int = field(default=32, metadata={"help": "Processes + threads the worker may have."})
    max_output: int = field(default=4000, metadata={"help": "Characters of output kept per block."})
    file_size_mb: int = field(default=16, metadata={"help": "Largest file the code may write."})
    scratch_mb: int = field(default=64, metadata={"help": "Size of the scratch directory (Linux: a tmpfs)."})
    tmp_mb: int = field(default=8, metadata={"help": "Size of each private /tmp, /var/tmp, /dev/shm, /run (Linux)."})
    recursion_limit: int = field(default=3000, metadata={"help": "Python recursion limit."})
    start_timeout: float = field(default=60.0, metadata={"help": "Seconds a worker may take to start."})
    disable: tuple = field(default=(), metadata={
        "help": "Isolation features to switch off (bwrap, seatbelt, seccomp): tests run other platforms' paths."})
    preload: tuple = field(default=None, metadata={
        "help": "Modules imported when a worker starts (default: common math modules, sympy, numpy)."})

    def __post_init__(self):
        if self.preload is None:
            self.preload = default_preload()
        self.disable = tuple(self.disable)


#: Standard-library modules math solutions use, imported while the worker starts (a pool
#: hides that cost) so that blocks do not pay for them.
STDLIB_PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "random",
                  "statistics", "re", "string", "heapq", "bisect", "operator", "datetime", "numbers", "typing")


def default_preload() -> tuple:
    import importlib.util

    extra = tuple(m for m in ("numpy", "sympy") if importlib.util.find_spec(m) is not None)
    return STDLIB_PRELOAD + extra


@dataclass
class ExecResult:
    output: str
    error: str | None = None
    timed_out: bool = False


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class _Protocol(Exception):
    pass


def _valid_text(s: str) -> str:
    """Valid UTF-8 text: lone surrogates (``chr(0xD800)``) become ``?``, so tokenizers accept it."""
    return s.encode("utf-8", "replace").decode("utf-8")


def _minimal_env(home: str, tmp: str) -> dict:
    # No inherited secrets: only what Python needs, single-threaded math libraries.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


_live: set = set()  # workers not yet killed, for the clean-up at interpreter exit
_live_lock = threading.Lock()


@atexit.register
def _kill_all() -> None:
    with _live_lock:
        workers = list(_live)
    for w in workers:
        w.kill()


_launcher_jobs: "queue.SimpleQueue | None" = None
_launcher_lock = threading.Lock()


def _launcher(jobs) -> None:
    while True:
        kwargs, box, done = jobs.get()
        try:
            box.append(subprocess.Popen(**kwargs))
        except BaseException as e:
            box.append(e)
        done.set()


def _launch(argv, **kwargs) -> subprocess.Popen:
    """``Popen`` from one thread that lives as long as the interpreter.

    ``--die-with-parent`` (PR_SET_PDEATHSIG) fires when the *thread* that started a process
    exits, so workers started from short-lived threads (the pool's) would die with them."""
    global _launcher_jobs
    with _launcher_lock:
        if _launcher_jobs is None:
            _launcher_jobs = queue.SimpleQueue()
            threading.Thread(target=_launcher, args=(_launcher_jobs,), daemon=True, name="sandbox-launcher").start()
    box, done = [], threading.Event()
    _launcher_jobs.put((dict(kwargs, args=argv), box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


class _Worker:
    """One started, confined worker process (see module docstring for what is trusted)."""

    def __init__(self, limits: SandboxLimits, mode: str):
        self.limits = limits
        self.mode = mode
        self.proc = None
        self.cgroup = None
        self.scratch = None  # a host directory only without bubblewrap (there it is a tmpfs inside)
        self._fds: list[int] = []
        self._seq = 0
        self._killed = False
        self._init_pid = self._worker_pid = None
        self._max_frame = 12 * (limits.max_output + 1024) + 4096  # JSON-escaped output and fields
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(limits).items()}
        cfg["sys_path"] = [p for p in sys.path if p and os.path.isdir(p)]  # -I drops .pth / editable dirs
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        err_r, err_w = os.pipe()
        self._fds = [self._req_w, self._rep_r, err_r]
        self._err_r = err_r
        pass_fds = [req_r, rep_w]
        cfg.update(request_fd=req_r, reply_fd=rep_w)
        python = os.path.realpath(sys.executable)
        seccomp_r = None
        try:
            if mode == "bwrap":
                program = None if "seccomp" in limits.disable else iso.seccomp_program()
                if program is not None:
                    seccomp_r, seccomp_w = os.pipe()  # a few KB: fits the pipe buffer
                    os.write(seccomp_w, program)
                    os.close(seccomp_w)
                    pass_fds.append(seccomp_r)
                argv = iso.bwrap_argv(iso._bwrap_path(), cfg["sys_path"], WORKER_PATH, scratch_mb=limits.scratch_mb,
                                      tmp_mb=limits.tmp_mb, seccomp_fd=seccomp_r)
                argv += [python, "-I", iso.WORKER_IN_SANDBOX, json.dumps(cfg)]
                parents = None if "cgroup" in limits.disable else _cgroup_parents()
                if parents is not None:
                    mb = limits.memory_mb + limits.scratch_mb + 4 * limits.tmp_mb + 64
                    self.cgroup = cgroups.create(parents, memory_bytes=mb << 20, pids=limits.max_processes + 2)
                if self.cgroup is not None:
                    argv = cgroups.wrap(self.cgroup, argv)
                cwd, env = "/", _minimal_env(iso.SCRATCH_IN_SANDBOX, "/tmp")
            else:
                self.scratch = tempfile.mkdtemp(prefix="mlx-scdpo-sandbox-")
                argv = [python, "-I", WORKER_PATH, json.dumps(cfg)]
                if mode == "seatbelt":
                    argv = [iso.SEATBELT, "-p", iso.seatbelt_profile(cfg["sys_path"], self.scratch, WORKER_PATH)] + argv
                cwd, env = self.scratch, _minimal_env(self.scratch, self.scratch)
            with _live_lock:
                _live.add(self)
            self.proc = _launch(argv, stdin=subprocess.DEVNULL, stdout=err_w, stderr=err_w, cwd=cwd, env=env,
                                start_new_session=True, pass_fds=pass_fds)
        except BaseException:
            self.kill()
            raise
        finally:
            for fd in (req_r, rep_w, err_w, seccomp_r):
                if fd is not None:
                    os.close(fd)
        os.set_blocking(self._req_w, False)
        os.set_blocking(self._rep_r, False)
        self._rpoll = select.poll()  # poll, not select(): any fd number works
        self._rpoll.register(self._rep_r, select.POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(self._req_w, select.POLLOUT)
        self.pid_in_host = None
        try:
            hello = self._read_frame(time.monotonic() + limits.start_timeout, 4096)
            if not (isinstance(hello, dict) and hello.get("ready") is True and isinstance(hello.get("limits"), list)):
                raise _Protocol("bad hello frame")
        except (_Timeout, _Died, _Protocol) as e:
            why = {"_Timeout": f"no answer in {limits.start_timeout:g} s"}.get(type(e).__name__, str(e) or "it exited")
            detail = self._stderr_tail()
            self.kill()
            raise RuntimeError(f"the sandbox worker did not start ({mode}): {why}" + (f": {detail}" if detail else ""))
        self.isolation = {"mode": mode, "limits": [str(x) for x in hello["limits"]],
                          "seccomp": mode == "bwrap" and seccomp_r is not None,
                          "cgroup": self.cgroup.version if self.cgroup else None}
        if mode == "bwrap":  # outer bwrap -> its init (pid 1 inside) -> the worker
            init = _children(self.proc.pid)
            self._init_pid = init[0] if len(init) == 1 else None
            worker = _children(self._init_pid) if self._init_pid else []
            self._worker_pid = worker[0] if len(worker) == 1 else None

    def _stderr_tail(self) -> str:
        try:
            os.set_blocking(self._err_r, False)
            data = os.read(self._err_r, 65536)
        except OSError:
            return ""
        lines = _valid_text(data.decode("utf-8", "replace")).strip().splitlines()
        return lines[-1][:300] if lines else ""

    # --- frames: every read and write is bounded by one deadline -------------------------

    def _wait(self, poller, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout
        poller.poll(max(1, int(left * 1000)))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            self._wait(self._rpoll, deadline)
            try:
                k = os.readv(self._rep_r, [view[got:]])
            except BlockingIOError:
                continue
            except OSError as e:
                raise _Died from e
            if k == 0:
                raise _Died
            got += k
        return bytes(buf)

    def _read_frame(self, deadline: float, max_bytes: int):
        (n,) = struct.unpack("<I", self._read_exact(4, deadline))
        if n > max_bytes:
            raise _Protocol(f"a reply of {n} bytes (at most {max_bytes})")
        body = self._read_exact(n, deadline)
        try:
            return json.loads(body)
        except Exception as e:  # bad UTF-8, bad JSON, nesting deeper than the recursion limit
            raise _Protocol(f"a malformed reply ({type(e).__name__})") from None

    def _write_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            self._wait(self._wpoll, deadline)
            try:
                sent += os.write(self._req_w, view[sent:])
            except BlockingIOError:
                continue
            except OSError as e:  # BrokenPipeError: the worker is gone
                raise _Died from e

    def request(self, code: str, deadline: float) -> dict:
        """The checked reply to ``code``; raises _Timeout, _Died or _Protocol."""
        if self._rpoll.poll(0):  # anything readable now was never asked for
            raise _Protocol("the worker wrote without being asked")
        self._seq += 1
        data = json.dumps({"id": self._seq, "code": code}).encode()
        self._write_all(struct.pack("<I", len(data)) + data, deadline)
        reply = self._read_frame(deadline, self._max_frame)
        if not (isinstance(reply, dict) and set(reply) == {"id", "output", "error"} and reply["id"] == self._seq
                and isinstance(reply["output"], str) and reply["error"] in _WORKER_ERRORS):
            raise _Protocol("a reply that does not match the schema")
        self._kill_strays()
        return reply

    def _kill_strays(self) -> None:
        """Processes a block started may not outlive it (Linux: the sandbox's pid namespace)."""
        if self._init_pid is None or self._worker_pid is None:
            return
        give_up = time.monotonic() + 5.0
        while time.monotonic() < give_up:
            strays = [p for p in _descendants(self._init_pid) if p != self._worker_pid and not _is_zombie(p)]
            if not strays:
                return
            for p in strays:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.005)
        raise _Protocol("processes the block started could not be stopped")

    def kill(self) -> None:
        """Kill the worker and everything it started, and remove its files. Never raises."""
        if self._killed:
            return
        self._killed = True
        try:
            if self.proc is not None:
                if self._init_pid is not None and self.proc.poll() is None:
                    # When the namespace's pid 1 dies the kernel kills every process in it, and
                    # the outer bubblewrap exits only once that is done.
                    try:
                        os.kill(self._init_pid, signal.SIGKILL)
                        self.proc.wait(timeout=5)
                    except (OSError, subprocess.TimeoutExpired):
                        pass
                try:  # outer bubblewrap (its pid 1 has --die-with-parent), or the worker's group
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.cgroup is not None:
                self.cgroup.remove()
            if self.scratch:
                _remove_tree(self.scratch)
        finally:
            with _live_lock:
                _live.discard(self)

    def exit_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "no exit status"
        if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):  # bubblewrap reports 128 + signal
            return "cpu_time"
        if code < 0:
            return f"signal {-code}"
        return f"signal {code - 128}" if self.mode == "bwrap" and code > 128 else f"exit code {code}"


@functools.lru_cache(maxsize=None)
def _cgroup_parents():
    parents = cgroups.find_parents()
    if parents is not None:
        cgroups.remove_stale(parents)
    return parents


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


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def _remove_tree(path: str) -> None:
    """Remove a directory of any depth (shutil.rmtree recurses; ``rm`` does not), bounded in time."""
    try:
        subprocess.run(["rm", "-rf", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


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
            result = ExecResult(output=f"TimeoutError: the block ran longer than {self.limits.timeout:g} s",
                                error="timeout", timed_out=True)
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
