"""One confined worker process and the protocol with it; the parent trusts nothing it reads.

Used by ``mlx_scdpo.sandbox.pool`` (the public API). A ``_Worker`` is started inside the isolation
of ``mlx_scdpo.sandbox.isolation`` (and a cgroup from ``mlx_scdpo.sandbox.cgroup`` where the
host allows), answers length-prefixed JSON frames over two pipes, and is killed with
everything it started. Reads and writes share one deadline per block and go through
``poll()`` (any fd number); a reply is bounded in size and schema-checked; any violation
raises ``_Protocol``, a dead worker ``_Died``, the deadline ``_Timeout``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import queue
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict

from mlx_scdpo.sandbox import cgroup as cgroups
from mlx_scdpo.sandbox import isolation as iso
from mlx_scdpo.sandbox.procfs import _all_stopped, _children, _descendants, _is_zombie  # noqa: F401

WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_WORKER_ERRORS = (None, "exception", "memory")


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
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


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
            threading.Thread(
                target=_launcher, args=(_launcher_jobs,), daemon=True, name="sandbox-launcher"
            ).start()
    box, done = [], threading.Event()
    _launcher_jobs.put((dict(kwargs, args=argv), box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


class _Worker:
    """One started, confined worker process (see module docstring for what is trusted)."""

    def __init__(self, limits, mode: str):  # limits: a sandbox.SandboxLimits
        self.limits = limits
        self.mode = mode
        self.proc = None
        self.cgroup = None
        self.scratch = None  # a host directory only without bubblewrap (there it is a tmpfs inside)
        self._fds: list[int] = []
        self._seq = 0
        self._killed = False
        self._paused = None  # the pid stopped between blocks
        self._init_pid = self._worker_pid = None
        self._max_frame = 12 * (limits.max_output + 1024) + 4096  # JSON-escaped output and fields
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(limits).items()}
        cfg["sys_path"] = iso.worker_sys_path(sys.path, limits.preload)  # -I drops .pth / editable dirs
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
                if program is None and "seccomp" not in limits.disable:
                    warnings.warn(
                        "mlx-scdpo: libseccomp is not installed (apt-get install libseccomp2): the sandbox "
                        "runs without its system-call filter (docs/code-and-sandbox.md, Sandbox)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                if program is not None:
                    seccomp_r, seccomp_w = os.pipe()  # a few KB: fits the pipe buffer
                    os.write(seccomp_w, program)
                    os.close(seccomp_w)
                    pass_fds.append(seccomp_r)
                argv = iso.bwrap_argv(
                    iso._bwrap_path(),
                    cfg["sys_path"],
                    WORKER_PATH,
                    scratch_mb=limits.scratch_mb,
                    tmp_mb=limits.tmp_mb,
                    seccomp_fd=seccomp_r,
                )
                argv += [python, "-I", iso.WORKER_IN_SANDBOX, json.dumps(cfg)]
                parents = None if "cgroup" in limits.disable else _cgroup_parents()
                if parents is not None:
                    mb = limits.memory_mb + limits.scratch_mb + 4 * limits.tmp_mb + 64
                    self.cgroup = cgroups.create(
                        parents, memory_bytes=mb << 20, pids=limits.max_processes + 2
                    )
                if self.cgroup is not None:
                    argv = cgroups.wrap(self.cgroup, argv)
                cwd, env = "/", _minimal_env(iso.SCRATCH_IN_SANDBOX, "/tmp")
            else:
                self.scratch = tempfile.mkdtemp(prefix="mlx-scdpo-sandbox-")
                argv = [python, "-I", WORKER_PATH, json.dumps(cfg)]
                if mode == "seatbelt":
                    argv = [
                        iso.SEATBELT,
                        "-p",
                        iso.seatbelt_profile(cfg["sys_path"], self.scratch, WORKER_PATH),
                    ] + argv
                cwd, env = self.scratch, _minimal_env(self.scratch, self.scratch)
            with _live_lock:
                _live.add(self)
            self.proc = _launch(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err_w,
                stderr=err_w,
                cwd=cwd,
                env=env,
                start_new_session=True,
                pass_fds=pass_fds,
            )
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
        try:
            hello = self._read_frame(time.monotonic() + limits.start_timeout, 4096)
            if not (
                isinstance(hello, dict)
                and hello.get("ready") is True
                and isinstance(hello.get("limits"), list)
            ):
                raise _Protocol("bad hello frame")
        except (_Timeout, _Died, _Protocol) as e:
            why = {"_Timeout": f"no answer in {limits.start_timeout:g} s"}.get(
                type(e).__name__, str(e) or "it exited"
            )
            detail = self._stderr_tail()
            self.kill()
            raise RuntimeError(
                f"the sandbox worker did not start ({mode}): {why}" + (f": {detail}" if detail else "")
            ) from None  # the reason is in the message
        self.isolation = {
            "mode": mode,
            "limits": [str(x) for x in hello["limits"]],
            "seccomp": mode == "bwrap" and seccomp_r is not None,
            "cgroup": self.cgroup.version if self.cgroup else None,
        }
        if mode == "bwrap":  # outer bwrap -> [its pid 1, without --as-pid-1 ->] the worker
            init = _children(self.proc.pid)
            self._init_pid = init[0] if len(init) == 1 else None
            if "--as-pid-1" in argv:
                self._worker_pid = self._init_pid
            else:
                worker = _children(self._init_pid) if self._init_pid else []
                self._worker_pid = worker[0] if len(worker) == 1 else None
        self.isolation["kills_leftover_processes"] = self._worker_pid is not None

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
        if self._rpoll.poll(0):  # readable before we asked: the worker is gone, or wrote unasked
            try:
                extra = os.read(self._rep_r, 1)
            except BlockingIOError:
                extra = None
            except OSError as e:
                raise _Died from e
            if extra == b"":
                raise _Died
            if extra:
                raise _Protocol("the worker wrote without being asked")
        self._resume()
        # An id the worker cannot predict: a thread a block left behind (paused between blocks,
        # running again from here) cannot have a forged reply ready for this request.
        self._seq = secrets.randbits(62)
        data = json.dumps({"id": self._seq, "code": code}).encode()
        self._write_all(struct.pack("<I", len(data)) + data, deadline)
        reply = self._read_frame(deadline, self._max_frame)
        if not (
            isinstance(reply, dict)
            and set(reply) == {"id", "output", "error"}
            and reply["id"] == self._seq
            and isinstance(reply["output"], str)
            and reply["error"] in _WORKER_ERRORS
        ):
            raise _Protocol("a reply that does not match the schema")
        self._pause()
        self._kill_strays()
        return reply

    def _pause(self) -> None:
        """Stop the worker between blocks (SIGSTOP; SIGCONT with the next request): threads a
        block left running burn no CPU while the model writes, nor fork after the clean-up."""
        pid = self._worker_pid if self.mode == "bwrap" else self.proc.pid  # elsewhere the worker is proc
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGSTOP)
        except OSError:
            return
        self._paused = pid
        give_up = time.monotonic() + 1.0
        while time.monotonic() < give_up and not _all_stopped(pid):
            time.sleep(0.0005)

    def _resume(self) -> None:
        pid, self._paused = self._paused, None
        if pid:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass

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


def _remove_tree(path: str) -> None:
    """Remove a directory of any depth (shutil.rmtree recurses; ``rm`` does not), bounded in time."""
    try:
        subprocess.run(
            ["rm", "-rf", "--", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
