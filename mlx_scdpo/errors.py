"""Errors a user can cause in mlx-scdpo; the CLI prints them as one line and exits with code 2.

``UserError`` is this package's own. It subclasses the evaluation harness's
``eval.errors.UserError`` (``eval/`` stands alone and never imports this package), so
``CommandError``, the base of both, is what the CLI catches: a bad flag, file or model
found here, and a bad problems file found by ``eval`` while reading it, end alike.
"""

from __future__ import annotations

#: The base of every user error, this package's and the harness's (what the CLI catches).
from eval.errors import UserError as CommandError
from eval.errors import where  # noqa: F401  (``path:line: field 'x'`` message prefixes, re-exported)


class UserError(CommandError):
    """Bad input to an mlx-scdpo command: the message names the file, line, field or option."""
