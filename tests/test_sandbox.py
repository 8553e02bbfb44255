"""The sandbox, tried as an attacker would: every case gives a clean error result, bounded in time.

More attacks, one per class of issue 11, are in tests/test_sandbox_attacks.py; the paths for
other platforms (no bubblewrap) in tests/test_sandbox_portable.py.
"""

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from mlx_scdpo.sandbox import isolation as sandbox_isolation
from mlx_scdpo.sandbox.pool import ExecResult, Sandbox, SandboxPool

PROJECT = Path(__file__).resolve().parents[1]


def _has_isolation():
    try:
        return sandbox_isolation.detect() != "unconfined"
    except sandbox_isolation.SandboxUnavailable:
        return False


pytestmark = pytest.mark.skipif(
    not _has_isolation(), reason="no sandbox on this host (Linux: bubblewrap; macOS: sandbox-exec)"
)
# Wall-clock bounds only catch a hang (a block's result that never comes): 10x the block timeout, so
# that a loaded 2-core machine, where killing and replacing a worker takes seconds, never fails them.
TIMEOUT = 2.0
BOUND = 10 * TIMEOUT
LINUX_BWRAP = pytest.mark.linux_only("bubblewrap's pid namespace, seen through /proc")
# RLIMIT_AS makes a memory bomb a "memory" result; macOS refuses the address-space limit.
ADDRESS_SPACE_LIMIT = pytest.mark.linux_only("RLIMIT_AS (macOS refuses the address-space limit)")


def pid_namespace(sb):
    """The worker's pid namespace as the host names it (Linux, bubblewrap)."""
    return os.readlink(f"/proc/{sb._worker._init_pid}/ns/pid")


def processes_in(ns):
    """Live processes of pid namespace ``ns``, seen from the host."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in "ZX":
                    alive.append(pid)
        except (OSError, IndexError):
            pass
    return alive


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(size=2, timeout=TIMEOUT, memory_mb=1024, max_processes=24) as p:
        yield p


def run_one(pool, code, setup=None):
    with pool.sandbox() as sb:
        if setup:
            sb.run(setup)
        t = time.perf_counter()
        r = sb.run(code)
        return r, time.perf_counter() - t, sb


def test_state_persists_and_last_expression_is_shown(pool):
    with pool.sandbox() as sb:
        assert sb.run("x = 21") == ExecResult(output="", error=None, timed_out=False)
        assert sb.run("x * 2").output == "42\n"
        assert sb.run("print('a'); x").output == "a\n21\n"
        assert sb.run("None").output == ""
        assert sb.run("import sympy\nsympy.factor(sympy.Symbol('y')**2 - 1)").output == "(y - 1)*(y + 1)\n"


def test_exception_gives_clean_traceback_and_session_survives(pool):
    with pool.sandbox() as sb:
        sb.run("a = 5")
        r = sb.run("def f():\n    return 1 / 0\nf()")
        assert r.error == "exception" and not r.timed_out
        assert r.output.startswith("Traceback (most recent call last):")
        assert "sandbox_worker" not in r.output and r.output.endswith("ZeroDivisionError: division by zero\n")
        assert sb.run("a").output == "5\n"
        assert sb.run("raise SystemExit(3)").error == "exception"
        assert sb.run("a").output == "5\n"


def test_infinite_loop_times_out_and_worker_is_replaced(pool):
    r, dt, sb = run_one(pool, "while True:\n    pass", setup="z = 1")
    assert r.error == "timeout" and r.timed_out and dt < BOUND
    r2 = sb.run("z")  # fresh worker: state is gone, but it answers
    assert r2.error == "exception" and "NameError" in r2.output


@ADDRESS_SPACE_LIMIT
def test_memory_bomb(pool):
    r, dt, _ = run_one(pool, "x = bytearray(8 * 1024 ** 3)")
    assert r.error == "memory" and dt < BOUND
    r, dt, _ = run_one(pool, "x = []\nwhile True:\n    x.append(' ' * 10 ** 7)")
    assert r.error in ("memory", "timeout") and dt < BOUND


@LINUX_BWRAP
def test_bounded_fork_storm(pool):
    code = (
        "import os, time\nn = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\nn"
    )
    with pool.sandbox() as sb:
        r = sb.run(code)
        assert r.error is None and int(r.output) < 200  # the process limit stopped it
        ns = pid_namespace(sb)
        # The sleeping children did not outlive the block: only bubblewrap's pid 1 and the worker.
        assert sb.run("import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())").output in (
            "[1]\n",
            "[1, 2]\n",
        )  # [bwrap's pid 1,] the worker
    assert processes_in(ns) == []  # and closing ended the whole pid namespace


def test_deep_recursion(pool):
    r, dt, _ = run_one(pool, "def f(n):\n    return f(n + 1)\nf(0)")
    assert r.error == "exception" and "RecursionError" in r.output and dt < BOUND


def test_giant_print_is_truncated(pool):
    r, dt, _ = run_one(pool, "print('x' * 10 ** 7)")
    assert r.error is None and len(r.output) < 5000 and "output truncated" in r.output and dt < BOUND


@pytest.mark.parametrize("target", [Path.home() / ".mlx_scdpo_sandbox_probe", PROJECT / "sandbox_probe.txt"])
def test_cannot_write_outside_scratch(pool, target):
    code = f"open({str(target)!r}, 'w').write('pwned')"
    r, _, _ = run_one(pool, code)
    # Below /tmp (a checkout there) the path is inside the sandbox's own tmpfs: the write may succeed
    # there, but never reaches the host.
    in_private_tmp = str(target).startswith("/tmp/")
    assert (r.error == "exception" or in_private_tmp) and not target.exists()
    r, _, _ = run_one(pool, f"import os\nos.remove({str(PROJECT / 'pyproject.toml')!r})")
    assert (r.error == "exception" or in_private_tmp) and (PROJECT / "pyproject.toml").exists()


def test_tmp_is_private_to_one_sandbox(pool):
    target = Path("/tmp/mlx_scdpo_sandbox_probe")
    r, _, _ = run_one(pool, f"open({str(target)!r}, 'w').write('pwned')")
    assert not target.exists()  # /tmp inside is the sandbox's own (Linux) or not writable (macOS)
    r, _, _ = run_one(pool, f"import os\nos.path.exists({str(target)!r})")
    assert r.output == "False\n"


def test_scratch_is_writable_and_private(pool):
    with pool.sandbox() as sb:
        assert sb.run("open('notes.txt', 'w').write('hi')\nopen('notes.txt').read()").output == "'hi'\n"
        scratch = sb.run("import os\nos.getcwd()").output.strip().strip("'")
        # Linux: a tmpfs inside the sandbox, nothing on the host; macOS: a host directory.
        host_copy = Path(scratch) / "notes.txt"
        assert sys.platform == "darwin" or not host_copy.exists()
    assert not host_copy.exists()
    with pool.sandbox() as sb:
        assert sb.run("import os\nos.listdir('.')").output == "[]\n"


def test_cannot_connect_to_a_local_listener(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(3)
    t = threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True)
    t.start()
    r, dt, sb = run_one(
        pool, f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)"
    )
    t.join()
    server.close()
    assert r.error == "exception" and accepted == [None] and dt < BOUND


def _accept(server):
    try:
        return server.accept()
    except OSError:
        return None


def test_cannot_kill_parent(pool):
    # The parent is not in the sandbox's pid namespace: getppid() is bubblewrap's pid 1, which
    # ignores signals from inside, and the parent's own pid names nothing (or someone else).
    r, _, _ = run_one(pool, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    r, _, _ = run_one(pool, f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)")
    assert r.error == "exception"
    r, _, _ = run_one(pool, "import os, signal\nos.kill(-1, signal.SIGKILL)")  # all it may signal: none
    assert r.error == "exception" and "ProcessLookupError" in r.output
    assert run_one(pool, "6 * 7")[0].output == "42\n"  # the parent lives on, and so does the pool


def test_os_exit_is_a_killed_result(pool):
    with pool.sandbox() as sb:
        r = sb.run("import os\nos._exit(0)")
        assert r.error == "killed" and not r.timed_out
        assert sb.run("1 + 1").output == "2\n"


def test_no_stdin_and_no_secrets(pool, monkeypatch):
    monkeypatch.setenv("MLX_SCDPO_SECRET_TOKEN", "hunter2")
    r, dt, _ = run_one(pool, "input()")
    assert r.error == "exception" and "EOFError" in r.output and dt < BOUND
    with Sandbox(timeout=TIMEOUT) as sb:  # a worker started after the secret was set
        r = sb.run("import os\nsorted(os.environ)")
    assert "MLX_SCDPO_SECRET_TOKEN" not in r.output and "PATH" in r.output


@ADDRESS_SPACE_LIMIT  # the memory bomb among the blocks
def test_batch_carries_on_beside_an_attacker(pool):
    codes = [
        "while True: pass",
        "sum(range(10))",
        "import os\nos._exit(1)",
        "2 ** 10",
        "bytearray(8 * 1024 ** 3)",
    ]
    results = [None] * len(codes)

    def work(i):
        with pool.sandbox() as sb:
            results[i] = sb.run(codes[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(codes))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(BOUND)
    assert [r.error for r in results] == ["timeout", None, "killed", None, "memory"]
    assert results[1].output == "45\n" and results[3].output == "1024\n"


def test_isolation_report(pool):
    with pool.sandbox() as sb:
        iso = sb.isolation
    assert iso["mode"] == ("bwrap" if sys.platform == "linux" else "seatbelt")
    assert iso["kills_leftover_processes"] == (sys.platform == "linux")
    assert {"RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CPU"} <= set(iso["limits"])


def test_lazy_import_from_a_directory_only_the_owner_may_enter(tmp_path, monkeypatch):
    # A clone under `mktemp -d` (mode 700) or pyenv under /root: the worker must still import
    # modules it did not preload, and may read the directory but not write to it.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "late_module.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(private))
    monkeypatch.setenv("PYTHONPATH", str(private))  # a library directory the user chose (not a script's)
    with Sandbox(timeout=5.0) as sb:
        assert sb.run("import late_module\nlate_module.VALUE * 6").output == "42\n"
        r = sb.run(f"import ctypes\nctypes.CDLL(None).open(b'{private}/w', 0o101, 0o644)")
        assert r.output == "-1\n" and not (private / "w").exists()  # read-only, below any Python hook
