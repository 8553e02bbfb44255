"""``score`` command, shared by ``python -m eval`` and ``mlx-scdpo score``."""

from __future__ import annotations

import sys

import click

from eval.data import TASKS
from eval.errors import UserError


def fail(err: UserError) -> None:
    """Print a user error as one line and exit with code 2 (no traceback)."""
    click.echo(f"error: {err}", err=True)
    sys.exit(UserError.exit_code)


@click.command("score")
@click.argument("completions", type=click.Path(dir_okay=False))
@click.option("--task", required=True, type=click.Choice(TASKS), help="Benchmark the completions answer.")
@click.option("--output-dir", default=None, help="Where reports go (default: next to COMPLETIONS).")
@click.option("--data-files", default=None, help="Local dataset file for gold answers missing from COMPLETIONS.")
@click.option("--dataset", default=None, help="Hub dataset for gold answers missing from COMPLETIONS.")
@click.option("--format", "solution_format", type=click.Choice(["cot", "markdown", "mathcoder"]), default="cot",
              show_default=True, help="Chain-of-thought, or code-integrated blocks (markdown fences / MathCoder).")
def score_command(completions, task, output_dir, data_files, dataset, solution_format):
    """Grade COMPLETIONS.jsonl (doc_id + response [+ target]) produced by any engine."""
    from eval.score import format_summary, score_file

    try:
        metrics, res_path, sam_path = score_file(completions, task, output_dir, data_files, dataset,
                                                  solution_format=solution_format)
    except UserError as e:
        fail(e)
    click.echo(format_summary(task, metrics))
    click.echo(f"wrote {res_path}\nwrote {sam_path}")
