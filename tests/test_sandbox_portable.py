"""The sandbox's code paths for other platforms, run here by switching Linux-only features off.

With bubblewrap switched off a Linux host looks like a platform without isolation: the pool
refuses with one line, or runs unconfined only when asked, and a worker that cannot start is
an error in bounded time, never a hang (the macOS bug of issue 11). Seatbelt itself runs only
on macOS; its profile is checked everywhere.
"""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from mlx_scdpo.sandbox import cgroup as sandbox_cgroup
from mlx_scdpo.sandbox import isolation as sandbox_isolation
from mlx_scdpo.sandbox.pool import WORKER_PATH, Sandbox, SandboxPool, SandboxUnavailable

OFF = ("bwrap", "seatbelt")  # what a platform without either looks like


@pytest.fixture
def unconfined(monkeypatch):
    monkeypatch.setenv(sandbox_isolation.UNCONFINED_ENV, "unconfined")


def test_no_isolation_is_refused_with_one_line(monkeypatch):
    monkeypatch.delenv(sandbox_isolation.UNCONFINED_ENV, raising=False)
    t = time.perf_counter()
    with pytest.raises(SandboxUnavailable) as e:
        SandboxPool(size=1, disable=OFF)
    with pytest.raises(SandboxUnavailable):
        Sandbox(disable=OFF)
    message = str(e.value)
    assert "\n" not in message and sandbox_isolation.UNCONFINED_ENV in message
    # The CLI prints it as one line; refused before any worker starts (milliseconds: a generous hang guard).
    assert e.value.exit_code == 2 and time.perf_counter() - t < 20


def test_unconfined_opt_in_is_loud_and_works(unconfined):
    with pytest.warns(RuntimeWarning, match="WITHOUT isolation"):
        pool = SandboxPool(size=1, disable=OFF, timeout=3.0, preload=())
    with pool, pool.sandbox() as sb:
        assert sb.isolation["mode"] == "unconfined"
        assert sb.run("x = 6").error is None and sb.run("x * 7").output == "42\n"
        assert sb.run("while True: pass").error == "timeout"
        assert sb.run("1 + 1").output == "2\n"


def test_failed_start_is_an_error_in_bounded_time(unconfined):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pool = SandboxPool(size=2, disable=OFF, preload=("no_such_module_for_the_sandbox",))
    with pool:
        with pytest.raises(RuntimeError, match="did not start"):
            pool.take()
        with pool.sandbox() as sb:
            r = sb.run("1")
    assert r.error == "start" and "no_such_module_for_the_sandbox" in r.output
    # Seconds when the failure is seen at once; the macOS hang waited for the start timeout (60 s) at least.
    assert time.perf_counter() - t < 45


def test_deep_scratch_tree_is_removed(unconfined):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb = Sandbox(timeout=10.0, disable=OFF, preload=())
    code = "import os\nfor i in range(2500):\n    os.mkdir('d')\n    os.chdir('d')\nos.chdir(os.environ['HOME'])\nos.getcwd()"
    scratch = Path(sb.run(code).output.strip().strip("'"))
    assert (scratch / "d" / "d").is_dir()
    t = time.perf_counter()
    sb.close()  # shutil.rmtree would raise RecursionError here
    assert not scratch.exists() and time.perf_counter() - t < 30  # under a second; a hang guard


def test_no_files_are_left_at_interpreter_exit(tmp_path):
    # A sandbox never closed: the clean-up at exit still kills the worker and removes its scratch.
    script = (
        "import os, sys, warnings\nwarnings.simplefilter('ignore')\nfrom mlx_scdpo.sandbox.pool import Sandbox\n"
        "sb = Sandbox(timeout=5.0, disable=('bwrap', 'seatbelt'), preload=())\n"
        "print(sb.run(\"open('left.txt', 'w').write('x')\\nimport os\\nos.getcwd()\").output.strip().strip(\"'\"))"
    )
    env = dict(os.environ, **{sandbox_isolation.UNCONFINED_ENV: "unconfined"})
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    scratch = Path(r.stdout.strip())
    assert r.returncode == 0 and scratch.name.startswith("mlx-scdpo-sandbox-"), r.stderr
    assert not scratch.exists()


def test_worker_uses_no_linux_only_call():
    # The macOS hang: the worker called prctl through ctypes, died at start, and take() waited.
    source = Path(WORKER_PATH).read_text()
    assert "prctl" not in source and "ctypes" not in source and "unshare" not in source


def test_seatbelt_profile_denies_by_default(tmp_path):
    profile = sandbox_isolation.seatbelt_profile([str(tmp_path)], str(tmp_path / "scratch"), WORKER_PATH)
    assert profile.startswith("(version 1)\n(deny default)")
    assert "network" not in profile  # nothing allows it
    assert f'(allow file-read* file-write* (subpath "{os.path.realpath(tmp_path / "scratch")}"))' in profile
    assert f'(require-not (subpath "{os.path.realpath(os.path.expanduser("~"))}"))' in profile
    assert f'(allow file-read* (literal "{os.path.realpath(WORKER_PATH)}"))' in profile
    assert profile.count("(") == profile.count(")")


def test_home_and_root_are_never_exposed_through_sys_path():
    home = os.path.realpath(os.path.expanduser("~"))
    dirs = sandbox_isolation.python_dirs(["/", home, os.path.dirname(home), os.path.dirname(os.__file__)])
    assert "/" not in dirs and home not in dirs and os.path.dirname(home) not in dirs
    assert os.path.realpath(os.path.dirname(os.__file__)) in dirs or any(
        os.path.realpath(os.path.dirname(os.__file__)).startswith(d + "/") for d in dirs
    )


@pytest.mark.skipif(sys.platform != "darwin", reason="sandbox-exec exists only on macOS")
def test_seatbelt_confines_the_worker(tmp_path):
    home_file = Path.home() / ".mlx_scdpo_sandbox_probe"
    with Sandbox(timeout=5.0, preload=()) as sb:
        assert sb.isolation["mode"] == "seatbelt"
        assert sb.run("6 * 7").output == "42\n"
        assert sb.run(f"open({str(home_file)!r}, 'w')").error == "exception" and not home_file.exists()
        assert sb.run("import os\nos.listdir(os.path.expanduser('~'))").error == "exception"
        r = sb.run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)")
        assert r.error == "exception"


def _fake_host(root: Path, *, v2_controllers: str, v1: bool):
    (root / "proc/self").mkdir(parents=True)
    mounts = ["cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0"]
    cgroup = ["0::/job"]
    (root / "sys/fs/cgroup/unified/job").mkdir(parents=True)
    (root / "sys/fs/cgroup/unified/job/cgroup.subtree_control").write_text(v2_controllers)
    if v1:
        mounts.append("cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0")
        cgroup.append("8:pids:/")
        (root / "sys/fs/cgroup/pids").mkdir(parents=True)
    (root / "proc/self/mounts").write_text("\n".join(mounts) + "\n")
    (root / "proc/self/cgroup").write_text("\n".join(cgroup) + "\n")


def test_cgroup_v2_is_used_only_where_it_delegates_memory_and_pids(tmp_path):
    _fake_host(tmp_path / "a", v2_controllers="cpu memory pids", v1=True)
    version, dirs = sandbox_cgroup.find_parents(str(tmp_path / "a"))
    assert version == "v2" and dirs[""].endswith("sys/fs/cgroup/unified/job")
    cg = sandbox_cgroup.create((version, dirs), memory_bytes=1 << 30, pids=34)
    d = Path(cg.dirs[0])
    assert (d / "memory.max").read_text() == str(1 << 30) and (d / "pids.max").read_text() == "34"
    assert (d / "cpu.max").read_text() == "100000 100000"
    assert sandbox_cgroup.wrap(cg, ["bwrap"])[-1] == "bwrap"

    _fake_host(tmp_path / "b", v2_controllers="", v1=True)  # this host: cgroup2 without controllers
    assert sandbox_cgroup.find_parents(str(tmp_path / "b"))[0] == "v1"
    _fake_host(tmp_path / "c", v2_controllers="", v1=False)
    assert sandbox_cgroup.find_parents(str(tmp_path / "c")) is None


@pytest.mark.linux_only("bubblewrap, cgroups and seccomp")
def test_without_cgroups_the_sandbox_reports_it_and_runs():
    try:
        sandbox_isolation.detect()
    except SandboxUnavailable:
        pytest.skip("no bubblewrap")
    with Sandbox(timeout=5.0, preload=(), disable=("cgroup", "seccomp")) as sb:
        assert sb.isolation["cgroup"] is None and sb.isolation["seccomp"] is False
        assert sb.run("6 * 7").output == "42\n"


@pytest.mark.linux_only("/proc")
def test_children_are_found_without_the_proc_children_file(monkeypatch):
    from mlx_scdpo.sandbox import process as sandbox

    child = subprocess.Popen(["sleep", "5"])
    try:
        assert child.pid in sandbox._children(os.getpid())
        real_exists = os.path.exists
        monkeypatch.setattr(
            os.path, "exists", lambda p: False if str(p).endswith("/children") else real_exists(p)
        )
        assert child.pid in sandbox._children(os.getpid())  # the scan by parent pid
    finally:
        child.kill()
        child.wait()


def test_cli_without_isolation_stops_with_one_line(tiny_model, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from mlx_scdpo.cli import main

    monkeypatch.delenv(sandbox_isolation.UNCONFINED_ENV, raising=False)
    monkeypatch.setattr(sandbox_isolation, "_bwrap_path", lambda: None)  # as if not installed
    monkeypatch.setattr(sandbox_isolation, "SEATBELT", "/nonexistent/sandbox-exec")
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n")
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "--model",
            str(tiny_model),
            "--task",
            "gsm8k",
            "--data-files",
            str(data),
            "--max-tokens",
            "8",
            "--format",
            "code",
            "--output-dir",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2, res.output
    # (the progress bar shares stderr; the error itself is its last line, no traceback)
    last = res.output.strip().splitlines()[-1]
    assert "error: cannot run model-written code safely" in last and "Traceback" not in res.output, res.output
