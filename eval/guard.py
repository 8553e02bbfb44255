"""Defences installed in the grading worker before it reads any answer text.

The grader must never run an answer as code. Answers are parsed by an ANTLR grammar
(``latex2sympy2_extended``, see ``eval.symbolic``), never by ``eval``; these guards make
that a checked property of the process rather than a hope:

1. ``sympy.parsing.sympy_parser.parse_expr`` (behind ``sympify(str)``, which calls
   Python ``eval``) is replaced by a reader of bare numbers that builds the number
   without ``eval`` (``sympy.Number(text)`` on a grammar ``NUMBER`` token is the one
   string route inside the parser) and refuses everything else.
2. An audit hook (PEP 578) refuses process creation, code compiled from strings,
   file writes, deletions, sockets and ``ctypes`` once grading starts, and counts every refusal;
   the count is reported to the caller (``SymbolicWorker.stats``) so tests can check that
   nothing ever tried.
3. Address-space limit: an answer such as ``9^{9^{9^9}}`` that sympy tries to expand
   fails with ``MemoryError`` instead of taking the machine's memory.
"""

from __future__ import annotations

import os
import re
import sys

#: The only strings that may reach ``parse_expr``: a signed decimal, optionally in e-notation.
NUMERIC = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
#: Address-space cap of the worker process (bytes).
MEMORY_LIMIT = 3 << 30

STATS = {"parse_expr_refused": 0, "audit_refused": 0, "last_refused": ""}

_FORBIDDEN_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "os.kill",
        "os.killpg",
        "os.remove",
        "os.unlink",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.move",
        "socket.connect",
        "socket.bind",
        "socket.__new__",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.call_function",
        "ctypes.cdata",
        "webbrowser.open",
        "urllib.Request",
        "http.client.connect",
        "builtins.input",
    }
)
_armed = False


def _refuse(what: str) -> None:
    STATS["audit_refused"] += 1
    STATS["last_refused"] = what[:80]
    raise PermissionError(f"refused in the grading worker: {what}")


def _audit(event: str, args: tuple) -> None:
    if not _armed:
        return
    if event in _FORBIDDEN_EVENTS:
        _refuse(event)
    elif event == "open":
        # Reading the library's own files is fine; writing anything is not.
        mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writes:
            _refuse(f"open for writing {args[0]!r}")
    elif event == "compile":
        # eval/exec/compile of a *string* is how answer text would become code.
        source, filename = args[0], args[1] if len(args) > 1 else None
        if isinstance(source, (str, bytes)) and filename in ("<string>", "<unknown>", None):
            _refuse("compile of a string")


def _guard_parse_expr() -> None:
    import sympy
    import sympy.parsing.sympy_parser as sp

    def parse_number_only(s, *args, **kwargs):
        # Built directly (int() / mpmath's decimal reader): not even a number goes through eval.
        if isinstance(s, str) and len(s) <= 400 and NUMERIC.fullmatch(s):
            s = s.strip()
            if re.fullmatch(r"[-+]?\d+", s):
                return sympy.Integer(int(s))
            return sympy.Float(s)
        STATS["parse_expr_refused"] += 1
        raise ValueError("parse_expr refused: only bare numbers are parsed with eval in the grading worker")

    sp.parse_expr = parse_number_only


def limit_memory(limit: int = MEMORY_LIMIT) -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass  # not available on this platform; the wall-clock bound still applies


def install() -> None:
    """Install all guards (idempotent). Call after the grading libraries are imported."""
    global _armed
    if _armed:
        return
    _guard_parse_expr()
    sys.addaudithook(_audit)
    limit_memory()
    _armed = True


def stats() -> dict:
    return dict(STATS)
