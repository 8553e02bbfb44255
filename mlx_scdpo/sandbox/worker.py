"""The sandboxed, stateful Python worker (one per solution). Standard library only, portable.

Started by ``mlx_scdpo.sandbox.pool`` as ``python -I worker.py CONFIG_JSON`` inside the
isolation of ``mlx_scdpo.sandbox.isolation`` (bubblewrap on Linux, Seatbelt on macOS), with
the scratch directory as working directory and a minimal environment. The worker confines
nothing by hand: before any model code runs it only imports the configured modules and sets
resource limits with hard limit = soft limit, so a block can lower them but never raise
them (address space, file size, open files, processes, core dumps, and CPU: a per-block
soft limit that sends ``SIGXCPU`` below a hard limit for the worker's whole life, which
``SIGKILL`` enforces even if the block catches ``SIGXCPU``).

Protocol: length-prefixed JSON over two inherited pipe fds (numbers in the config); fds
0-2 point to /dev/null once the worker is ready and ``sys.stdin`` is empty. The parent
trusts nothing it reads here: it bounds size and time and checks every frame's schema.
"""

import ast
import io
import json
import linecache
import os
import resource
import signal
import struct
import sys
import traceback

TRUNCATION_MARKER = "\n... [output truncated: {} more characters]"


class BoundedWriter(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def getvalue(self):
        out = "".join(self.parts)
        return out + TRUNCATION_MARKER.format(self.dropped) if self.dropped else out


def _cpu_used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def set_limits(cfg):
    """Resource limits, hard = soft; returns the names of those the OS accepted."""
    mb = 1 << 20
    wanted = {
        "RLIMIT_AS": int(cfg["memory_mb"]) * mb,
        "RLIMIT_FSIZE": int(cfg["file_size_mb"]) * mb,
        "RLIMIT_CORE": 0,
        "RLIMIT_NOFILE": 256,
        "RLIMIT_NPROC": cfg.get("max_processes"),
    }
    applied = []
    for name, value in wanted.items():
        if value is None or not hasattr(resource, name):
            continue
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
            applied.append(name)
        except (ValueError, OSError):  # macOS refuses some (RLIMIT_AS); the report says which held
            pass
    hard = int(_cpu_used()) + 1 + int(cfg["cpu_time_total"])
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (hard - 1, hard))
        applied.append("RLIMIT_CPU")
    except (ValueError, OSError):
        pass
    sys.setrecursionlimit(int(cfg["recursion_limit"]))
    return applied


def _block_cpu_limit(cpu_time):
    """The soft CPU limit for the next block (SIGXCPU), below the fixed hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = int(_cpu_used()) + 1 + int(cpu_time)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard - 1)
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (want, hard))
        except (ValueError, OSError):
            pass


class Session:
    """The notebook-like state: one namespace; the last expression's value is shown."""

    def __init__(self, max_output):
        self.ns = {"__name__": "__main__"}
        self.max_output = max_output
        self.count = 0

    def run(self, code):
        self.count += 1
        name = f"<cell-{self.count}>"
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        out = BoundedWriter(self.max_output)
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out
        error = None
        try:
            tree = ast.parse(code, name)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, name, "exec"), self.ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), name, "eval"), self.ns)
                if value is not None:
                    out.write(repr(value) + "\n")
        except MemoryError:
            error = "memory"
            out.write("MemoryError: the block exceeded its memory limit\n")
        except RecursionError as e:
            error = "exception"
            out.write(f"RecursionError: {e}\n")
        except BaseException as e:  # SystemExit and KeyboardInterrupt included: the session lives on
            error = "exception"
            out.write(_clean_traceback(e))
        finally:
            _end_block_timers()
            sys.stdout, sys.stderr = old
        return {"output": out.getvalue(), "error": error}


_BLOCK_TIMERS = (("ITIMER_REAL", "SIGALRM"), ("ITIMER_VIRTUAL", "SIGVTALRM"), ("ITIMER_PROF", "SIGPROF"))


def _end_block_timers():
    """A block's interval timers end with it: left armed, they would fire in the worker's reply or in the
    next block. Handlers go to SIG_IGN first, so an alarm already delivered runs no Python handler."""
    for timer, sig in _BLOCK_TIMERS:
        if hasattr(signal, timer) and hasattr(signal, sig):
            signal.signal(getattr(signal, sig), signal.SIG_IGN)
            signal.setitimer(getattr(signal, timer), 0)


def _clean_traceback(e):
    """The traceback restricted to the model's own cells (no worker frames)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith("<cell-")]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(e), e)
    return "".join(lines)


def _recv(f):
    head = f.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack("<I", head)
    return json.loads(f.read(n))


def _send(f, obj):
    data = json.dumps(obj).encode()
    f.write(struct.pack("<I", len(data)) + data)
    f.flush()


def _reap_children():
    """Collect children the block left behind (the parent kills those still running)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    cfg = json.loads(sys.argv[1])
    sys.path[:] = cfg.get("sys_path", sys.path)
    requests, replies = os.fdopen(cfg["request_fd"], "rb"), os.fdopen(cfg["reply_fd"], "wb")
    for mod in cfg.get("preload") or []:
        __import__(mod)
    limits = set_limits(cfg)
    if os.getpid() == 1:
        # pid 1 of a namespace ignores signals it has no handler for, SIGXCPU included:
        # the per-block CPU limit needs one (the hard limit's SIGKILL needs none).
        signal.signal(signal.SIGXCPU, lambda *_: os._exit(128 + signal.SIGXCPU))
    sys.stdin = io.StringIO("")  # input() raises EOFError
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # start-up errors went to the parent; the model's code writes nowhere
        os.dup2(null, fd)
    os.close(null)
    session = Session(int(cfg["max_output"]))
    _send(replies, {"ready": True, "limits": limits})
    while True:
        req = _recv(requests)
        if req is None:
            return
        _block_cpu_limit(cfg["cpu_time"])
        _reap_children()  # those the parent killed after the previous block
        reply = session.run(req["code"])
        _reap_children()
        reply["id"] = req["id"]
        _send(replies, reply)


if __name__ == "__main__":
    main()
