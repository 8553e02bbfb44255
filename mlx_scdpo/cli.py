"""The ``mlx-scdpo`` command line (thin: parsing only; the work lives in the modules)."""

from __future__ import annotations

import click

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX on Linux)
from eval.cli import fail, score_command
from eval.data import TASKS
from eval.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mlx_scdpo.__version__, prog_name="mlx-scdpo")
def main():
    """Step-Controlled DPO for MLX, and a GSM8K / MATH evaluation harness."""


main.add_command(score_command)


@main.command("eval")
@click.option("--model", required=True, help="Model folder or hub id.")
@click.option("--adapter-path", default=None, help="LoRA adapter folder.")
@click.option("--task", required=True, type=click.Choice(TASKS))
@click.option("--data-files", default=None, help="Local JSON/JSONL/parquet problems instead of the hub.")
@click.option("--dataset", default=None, help="Hub dataset instead of the task default.")
@click.option("--limit", type=int, default=None, help="Only the first N problems.")
@click.option("--num-shots", type=int, default=None, help="Few-shot examples (default: 0 chat, 8 GSM8K / 4 MATH base).")
@click.option("--chat-template/--no-chat-template", default=None, help="Chat prompt (default: if the tokenizer has one).")
@click.option("--max-tokens", type=int, default=1024, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--output-dir", default="runs/eval", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "solution_format", type=click.Choice(["cot", "code"]), default="cot", show_default=True,
              help="Chain-of-thought, or code-integrated (code blocks run in the sandbox).")
@click.option("--block-format", type=click.Choice(["markdown", "mathcoder"]), default="markdown", show_default=True,
              help="Code-integrated block syntax.")
@click.option("--max-rounds", type=int, default=8, show_default=True, help="Code executions per solution.")
@click.option("--timeout", type=float, default=6.0, show_default=True, help="Seconds per code block.")
@click.option("--schedule", type=click.Choice(["continuous", "rounds"]), default="continuous", show_default=True,
              help="Code loop: resume each solution when its block ran, or the whole batch in rounds.")
def eval_command(**kwargs):
    """Greedy benchmark of a model (resumable); writes lm-eval-shaped reports."""
    from eval.score import format_summary
    from mlx_scdpo.evaluate import EvalArgs, run_eval

    try:
        metrics, res_path, sam_path = run_eval(EvalArgs(**kwargs))
    except UserError as e:
        fail(e)
    click.echo(format_summary(kwargs["task"], metrics))
    click.echo(f"wrote {res_path}\nwrote {sam_path}")


if __name__ == "__main__":
    main()
