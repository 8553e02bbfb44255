"""How a sandbox worker is confined: the command line that starts it, per platform.

Isolation comes from existing, hardened tools, chosen by what the host has (detected, never
assumed):

* Linux: bubblewrap (``bwrap``, what Flatpak uses). User, mount, pid, ipc, net, uts and
  cgroup namespaces; a new root holding only the Python installation and the import path it
  needs (read-only, ``worker_sys_path``), a few files from ``/etc`` the dynamic linker needs,
  a fresh ``/proc`` (its writable entries read-only: the sandbox's uid is the host's) and
  minimal ``/dev``; size-bounded private tmpfs for the scratch directory, ``/tmp``,
  ``/var/tmp``, ``/dev/shm`` and ``/run``; ``--die-with-parent``, ``--new-session``, no nested
  user namespaces, and a seccomp filter built by libseccomp when it is installed (no
  keyrings, ptrace, memfd, SysV IPC, io_uring, bpf, perf, inotify, socket families beyond
  unix / inet / inet6, clearing the parent-death signal), with the worker as pid 1.
* macOS: ``sandbox-exec`` with a Seatbelt profile: no network, no writes outside the scratch
  directory, no reads of the user's files (only the Python installation and ``sys.path``).
* Elsewhere: ``SandboxUnavailable`` (one clear line), unless ``MLX_SCDPO_SANDBOX=unconfined``
  asks, loudly, for workers confined by resource limits alone.

Resource limits (``setrlimit``, hard = soft so a block cannot raise them) are set by the
worker itself before any model code runs, on every platform.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import tempfile
import warnings

from mlx_scdpo.errors import UserError

UNCONFINED_ENV = "MLX_SCDPO_SANDBOX"
SCRATCH_IN_SANDBOX = "/scratch"
WORKER_IN_SANDBOX = "/opt/mlx_scdpo/sandbox/worker.py"
SEATBELT = "/usr/bin/sandbox-exec"

# Syscalls the model's code never needs and that reach state outside the sandbox's limits:
# keyrings (secrets of the session), ptrace-like access, memory outside RLIMIT_AS and the
# bounded tmpfs (memfd, SysV shm and message queues), kernel attack surface.
SECCOMP_DENIED = (
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "perf_event_open",
    "bpf",
    "userfaultfd",
    "memfd_create",
    "memfd_secret",
    "shmget",
    "shmat",
    "msgget",
    "msgsnd",
    "semget",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "quotactl",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "personality",
    "move_pages",
    "migrate_pages",
    "mbind",
    "lookup_dcookie",
    "syslog",
    "vhangup",
    "fsopen",
    "fsmount",
    "open_tree",
    "move_mount",
    # Counted per host user (the sandbox's uid is the host's): a block could use up root's
    # inotify instances or message-queue bytes on the whole host while it lives.
    "inotify_init",
    "inotify_init1",
    "mq_open",
)

# Socket families a block may create: AF_UNIX, AF_INET, AF_INET6 (the network namespace has no
# network). Others are not confined by it: AF_VSOCK reaches the hypervisor's host from a VM,
# AF_ALG / AF_NETLINK / AF_PACKET are kernel attack surface.
SOCKET_FAMILIES = (1, 2, 10)


class SandboxUnavailable(UserError):
    """No isolation for model-written code on this host (and no explicit opt-out)."""


def unconfined_requested() -> bool:
    return os.environ.get(UNCONFINED_ENV, "").strip().lower() == "unconfined"


@functools.lru_cache(maxsize=None)
def _bwrap_path() -> str | None:
    return shutil.which("bwrap") if sys.platform == "linux" else None


@functools.lru_cache(maxsize=None)
def _bwrap_works(bwrap: str) -> str | None:
    """None when bubblewrap can create its namespaces here, else why not (one line)."""
    try:
        r = subprocess.run(
            [
                bwrap,
                "--unshare-all",
                "--unshare-user",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "true",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode != 0:
        return (r.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {r.returncode}"])[-1]
    return None


def detect(disable=()) -> str:
    """The isolation this host gives: ``"bwrap"``, ``"seatbelt"`` or ``"unconfined"`` (opt-in).

    ``disable`` switches platform features off for tests (``("bwrap",)`` runs the non-Linux
    path on Linux). Raises ``SandboxUnavailable`` with one line when there is none.
    """
    reasons = []
    if "bwrap" not in disable and sys.platform == "linux":
        bwrap = _bwrap_path()
        if bwrap is None:
            reasons.append("bubblewrap is not installed (apt-get install bubblewrap)")
        else:
            why = _bwrap_works(bwrap)
            if why is None:
                return "bwrap"
            reasons.append(f"bubblewrap cannot create namespaces here ({why})")
    if "seatbelt" not in disable and sys.platform == "darwin":
        if os.access(SEATBELT, os.X_OK):
            return "seatbelt"
        reasons.append(f"{SEATBELT} is missing")
    if not reasons:
        reasons.append(f"no sandbox is known for platform {sys.platform!r}")
    if unconfined_requested():
        warnings.warn(
            f"mlx-scdpo: running model-written code WITHOUT isolation ({UNCONFINED_ENV}=unconfined; "
            f"{reasons[0]}); only resource limits apply",
            RuntimeWarning,
            stacklevel=2,
        )
        return "unconfined"
    raise SandboxUnavailable(
        f"cannot run model-written code safely: {'; '.join(reasons)}; "
        f"set {UNCONFINED_ENV}=unconfined to run it without isolation (unsafe)"
    )


# --- Linux: bubblewrap -------------------------------------------------------------------


def _readable_dirs(paths) -> list[str]:
    """Existing directories among ``paths``, resolved, without ones inside another."""
    out = []
    for p in sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def worker_sys_path(sys_path, preload) -> list[str]:
    """The import path the worker needs: entries inside the Python installation or virtual
    environment, site-packages (the user's too), ``PYTHONPATH`` entries and the places the
    ``preload`` modules come from. Not the script's directory or the working directory
    (``sys.path[0]``: ``/tmp``, a project tree, ``/work`` ...): every entry kept is readable
    inside the sandbox, and a bound ``/tmp`` would replace the private one."""
    prefixes = {
        os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    }
    sites = [
        *getattr(site, "getsitepackages", list)(),
        site.getusersitepackages(),
        *os.environ.get("PYTHONPATH", "").split(os.pathsep),
    ]
    roots = {os.path.realpath(p) for p in sites if p}
    for name in preload or ():
        try:
            spec = importlib.util.find_spec(name.split(".")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        places = list(spec.submodule_search_locations or []) or ([spec.origin] if spec.has_location else [])
        roots |= {os.path.dirname(os.path.realpath(p)) for p in places if p}
    out = []
    for p in sys_path:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if real in roots or any(real == q or real.startswith(q.rstrip("/") + "/") for q in prefixes):
            out.append(p)
    return out


def python_dirs(sys_path) -> list[str]:
    """What the worker must read: the interpreter's installation and its import path, never
    ``/`` or the home directory itself (a script run from ``~`` puts ``~`` on ``sys.path``)."""
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    home = os.path.realpath(os.path.expanduser("~"))
    wanted = [os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, exe_dir, *sys_path) if p]
    return _readable_dirs(p for p in wanted if p != "/" and not (home == p or home.startswith(p + "/")))


@functools.lru_cache(maxsize=None)
def proc_writable(proc: str = "/proc") -> tuple[str, ...]:
    """Entries of ``/proc`` (not processes) that hold a file with a write bit: made read-only.

    The sandbox's uid is the host's (root's, when run as root), so the owner's write bit is
    its own: sysctls (kernel.core_pattern is host root), sysrq-trigger, mtrr, pressure
    triggers. bubblewrap covers /proc/sys only when it may write it itself, not on every host.
    """
    out = ["/proc/sys", "/proc/sysrq-trigger"]
    try:
        names = os.listdir(proc)
    except OSError:
        return tuple(out)
    for name in sorted(names):
        path = os.path.join(proc, name)
        if name.isdigit() or name in ("self", "thread-self", "sys") or os.path.islink(path):
            continue
        found = False
        for d, _dirs, files in os.walk(path) if os.path.isdir(path) else [(proc, [], [name])]:
            found = any(_has_write_bit(os.path.join(d, f)) for f in files)
            if found:
                break
        if found:
            out.append("/proc/" + name)
    return tuple(out)


def _has_write_bit(path: str) -> bool:
    try:
        return bool(os.lstat(path).st_mode & 0o222)
    except OSError:
        return False


def bwrap_argv(
    bwrap: str, sys_path, worker: str, *, scratch_mb: int, tmp_mb: int, seccomp_fd: int | None
) -> list[str]:
    """bubblewrap's arguments, up to the command it runs."""
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    if seccomp_fd is not None:
        # The worker is the namespace's pid 1, under the filter: bubblewrap's own pid 1 runs
        # without it, and a block could rewrite that process through /proc/1/mem. (The filter
        # also keeps the worker from clearing its parent-death signal.)
        argv.append("--as-pid-1")
    # Merged /usr: /bin, /lib... are symlinks into /usr on current distributions.
    system = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
    for path in system:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in (
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/alternatives",
    ):
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    # The sandbox's uid is the host's uid (root's, when run as root), so sysctls are writable
    # (kernel.core_pattern: host root) unless /proc/sys is read-only. bubblewrap covers it only
    # when it may write it itself, which it may not on every host: cover it here too.
    argv += ["--proc", "/proc"]
    for path in proc_writable():
        argv += ["--ro-bind-try", path, path]
    argv += ["--dev", "/dev"]
    for path in ("/tmp", "/var/tmp", "/dev/shm", "/run"):
        argv += ["--size", str(tmp_mb << 20), "--tmpfs", path]
    for path in python_dirs(sys_path):  # after the tmpfs mounts, which would hide a bind below /tmp
        if not any(path == s or path.startswith(s + "/") for s in system if not os.path.islink(s)):
            argv += ["--ro-bind", path, path]
    argv += ["--size", str(scratch_mb << 20), "--tmpfs", SCRATCH_IN_SANDBOX, "--chdir", SCRATCH_IN_SANDBOX]
    argv += ["--ro-bind", worker, WORKER_IN_SANDBOX]
    # The new root itself (parents of the binds) and /dev are not writable: bubblewrap's /dev is
    # a tmpfs of half the host's memory (/dev/shm, /dev/pts and the device nodes are own mounts).
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv


SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_EQ, _SCMP_CMP_GT = 4, 6


class _ScmpArgCmp(ctypes.Structure):  # libseccomp's struct scmp_arg_cmp
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_EPERM = 1


@functools.lru_cache(maxsize=None)
def seccomp_program() -> bytes | None:
    """The BPF program denying ``SECCOMP_DENIED`` with EPERM, built by libseccomp (None: no libseccomp)."""
    name = ctypes.util.find_library("seccomp")
    if sys.platform != "linux" or name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ScmpArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        return None
    try:
        deny = 0x00050000 | _EPERM  # SCMP_ACT_ERRNO(EPERM)
        for call in dict.fromkeys(SECCOMP_DENIED):
            nr = lib.seccomp_syscall_resolve_name(call.encode())
            if nr >= 0 and lib.seccomp_rule_add(ctx, deny, nr, 0) != 0:
                return None
        top = max(SOCKET_FAMILIES)
        families = [(_SCMP_CMP_GT, top)] + [(_SCMP_CMP_EQ, f) for f in range(top) if f not in SOCKET_FAMILIES]
        # The worker is the namespace's pid 1 and dies with bubblewrap (--die-with-parent); a
        # block that cleared its parent-death signal would outlive a killed parent.
        for call, checks in (("socket", families), ("socketpair", families), ("prctl", [(_SCMP_CMP_EQ, 1)])):
            nr = lib.seccomp_syscall_resolve_name(call.encode())
            for op, value in checks:  # rules of one call are OR-ed
                cmp = _ScmpArgCmp(0, op, value, 0)
                if nr >= 0 and lib.seccomp_rule_add_array(ctx, deny, nr, 1, ctypes.byref(cmp)) != 0:
                    return None
        r, w = os.pipe()
        try:
            if lib.seccomp_export_bpf(ctx, w) != 0:
                return None
            os.close(w)
            w = None
            chunks = []
            while chunk := os.read(r, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(r)
            if w is not None:
                os.close(w)
    finally:
        lib.seccomp_release(ctx)


# --- macOS: Seatbelt ---------------------------------------------------------------------


def _sbpl(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def seatbelt_profile(sys_path, scratch: str, worker: str) -> str:
    """A deny-by-default Seatbelt profile: Python may run, read its installation and the system,
    write only to ``scratch``; no network, no reads of the user's files or temporary directories."""
    scratch = os.path.realpath(scratch)
    python = [_sbpl(p) for p in python_dirs(sys_path)]
    # Temporary directories hold other programs' files (the scratch inside one is allowed below).

    private = [
        _sbpl(p)
        for p in _readable_dirs(
            ["/Users", "/Volumes", os.path.expanduser("~"), "/private/tmp", "/tmp", tempfile.gettempdir()]
        )
    ]
    not_private = " ".join(f"(require-not (subpath {p}))" for p in private)
    return "\n".join(
        [
            "(version 1)",
            "(deny default)",
            "(allow process-fork)",
            # A framework build's bin/python3 re-executes Python.app inside its installation.
            f"(allow process-exec (literal {_sbpl(os.path.realpath(sys.executable))}))",
            f"(allow process-exec (subpath {_sbpl(os.path.realpath(sys.base_prefix))}))",
            "(allow process-info* (target same-sandbox))",
            "(allow signal (target same-sandbox))",
            "(allow sysctl-read)",
            "(allow file-read-metadata)",
            # System files yes, the user's files (home, other volumes) no ...
            f"(allow file-read* (require-all {not_private}))" if private else "(allow file-read*)",
            # ... except the Python installation, import path and the worker, which may live there.
            *[f"(allow file-read* (subpath {p}))" for p in python],
            f"(allow file-read* (literal {_sbpl(os.path.realpath(worker))}))",
            f"(allow file-read* file-write* (subpath {_sbpl(scratch)}))",
            '(allow file-read* file-write-data (literal "/dev/null"))',
            "",
        ]
    )
