"""The sandboxed, stateful Python worker (one per solution). Standard library only.

Started by ``mlx_scdpo.sandbox`` as ``python -I sandbox_worker.py CONFIG_JSON`` in its own
session, with a scratch directory as working directory and a minimal environment. Before
any model code runs it:

1. asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``);
2. imports the configured modules (a private uid may not be able to read the Python
   installation afterwards, e.g. pyenv under /root), then enters a new network namespace (``unshare(CLONE_NEWNET)`` as root, or with
   ``CLONE_NEWUSER`` unprivileged) so no network exists at all; where the kernel refuses,
   sockets are blocked by the audit hook below instead (``isolation["network"]`` says which);
3. as root, drops to a private uid/gid, so the OS itself forbids writing outside the
   scratch directory, signalling the parent, or sharing a process budget with other workers;
   it keeps one capability, ``CAP_DAC_READ_SEARCH`` (read any file), because lazy imports
   (``sympy.factor`` pulls in ``sympy.tensor``) must still read a Python installation that
   lies in a directory only root may enter (pyenv under /root, a clone under ``mktemp -d``);
4. sets resource limits: address space, file size, process count, open files, core dumps;
5. installs an audit hook (PEP 578) that refuses writes outside the scratch directory,
   network sockets, and signals to other processes.

Protocol: length-prefixed JSON over two inherited pipe fds (numbers in the config); fds
0-2 point to /dev/null and ``sys.stdin`` is empty, so the code gets no standard input.
"""

import ast
import ctypes
import io
import json
import linecache
import os
import resource
import signal
import struct
import sys
import traceback

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
TRUNCATION_MARKER = "\n... [output truncated: {} more characters]"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


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


def _isolate(cfg):
    isolation = {"network": "socket-audit", "user": "same", "filesystem": "audit"}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # parent already gone
        os._exit(1)
    is_root = os.geteuid() == 0
    flags = CLONE_NEWNET if is_root else CLONE_NEWUSER | CLONE_NEWNET
    if cfg.get("network_namespace", True) and libc.unshare(flags) == 0:
        isolation["network"] = "netns+socket-audit"
    if is_root and cfg.get("uid") is not None:
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
        _keep_only_read_capability(libc)
        isolation["user"] = f"uid {cfg['uid']}"
        isolation["filesystem"] = "permissions+audit"
    mem = int(cfg["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    fsize = int(cfg["file_size_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if cfg.get("max_processes") is not None:
        # Counts every task of this uid: with a private uid that is exactly this worker's.
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["max_processes"], cfg["max_processes"]))
    sys.setrecursionlimit(int(cfg["recursion_limit"]))
    return isolation


def _keep_only_read_capability(libc):
    """Reduce the capability sets to ``CAP_DAC_READ_SEARCH`` (see capset(2), capabilities(7)).

    After ``setuid`` with ``PR_SET_KEEPCAPS`` the permitted set still holds root's
    capabilities and the effective set is empty; this leaves read access only. No new
    privileges can be gained afterwards, not even through set-uid programs."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    keep = 1 << CAP_DAC_READ_SEARCH
    data = (Data * 2)(Data(keep, keep, 0), Data(0, 0, 0))
    if libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), (Data * 2)())  # drop all then
    libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _install_audit_hook(scratch):
    scratch = os.path.realpath(scratch)
    own_pid = os.getpid()

    def inside(path):
        try:
            p = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else f"/proc/self/fd/{path}")
        except Exception:
            return False
        return p == scratch or p.startswith(scratch + os.sep) or p == os.devnull

    path_events = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.symlink",
                   "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing outside the scratch directory is not allowed: {path}")
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                    raise PermissionError(f"sandbox: {event} outside the scratch directory is not allowed")
        elif event == "socket.__new__":
            family = args[1] if len(args) > 1 else None
            if family not in (None, -1, getattr(__import__("socket"), "AF_UNIX", 1)):
                raise PermissionError("sandbox: network access is not allowed")
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
            raise PermissionError("sandbox: network access is not allowed")
        elif event in ("os.kill", "os.killpg"):
            if args[0] not in (own_pid, 0):
                raise PermissionError("sandbox: signalling other processes is not allowed")
        elif event in ("signal.pthread_kill", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
                       "os.system", "pty.spawn"):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


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
            sys.stdout, sys.stderr = old
        return {"output": out.getvalue(), "error": error}


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


def main():
    cfg = json.loads(sys.argv[1])
    sys.path[:] = cfg.get("sys_path", sys.path)
    requests, replies = os.fdopen(cfg["request_fd"], "rb"), os.fdopen(cfg["reply_fd"], "wb")
    for mod in cfg.get("preload") or []:
        __import__(mod)
    isolation = _isolate(cfg)
    sys.stdin = io.StringIO("")  # input() raises EOFError
    _install_audit_hook(os.getcwd())
    session = Session(int(cfg["max_output"]))
    _send(replies, {"ready": True, "isolation": isolation, "pid": os.getpid()})
    while True:
        req = _recv(requests)
        if req is None:
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + 1 + int(cfg["cpu_time"])
        # Only the soft limit moves (an unprivileged process cannot raise its hard limit).
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        _send(replies, session.run(req["code"]))


if __name__ == "__main__":
    main()
