"""Command options from dataclasses, with precedence CLI flags > YAML file (``-c``) > defaults.

Each command's arguments are one dataclass (mlx-lm style, ``field(metadata={"help": ...})``);
``dataclass_options`` turns its fields into click options so the CLI stays thin, and
``build_args`` merges the three sources.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import click

from eval.errors import UserError


def load_yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}{':' + str(mark.line + 1) if mark else ''}: invalid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    return data


def _click_type(cls, f):
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0]


def dataclass_options(cls, skip: tuple[str, ...] = ()):
    """Decorator adding one click option per dataclass field (default None: unset)."""

    def decorate(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            typ = _click_type(cls, f)
            help_text = f.metadata.get("help", "")
            if f.default is not dataclasses.MISSING and f.default is not None:
                help_text += f" [default: {f.default}]"
            if typ is bool:
                fn = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)(fn)
            else:
                fn = click.option(flag, f.name, type=typ, default=None, help=help_text)(fn)
        return click.option("-c", "--config", default=None, help="YAML file of options (CLI flags win).")(fn)

    return decorate


def build_args(cls, kwargs: dict, config: str | None = None):
    """``cls`` from explicit CLI values, then YAML values, then the dataclass defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    if config:
        for key, value in load_yaml(config).items():
            name = key.replace("-", "_")
            if name not in fields:
                raise UserError(f"{config}: field '{key}' is not an option of this command")
            values[name] = value
    values.update({k: v for k, v in kwargs.items() if k in fields and v is not None})
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING]
    if missing:
        raise UserError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return cls(**values)
