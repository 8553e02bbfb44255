"""Answers are data, never code: injection payloads must grade False, fast, with no side effect.

Three independent checks per payload, each able to fail:
- a marker file the payloads try to create must never appear;
- the caller process spawns nothing but the grader's own worker (audit hook on the test process);
- the worker's guard (``eval.guard``) reports zero refused attempts: no answer text ever even
  reached ``parse_expr``/``eval``/process creation, which would be refused and counted there.
The guard itself and the payloads' liveness are tested too (the payloads do run under plain sympy).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from eval import grade, is_equivalent
from eval.worker import get_worker

ROOT = Path(__file__).resolve().parents[1]
MARKER = Path(tempfile.gettempdir()) / f"scdpo_injection_marker_{os.getpid()}"
M = str(MARKER)
# Wall-clock bounds here only catch a payload that hangs the grader: 10x what a pair takes under its
# default 1 s bound, so that a loaded 2-core machine (a worker killed and replaced) never fails them.
HANG_BOUND = 20.0

PAYLOADS = [
    f"__import__('os').system('touch {M}')",
    f"__import__(chr(111)+chr(115)).system('touch {M}')",
    f"\\boxed{{__import__(chr(111)+chr(115)).system('touch {M}')}}",
    f"eval(\"__import__('os').system('touch {M}')\")",
    f"exec(\"import os; os.system('touch {M}')\")",
    f"(lambda: __import__('os').system('touch {M}'))()",
    f"lambda: __import__('os').system('touch {M}')",
    f"open('{M}', 'w').write('x')",
    f"getattr(__import__('os'), 'system')('touch {M}')",
    "().__class__.__bases__[0].__subclasses__()",
    "().__class__.__mro__[1].__subclasses__()[0]",
    f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{M}'])",
    f"__builtins__['__import__']('os').system('touch {M}')",
    f"globals()['__builtins__'].open('{M}', 'w')",
    "compile('import os', 'x', 'exec')",
    f"__import__('subprocess').run(['touch', '{M}'])",
    f"__import__('subprocess').Popen('touch {M}', shell=True)",
    f"__import__('os').popen('touch {M}').read()",
    f"Symbol('x').__class__.__init__.__globals__['os'].system('touch {M}')",
    "x.__class__.__mro__[-1].__subclasses__()",
    "9**9**9**9",
    "9^{9^{9^{9}}}",
    "10^{10^{10^{10}}}",
    "2**2**2**2**2**2**2",
    "(10^{10^{10}})!",
    "1e999999999",
    f"\\text{{__import__('os').system('touch {M}')}}",
    '\\text{eval("1+1")}',
    f"${{__import__('os').system('touch {M}')}}$",
    f"\\(__import__('os').system('touch {M}')\\)",
    f"\\boxed{{\\text{{__import__('os').system('touch {M}')}}}}",
    f"x = __import__('os').system('touch {M}')",
    f"__import__('os').system('touch {M}') = 2",
    f"2 + __import__('os').system('touch {M}')",
    f"\\frac{{__import__('os').system('touch {M}')}}{{1}}",
    f"\\sqrt{{__import__('os').system('touch {M}')}}",
    f"\\begin{{pmatrix}}__import__('os').system('touch {M}')\\\\2\\end{{pmatrix}}",
    f"(__import__('os').system('touch {M}'), 2)",
    f"\\{{__import__('os').system('touch {M}'), 2\\}}",
    f"x < __import__('os').system('touch {M}')",
    "[i for i in range(10**9)]",
    "'2' * 10**9",
    "Lambda(x, 2)",
    "import os",
    f"os.system('touch {M}')",
    f"sys.modules['os'].system('touch {M}')",
    "type('X', (), {})",
    "breakpoint()",
    "\\mathrm{__import__}(\\text{os})",
    f"__import__('pty').spawn('touch {M}')",
    "9**9**9**9 = 2",
    f"2, __import__('os').system('touch {M}')",
]

# Size attacks on the equivalence layer (extraction is tested on its own).
OVERSIZED = [
    "\\boxed{" * 20000 + "2",
    "(" * 50000 + "2",
    "\\frac{" * 500 + "2" + "}{1}" * 500,
    "2" + " x" * 50000,
    "1" * 100000,
    "x+" * 30000 + "2",
]

_SPAWN_EVENTS = {
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
}
_spawned: list[tuple[str, str]] = []
_recording = threading.Event()


def _audit(event, args):
    if _recording.is_set() and event in _SPAWN_EVENTS:
        _spawned.append((event, repr(args)[:200]))


sys.addaudithook(_audit)  # permanent for this process, but records only while a test sets the flag


@pytest.fixture
def watched():
    MARKER.unlink(missing_ok=True)
    worker = get_worker()
    is_equivalent("x+1", "1+x")  # the worker is running (its own start is the one allowed spawn)
    _spawned.clear()
    _recording.set()
    try:
        yield worker, worker.pid, worker.stats()
    finally:
        _recording.clear()
    # Spawns seen: only a replacement worker (after a timeout kill) is legitimate.
    others = [
        s for s in _spawned if not (s[0] == "subprocess.Popen" and "from eval.worker import serve" in s[1])
    ]
    assert others == [], f"processes spawned while grading: {others}"
    assert not MARKER.exists(), "a payload ran: the marker file appeared"


def _children(pid: int) -> list[str]:
    try:
        return " ".join(Path(p).read_text() for p in Path(f"/proc/{pid}/task").glob("*/children")).split()
    except OSError:
        return []


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_grades_false_without_side_effect(payload, watched):
    worker, pid, before = watched
    for pred, gold in ((payload, "2"), ("2", payload), (payload, "0"), (f"\\boxed{{{payload}}}", "2")):
        t = time.perf_counter()
        assert is_equivalent(pred, gold, "math") is False
        assert is_equivalent(pred, gold, "gsm8k") is False
        assert time.perf_counter() - t < HANG_BOUND
    t = time.perf_counter()
    # A boxed "expr = 2" may state the answer 2 (extraction can keep the right-hand side): either verdict is
    # acceptable there; what matters is that nothing runs (checked below).
    verdict = grade(f"We compute it.\nThe answer is $\\boxed{{{payload}}}$.", "2", "math")
    assert verdict is False or payload.replace(" ", "").endswith("=2")
    assert time.perf_counter() - t < HANG_BOUND
    stats = worker.stats()
    if stats is not None:  # None only right after a timeout kill (no worker running)
        if worker.pid != pid:  # replaced after a timeout: its counters start from zero
            before = {"parse_expr_refused": 0, "audit_refused": 0}
        for key in ("parse_expr_refused", "audit_refused"):
            assert stats[key] == before[key], stats
    if worker.pid is not None and sys.platform.startswith("linux"):
        assert _children(worker.pid) == []


@pytest.mark.parametrize("payload", OVERSIZED, ids=lambda p: f"{p[:12]}..{len(p)}")
def test_oversized_answers_grade_false_at_once(payload, watched, monkeypatch):
    from eval import equivalence

    # "At once" is checked by what runs, not by the clock: no sympy call reaches the worker.
    calls = []
    monkeypatch.setattr(equivalence, "_call", lambda *args: calls.append(args[0]) or False)
    for pred, gold in ((payload, "2"), ("2", payload)):
        for task in ("math", "gsm8k"):
            t = time.perf_counter()
            assert is_equivalent(pred, gold, task) is False
            assert time.perf_counter() - t < 5.0  # a few ms; 10x the old 0.5 s against a quadratic parse
    assert calls == []


def test_payload_table_is_large_enough():
    assert len(PAYLOADS) >= 40 and len(set(PAYLOADS)) == len(PAYLOADS)


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_payloads_are_live_under_plain_sympy(tmp_path):
    """Without the parser/guards, sympify runs the payload: the table tests something real."""
    marker = tmp_path / "ran"
    r = _run_python(f"""
        import sympy
        try:
            sympy.sympify("__import__(chr(111)+chr(115)).system('touch {marker}')")
        except Exception:
            pass
    """)
    assert r.returncode == 0, r.stderr
    assert marker.exists()


def test_guard_refuses_and_counts(tmp_path):
    """The worker's guards refuse process creation, string eval, writes and parse_expr of text."""
    marker = tmp_path / "ran"
    r = _run_python(f"""
        import json, os, subprocess, sympy
        from eval import guard
        guard.install()
        refused = 0
        attempts = [
            lambda: os.system("touch {marker}"),
            lambda: subprocess.run(["touch", "{marker}"]),
            lambda: eval("1+1"),
            lambda: exec("x = 1"),
            lambda: open("{marker}", "w"),
            lambda: sympy.sympify("__import__('os').system('touch {marker}')"),
            lambda: os.posix_spawn("/usr/bin/touch", ["touch", "{marker}"], dict(os.environ)),
        ]
        for attempt in attempts:
            try:
                attempt()
            except Exception:
                refused += 1
        ok = sympy.Number("12") == 12 and float(sympy.Number("1.5")) == 1.5
        print(json.dumps([refused, len(attempts), ok, guard.stats()]))
    """)
    assert r.returncode == 0, r.stderr
    import json

    refused, total, numbers_ok, stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert refused == total
    assert numbers_ok  # grammar NUMBER tokens still become numbers, without eval
    assert stats["audit_refused"] >= total - 1 and stats["parse_expr_refused"] >= 1
    assert not marker.exists()


def test_worker_refuses_nothing_on_ordinary_answers():
    """Ordinary grading never trips a guard (a guard that fires on good input would hide attacks)."""
    worker = get_worker()
    is_equivalent("x+1", "1+x")
    pid, before = worker.pid, worker.stats()
    pairs = [
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}"),
        ("2\\sin x\\cos x", "\\sin 2x"),
        ("1.5", "\\frac32"),
        ("x^2-1", "(x-1)(x+1)"),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ]
    for p, g in pairs:
        assert is_equivalent(p, g) is True
    assert worker.pid == pid
    stats = worker.stats()
    assert stats["parse_expr_refused"] == before["parse_expr_refused"]
    assert stats["audit_refused"] == before["audit_refused"], stats["last_refused"]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "sympy's simplify of the two sides' ratio compiles a string, which the grading "
        "worker's guard refuses (eval/guard.py audit hook): the equal equations grade False"
    ),
)
def test_worker_refuses_nothing_on_an_equation_with_a_constant_term():
    worker = get_worker()
    is_equivalent("x+1", "1+x")
    before = worker.stats()
    assert is_equivalent("(x+1)^{2}(x-1)^{2}=y+1", "(x^2-1)^{2}=y+1", timeout=30.0) is True
    assert worker.stats()["audit_refused"] == before["audit_refused"]
