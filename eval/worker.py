"""A persistent worker process that runs sympy comparisons under a hard time bound.

SIGALRM-based timeouts (lm-eval, Math-Verify) only work in the main thread and cannot
interrupt C code; a separate process can always be killed. The worker is started once
(a fresh interpreter: no MLX or thread state is inherited), answers JSON lines over pipes, and is
killed and replaced when a request overruns its bound. A timed-out comparison is
graded ``False``: a definite answer, never a hang.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

#: Seconds one symbolic comparison may take before it is graded False.
DEFAULT_TIMEOUT = 1.0
_START_TIMEOUT = 60.0


#: Pairs graded once before the guards go up, so sympy's lazy imports happen unguarded.
_WARM_UP = (
    ("symbolic", "\\frac{\\sqrt{2}}{2}", "\\sin(\\frac{\\pi}{4})"),
    ("symbolic", "2\\sin x\\cos x", "\\sin 2x"),
    ("symbolic", "(x+1)^2", "x^2+2x+1"),
    ("symbolic", "1.5", "\\frac32"),
    ("symbolic", "\\log_2 8", "3"),
    ("relation", ("y", "=", "2x+3"), ("2x+3", "=", "y")),
    ("relation", ("x", "<", "3"), ("2x", "<", "6")),
    ("sets", "[1,2]\\cup[2,3]", "1\\leq x\\leq 3"),
    ("matrix", "2\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\4\\end{pmatrix}"),
    ("symbolic", "\\tan^2(y)+1", "\\sec^2(y)"),
)


# Parsed once at start: ANTLR's adaptive prediction caches (DFA) fill per token pattern, so the
# first parse of each shape costs an order of magnitude more than later ones.
_WARM_PARSE = (
    "-\\frac{\\sqrt{3}}{2}",
    "2\\sqrt{3}+1",
    "\\sqrt[3]{x^2-2}^2",
    "x^2+2x+1",
    "(x+1)(x-1)^{2/3}",
    "3.14",
    "e^{i\\pi}",
    "\\pi r^2",
    "\\sin(2x)",
    "\\cos^{2}{x}-\\sin^{2}{x}",
    "\\log_{2}8",
    "\\binom{6}{3}",
    "|x-1|",
    "\\frac{x+y}{xy}",
    "(1,2]",
    "[1,2)\\cup(3,\\infty)",
    "\\{1,2\\}",
    "1<x<2",
    "2x-y+3=0",
    "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
)


def serve() -> None:
    """Worker loop: one JSON request per line on stdin, one verdict per line on stdout.

    Verdicts are ``1``/``0``; the ``stats`` request answers one JSON line (``eval.guard.stats``).
    """
    from eval import guard, symbolic  # sympy (heavy): only in the worker process

    ops = {
        "symbolic": symbolic.symbolic_equal,
        "relation": symbolic.relation_equal,
        "sets": symbolic.sets_equal,
        "matrix": symbolic.matrices_equal,
    }
    for op, a, b in _WARM_UP:
        ops[op](a, b)
    for text in _WARM_PARSE:
        try:
            symbolic.to_sympy(text)
        except Exception:
            pass
    guard.install()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            op, a, b = json.loads(line)
            if op == "stats":
                out.write(json.dumps(guard.stats()) + "\n")
                out.flush()
                continue
            verdict = bool(ops[op](a, b))
        except Exception:
            verdict = False
        out.write("1\n" if verdict else "0\n")
        out.flush()


def _spawn() -> subprocess.Popen:
    # A fresh interpreter (not fork: the caller may hold MLX / thread state; not
    # multiprocessing's spawn: it re-imports the caller's __main__).
    return subprocess.Popen(
        [sys.executable, "-c", "from eval.worker import serve; serve()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


class SymbolicWorker:
    """One worker process plus a spare; thread-safe (requests are serialized).

    Starting a worker (sympy + the ANTLR parser) takes seconds. The first start may take that
    long; after a timeout kill the spare, started in the background, takes over, and a pair
    never waits longer than its own bound for a replacement that is still starting (it is
    graded False instead: a definite answer, never a hang).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = None
        self._ready = False
        self._spare = None
        self._spare_ready = False
        self._started_once = False
        self.timeouts = 0
        self.not_ready = 0  # pairs graded False because a replacement worker was still starting

    def _ensure(self, timeout: float) -> bool:
        """A ready worker (waiting at most ``timeout``, or the start-up bound the first time)."""
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            if self._spare is not None and self._spare.poll() is None:
                self._proc, self._ready = self._spare, self._spare_ready
            else:
                self._proc, self._ready = _spawn(), False
            self._spare, self._spare_ready = None, False
        if not self._ready:
            line = self._readline(_START_TIMEOUT if not self._started_once else max(timeout, 0.0))
            if line == "ready":
                self._ready = self._started_once = True
            elif line is None and self._proc.poll() is None and self._started_once:
                self.not_ready += 1
                return False  # still starting: keep it, answer this pair False
            else:
                self._kill()
                if not self._started_once:
                    raise RuntimeError("the sympy grading worker did not start")
                return False
        if self._spare is None:
            self._spare, self._spare_ready = _spawn(), False
        return True

    @property
    def started(self) -> bool:
        """Whether a worker has ever answered (the first start may take seconds)."""
        return self._started_once

    def start(self) -> None:
        """The first start, outside any pair's time bound."""
        with self._lock:
            if not self._started_once:
                self._ensure(_START_TIMEOUT)

    def warm(self) -> None:
        """Start the worker and wait until the spare is ready too (before timing anything)."""
        with self._lock:
            if not self._ensure(_START_TIMEOUT):  # a replacement that died while starting: once more
                self._ensure(_START_TIMEOUT)
            if self._spare is not None and not self._spare_ready:
                ready, _, _ = select.select([self._spare.stdout], [], [], _START_TIMEOUT)
                self._spare_ready = bool(ready) and self._spare.stdout.readline().strip() == "ready"

    def _readline(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return line.strip() if line else None

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self._proc = None
        self._ready = False

    def call(self, op: str, a, b, timeout: float = DEFAULT_TIMEOUT) -> bool:
        with self._lock:
            t0 = time.monotonic()
            if not self._ensure(timeout):
                return False
            try:
                self._proc.stdin.write(json.dumps([op, a, b]) + "\n")
                self._proc.stdin.flush()
                verdict = self._readline(max(timeout - (time.monotonic() - t0), 0.0))
            except (OSError, ValueError):
                verdict = None
            if verdict is not None:
                return verdict == "1"
            self.timeouts += 1
            self._kill()
            return False

    def stats(self, timeout: float = 5.0) -> dict | None:
        """The worker's guard counters (``eval.guard.stats``); None if it is not running."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or not self._ready:
                return None
            self._proc.stdin.write(json.dumps(["stats", None, None]) + "\n")
            self._proc.stdin.flush()
            line = self._readline(timeout)
            return json.loads(line) if line else None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def close(self) -> None:
        with self._lock:
            self._kill()
            if self._spare is not None:
                self._proc, self._spare = self._spare, None
                self._kill()


_WORKER: SymbolicWorker | None = None
_WORKER_LOCK = threading.Lock()


def get_worker() -> SymbolicWorker:
    """The process-wide worker, started on first use."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = SymbolicWorker()
            atexit.register(_WORKER.close)
        return _WORKER
