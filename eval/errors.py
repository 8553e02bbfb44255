"""Errors a user can cause; the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: the message names the file, line and field."""

    exit_code = 2


def where(path, line: int | None = None, field: str | None = None) -> str:
    """``path:line: field 'x'`` prefix for error messages."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f": field '{field}'"
    return out
