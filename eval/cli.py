"""``score`` command, shared by ``python -m eval`` and ``mlx-scdpo score``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eval.data import TASKS
from eval.errors import UserError
from eval.score import format_summary, score_file


def fail(err: UserError) -> None:
    """Print a user error as one line and exit with code 2 (no traceback)."""
    click.echo(f"error: {err}", err=True)
    sys.exit(UserError.exit_code)


class OneLineErrors(click.Group):
    """Usage errors (a bad option value, a missing option) and unusable paths as one line and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `mlx-scdpo`: the help, as click shows it
                e.show()
            else:
                click.echo(
                    f"error: {' '.join(e.format_message().split())}", err=True
                )  # click may wrap choices
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except OSError as e:  # a path that cannot be read or written (a folder given as a file, no space)
            if e.filename is None:
                raise
            click.echo(f"error: {e.filename}: {e.strerror or type(e).__name__}", err=True)
            sys.exit(UserError.exit_code)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


@click.command("score")
@click.argument("completions", type=click.Path(dir_okay=False))
@click.option("--task", required=True, type=click.Choice(TASKS), help="Benchmark the completions answer.")
@click.option("--output-dir", default=None, help="Where reports go (default: next to COMPLETIONS).")
@click.option(
    "--data-files", default=None, help="Local dataset file for gold answers missing from COMPLETIONS."
)
@click.option("--dataset", default=None, help="Hub dataset for gold answers missing from COMPLETIONS.")
@click.option(
    "--format",
    "solution_format",
    type=click.Choice(["cot", "markdown", "mathcoder"]),
    default="cot",
    show_default=True,
    help="Chain-of-thought, or code-integrated blocks (markdown fences / MathCoder).",
)
def score_command(completions, task, output_dir, data_files, dataset, solution_format):
    """Grade COMPLETIONS.jsonl (doc_id + response [+ target]) produced by any engine."""
    try:
        if (
            output_dir is not None
        ):  # checked before grading: a file in the way is one line, not a late traceback
            existing = next(p for p in (Path(output_dir), *Path(output_dir).absolute().parents) if p.exists())
            if not existing.is_dir():
                raise UserError(f"{existing}: exists and is not a folder (--output-dir {output_dir})")
        metrics, res_path, sam_path = score_file(
            completions, task, output_dir, data_files, dataset, solution_format=solution_format
        )
    except UserError as e:
        fail(e)
    click.echo(format_summary(task, metrics))
    click.echo(f"wrote {res_path}\nwrote {sam_path}")
