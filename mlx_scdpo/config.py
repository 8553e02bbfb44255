"""Command options from dataclasses, with precedence CLI flags > YAML file (``-c``) > defaults.

``GenerationArgs`` holds the options ``eval`` and ``sample`` share (model, problems, prompt,
decoding, code loop); each command's dataclass adds its own and sets its own defaults.

Each command's arguments are one dataclass (mlx-lm style, ``field(metadata={"help": ...})``);
``dataclass_options`` turns its fields into click options so the CLI stays thin, and
``build_args`` merges the three sources.

``OPTION_TYPES`` is the one table of ranges and choices, by option name, for every
command: click checks CLI values with it, ``build_args`` checks YAML values with it, and
``check_values`` checks arguments built in Python, all before any model loads. YAML is
read as mlx-lm's ``lora`` reads it (``1e-5`` is a float, not YAML 1.1's string).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import click
import yaml

from eval.data import TASKS
from mlx_scdpo.errors import UserError


class Number(click.FloatRange):
    """A finite float in a range (``nan`` and ``inf`` are refused)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


#: Largest count or size: MLX array shapes are 32-bit, and 2**63 would overflow them (or
#: segfault an allocation); seeds are 32-bit as in NumPy.
MAX_COUNT, MAX_SEED = 2**31 - 1, 2**32 - 1


class AllOrPositive(click.IntRange):
    """-1 (all) or a positive count."""

    name = "-1 or a positive integer"

    def __init__(self):
        super().__init__(min=-1, max=MAX_COUNT)

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if value == 0:
            self.fail("0 is not allowed (-1 means all)", param, ctx)
        return value


POSITIVE, NON_NEGATIVE = click.IntRange(min=1, max=MAX_COUNT), click.IntRange(min=0, max=MAX_COUNT)
FRACTION = Number(min=0, max=1)

#: Ranges and choices by option name, shared by all commands.
OPTION_TYPES = {
    # sizes and counts
    "batch_size": POSITIVE,
    "max_tokens": POSITIVE,
    "limit": POSITIVE,
    "iters": POSITIVE,
    "epochs": Number(min=0, min_open=True, max=MAX_COUNT),
    "steps_per_report": POSITIVE,
    "save_every": POSITIVE,
    "stop_after": POSITIVE,
    "steps_per_eval": NON_NEGATIVE,
    "val_batches": AllOrPositive(),
    "num_layers": AllOrPositive(),
    "lora_rank": POSITIVE,
    "grad_accumulation_steps": POSITIVE,
    "grad_checkpoint_layers": NON_NEGATIVE,
    "max_length": click.IntRange(min=2, max=MAX_COUNT),
    "max_prompt_length": POSITIVE,
    "num_shots": NON_NEGATIVE,
    "samples_per_round": POSITIVE,
    "problems_per_batch": POSITIVE,
    "budget": POSITIVE,
    "min_correct": NON_NEGATIVE,
    "min_wrong": NON_NEGATIVE,
    "naive_wrong": NON_NEGATIVE,
    "max_rounds": NON_NEGATIVE,
    "max_code_rounds": NON_NEGATIVE,
    "solutions_per_problem": POSITIVE,
    "prefixes_per_solution": POSITIVE,
    "rounds": POSITIVE,
    "max_pairs_per_problem": POSITIVE,
    "max_steps": POSITIVE,
    "max_step_chars": POSITIVE,
    "min_steps": POSITIVE,
    "max_naive": NON_NEGATIVE,
    "n_train": POSITIVE,
    "n_test": POSITIVE,
    "seed": click.IntRange(min=0, max=MAX_SEED),
    "logits_chunk": NON_NEGATIVE,
    "memory_limit_gb": Number(min=0),
    # rates and scales
    "learning_rate": Number(min=0, min_open=True),
    "warmup_ratio": FRACTION,
    "weight_decay": Number(min=0),
    "lora_scale": Number(min=0, min_open=True),
    "lora_dropout": Number(min=0, max=1, max_open=True),
    "beta": Number(min=0, min_open=True),
    "label_smoothing": Number(min=0, max=0.5),
    "rpo_alpha": Number(min=0),
    "temperature": Number(min=0),
    "t0": Number(min=0),
    "dt": Number(min=0),
    "tmax": Number(min=0),
    "timeout": Number(min=0, min_open=True, max=86400),
    "valid_fraction": Number(min=0, max=1, max_open=True),
    # choices
    "task": click.Choice(TASKS),
    "fine_tune_type": click.Choice(["lora", "dora", "full"]),
    "loss_type": click.Choice(["sigmoid", "ipo", "hinge"]),
    "reference": click.Choice(["precompute", "on-the-fly"]),
    "report_to": click.Choice(["none", "wandb"]),
    "solution_format": click.Choice(["cot", "code"]),
    "block_format": click.Choice(["markdown", "mathcoder"]),
    "step_unit": click.Choice(["line", "paragraph"]),
    "schedule": click.Choice(["continuous", "rounds"]),
}


@dataclass(kw_only=True)
class GenerationArgs:
    """Options shared by the commands that generate solutions to problems (``eval``, ``sample``); each
    command's dataclass adds its own (and ``progress``, last) and may set other defaults."""

    model: str = field(metadata={"help": "Model folder or hub id."})
    task: str = field(default="gsm8k", metadata={"help": "gsm8k, math or math500."})
    adapter_path: str | None = field(default=None, metadata={"help": "LoRA adapter folder."})
    data_files: str | None = field(
        default=None, metadata={"help": "Local JSON/JSONL/parquet file of problems."}
    )
    dataset: str | None = field(default=None, metadata={"help": "Hub dataset instead of the task default."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N problems."})
    num_shots: int | None = field(
        default=None, metadata={"help": "Few-shot examples (default 0 chat, 8/4 base)."}
    )
    chat_template: bool | None = field(
        default=None, metadata={"help": "Use the chat template (default: if any)."}
    )
    max_tokens: int = field(metadata={"help": "Maximum new tokens per solution."})
    batch_size: int = field(metadata={"help": "Sequences decoded together."})
    output_dir: str = field(metadata={"help": "Where the outputs go."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    solution_format: str = field(
        default="cot", metadata={"help": "cot or code (code-integrated, sandboxed)."}
    )
    block_format: str = field(
        default="markdown", metadata={"help": "Code blocks: markdown fences or mathcoder."}
    )
    max_rounds: int = field(default=8, metadata={"help": "Code executions per solution (code format)."})
    timeout: float = field(default=6.0, metadata={"help": "Seconds per code block (reference: 6)."})
    stop: list[str] | None = field(
        default=None,
        metadata={
            "help": "Text stop strings, repeatable (default: the "
            "few-shot headers \\n\\nQuestion: and "
            "\\n\\nProblem:; '' for none)."
        },
    )


#: Flags spelled other than their field, so one thing has one flag in every command: the solution
#: format is ``--format`` (as in ``score``), the sampling temperature ``--temp`` (as in mlx-lm), and
#: code executions per solution ``--max-code-rounds`` (``--rounds`` of ``step-control`` is another
#: thing). YAML keys may use either spelling.
FLAGS = {"solution_format": "format", "temperature": "temp", "max_rounds": "max_code_rounds"}
#: Older spellings still accepted (not shown in ``--help``).
HIDDEN_ALIASES = {
    "solution_format": ("--solution-format",),
    "temperature": ("--temperature",),
    "max_rounds": ("--max-rounds",),
}


def flag(name: str) -> str:
    """The command-line flag of field ``name`` (``--max-tokens``, ``--format``)."""
    return "--" + FLAGS.get(name, name).replace("_", "-")


class AliasedOption(click.Option):
    """A click option that also takes older spellings of its flag without listing them in ``--help``."""

    def __init__(self, *args, hidden_aliases: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden_aliases = set(hidden_aliases)

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown

    def get_error_hint(self, ctx):
        return f"'{self.opts[0]}'"


def option_type(name: str, default=None):
    """The checked click type of an option (``default`` when the table has none)."""
    return OPTION_TYPES.get(name, default)


def check_value(name: str, value, source: str = ""):
    """``value`` converted and checked as option ``name``; a bad one is a one-line ``UserError``."""
    typ = OPTION_TYPES.get(name)
    if typ is None or value is None:
        return value
    where = f"{source}: field '{name}'" if source else flag(name)
    if (
        isinstance(value, (bool, list, dict))
        or isinstance(typ, click.IntRange)
        and isinstance(value, float)
        or isinstance(typ, click.Choice)
        and not isinstance(value, str)
    ):
        raise UserError(f"{where}: {value!r} is not {_kind(typ)}")
    try:
        return typ.convert(value, None, None)
    except click.BadParameter as e:
        raise UserError(f"{where}: {e.message}") from None


def _kind(typ) -> str:
    if isinstance(typ, click.Choice):
        return "one of " + ", ".join(typ.choices)
    return "an integer" if isinstance(typ, click.IntRange) else "a number"


def check_values(args) -> None:
    """Check every field of an arguments dataclass against ``OPTION_TYPES`` (and the pairs that
    must agree); raises one ``UserError``."""
    for f in dataclasses.fields(args):
        check_value(f.name, getattr(args, f.name))
    if (
        getattr(args, "max_prompt_length", 0)
        and getattr(args, "max_length", None) is not None
        and args.max_prompt_length >= args.max_length
    ):
        raise UserError(
            f"--max-prompt-length {args.max_prompt_length} must be below --max-length {args.max_length}"
        )
    if (
        getattr(args, "t0", None) is not None
        and getattr(args, "tmax", None) is not None
        and args.t0 > args.tmax
    ):
        raise UserError(f"--t0 {args.t0} must not exceed --tmax {args.tmax}")


def _yaml_loader():
    """PyYAML's SafeLoader reading floats as mlx-lm's ``lora`` loader does (``1e-5`` is a float)."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            """A key given twice is refused (PyYAML silently keeps the last one)."""
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key '{key_node.value}' given twice", key_node.start_mark
                        )
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:
         [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


def load_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        data = yaml.load(p.read_bytes().decode("utf-8"), Loader=_yaml_loader()) or {}
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None)
        why = f" ({problem})" if isinstance(problem, str) and "given twice" in problem else ""
        raise UserError(f"{path}{':' + str(mark.line + 1) if mark else ''}: invalid YAML{why}") from None
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
            name = flag(f.name)
            typ = _click_type(cls, f)
            help_text = f.metadata.get("help", "")
            if f.default is not dataclasses.MISSING and f.default is not None:
                help_text += f" [default: {f.default}]"
            if typ is bool:
                fn = click.option(f"{name}/--no-{name[2:]}", f.name, default=None, help=help_text)(fn)
            elif typing.get_origin(typ) is list:  # repeatable: --stop A --stop B
                fn = click.option(name, f.name, multiple=True, default=None, help=help_text)(fn)
            else:
                aliases = HIDDEN_ALIASES.get(f.name, ())
                fn = click.option(
                    name,
                    *aliases,
                    f.name,
                    cls=AliasedOption,
                    hidden_aliases=aliases,
                    type=option_type(f.name, typ),
                    default=None,
                    help=help_text,
                )(fn)
        return click.option("-c", "--config", default=None, help="YAML file of options (CLI flags win).")(fn)

    return decorate


def _yaml_value(cls, f, key: str, value, config: str):
    """A YAML value typed as its field (as click would type it on the command line)."""
    typ = _click_type(cls, f)
    if value is None:
        if f.default is None:
            return None
        raise UserError(f"{config}: field '{key}' needs a value")
    if f.name in OPTION_TYPES:
        return check_value(f.name, value, config)
    if typ in (bool, int, float, str):
        if (
            typ is not str
            and isinstance(value, str)
            or typ is str
            and not isinstance(value, (str, int, float))
            or typ is not bool
            and isinstance(value, bool)
            or typ is bool
            and not isinstance(value, bool)
        ):
            raise UserError(f"{config}: field '{key}' must be {_KIND[typ]}, not {value!r}")
        return typ(value)
    if typing.get_origin(typ) is list or typ is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{config}: field '{key}' must be a list of names")
    return value


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def build_args(cls, kwargs: dict, config: str | None = None):
    """``cls`` from explicit CLI values, then YAML values, then the dataclass defaults (all checked)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    spelled = {FLAGS[n]: n for n in fields if n in FLAGS}  # YAML may use the flag's spelling (temp: 0.7)
    values = {}
    if config:
        for key, value in load_yaml(config).items():
            name = str(key).replace("-", "_")
            name = spelled.get(name, name)
            if name not in fields:
                raise UserError(f"{config}: field '{key}' is not an option of this command")
            values[name] = _yaml_value(cls, fields[name], key, value, config)
    values.update(
        {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in kwargs.items()
            if k in fields and v is not None and v != ()
        }
    )
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING]
    if missing:
        raise UserError(f"missing required option(s): {', '.join(flag(m) for m in missing)}")
    args = cls(**values)
    check_values(args)
    return args
