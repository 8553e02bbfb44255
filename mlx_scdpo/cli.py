"""The ``mlx-scdpo`` command line (thin: parsing only; the work lives in the modules)."""

from __future__ import annotations

from pathlib import Path

import click

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX on Linux)
from eval.cli import OneLineErrors, fail, score_command
from eval.score import format_summary
from mlx_scdpo.config import build_args, dataclass_options, option_type
from mlx_scdpo.errors import CommandError, UserError
from mlx_scdpo.evaluate import EvalArgs, run_eval
from mlx_scdpo.method.pairs import build_pairs, refuse_overwriting_inputs
from mlx_scdpo.method.sampling import SampleArgs, run_sample
from mlx_scdpo.method.step_control import StepControlArgs, run_step_control
from mlx_scdpo.models import load_model
from mlx_scdpo.toy.quickstart import QuickstartArgs, format_table, run_quickstart
from mlx_scdpo.training.credit import credit_report, read_credit_pairs, to_html, to_terminal
from mlx_scdpo.training.export import export_peft
from mlx_scdpo.training.preference_data import check_token_ids, vocab_size
from mlx_scdpo.training.train import TrainArgs, run_train


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mlx_scdpo.__version__, prog_name="mlx-scdpo")
def main():
    """Step-Controlled DPO for MLX, and a GSM8K / MATH evaluation harness."""


main.add_command(score_command)


@main.command("eval")
@dataclass_options(EvalArgs)
def eval_command(**kwargs):
    """Greedy benchmark of a model (resumable); writes lm-eval-shaped reports."""
    _run(
        EvalArgs, run_eval, kwargs, lambda a, r: f"{format_summary(a.task, r[0])}\nwrote {r[1]}\nwrote {r[2]}"
    )


def _run(cls, runner, kwargs, summary):
    try:
        config = kwargs.pop("config", None)
        args = build_args(cls, kwargs, config)
        result = runner(args)
    except CommandError as e:
        fail(e)
    click.echo(summary(args, result))
    return args


@main.command("sample")
@dataclass_options(SampleArgs)
def sample_command(**kwargs):
    """Sample and grade N solutions per training problem; write solutions and naive pairs."""
    _run(
        SampleArgs,
        run_sample,
        kwargs,
        lambda a, r: (
            f"{r['problems']} problems, {r['samples']} samples; {r['pairs']} naive pairs\n"
            f"wrote {a.output_dir}/solutions.jsonl and {a.output_dir}/pairs_naive.jsonl"
        ),
    )


@main.command("step-control")
@dataclass_options(StepControlArgs)
def step_control_command(**kwargs):
    """Erring continuations of correct solutions after k kept steps (the rising temperature ramp)."""
    _run(
        StepControlArgs,
        run_step_control,
        kwargs,
        lambda a, r: (
            f"{r['prefixes']} prefixes: {r['pairs']} step-controlled pairs, {r['exhausted']} never erred, "
            f"{r['capped']} capped, {r['skipped_mid_token']} skipped (boundary inside a token)\n"
            f"wrote {a.output_dir}/step_control.jsonl and {a.output_dir}/pairs_step_control.jsonl"
        ),
    )


@main.command("train")
@dataclass_options(TrainArgs, skip=("lora_keys",))
def train_command(**kwargs):
    """DPO training of LoRA / DoRA adapters (reference = the frozen base model)."""

    def summary(args, last):
        shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float)}
        return f"{shown}\nwrote {args.adapter_path}/adapters.safetensors and metrics.jsonl"

    _run(TrainArgs, run_train, kwargs, summary)


@main.command("export")
@click.option("--adapter-path", required=True, help="Adapter folder written by `mlx-scdpo train`.")
@click.option("--peft", "peft_dir", required=True, help="Output folder for a PEFT LoRA adapter.")
@click.option(
    "--base-model", default=None, help="base_model_name_or_path to record (default: the training model)."
)
def export_command(adapter_path, peft_dir, base_model):
    """Convert adapters to PEFT format (adapter_model.safetensors + adapter_config.json)."""
    try:
        n = export_peft(adapter_path, peft_dir, base_model)
    except CommandError as e:
        fail(e)
    click.echo(f"wrote {n} LoRA modules to {peft_dir}")


@main.command("quickstart")
@dataclass_options(QuickstartArgs)
def quickstart_command(**kwargs):
    """The whole method offline on the toy world: sample, pairs, DPO + SCDPO, eval, report."""
    _run(
        QuickstartArgs,
        run_quickstart,
        kwargs,
        lambda a, r: f"{format_table(r)}\nwrote {a.output_dir}/report.html",
    )


@main.command("credit")
@click.option("--model", required=True, help="Base model (the reference).")
@click.option("--adapter-path", required=True, help="LoRA adapters (the policy).")
@click.option("--pairs", "pairs_file", required=True, help="Pairs JSONL with token ids (from mlx-scdpo).")
@click.option("--beta", type=option_type("beta"), default=0.1, show_default=True)
@click.option("--limit", type=option_type("limit"), default=8, show_default=True, help="Pairs to show.")
@click.option("--html", "html_out", default=None, help="Write an HTML heatmap here.")
@click.option(
    "--color/--no-color", default=None, help="Terminal colours (default: when writing to a terminal)."
)
def credit_command(model, adapter_path, pairs_file, beta, limit, html_out, color):
    """Per-token implicit rewards beta*(log pi - log ref) of chosen and rejected, as colour."""
    try:
        if html_out:
            refuse_overwriting_inputs(
                [
                    pairs_file,
                    Path(adapter_path) / "adapters.safetensors",
                    Path(adapter_path) / "adapter_config.json",
                ],
                [html_out],
            )
            if Path(html_out).is_dir() or not Path(html_out).absolute().parent.is_dir():
                raise UserError(f"{html_out}: --html takes a file in an existing folder")
        pairs = read_credit_pairs(pairs_file)[:limit]
        mdl, tok = load_model(model, adapter_path)
        check_token_ids(pairs, vocab_size(mdl), pairs_file)
        rep = credit_report(mdl, tok, pairs, beta)
    except CommandError as e:
        fail(e)
    blocks = []
    for pair, chosen, rejected, share in rep["pairs"]:
        click.echo(f"--- {pair.get('problem_id', '')} ({pair.get('source', '')}, k={pair.get('k', '')})")
        click.echo("chosen:   " + to_terminal(chosen), color=color)
        click.echo("rejected: " + to_terminal(rejected), color=color)
        if share is not None:
            click.echo(f"share of negative reward on/after the first wrong step: {share:.2f}")
        blocks.append(
            to_html([("chosen", chosen), ("rejected", rejected)], title=str(pair.get("problem_id", "")))
        )
    if rep["mean_negative_share_after_error"] is not None:
        click.echo(
            f"mean share on/after the first wrong step: {rep['mean_negative_share_after_error']:.3f} "
            f"({rep['n_measured']} pairs)"
        )
    if html_out:
        Path(html_out).write_text(
            "<!doctype html><meta charset='utf-8'><body style='font-family:sans-serif'>"
            + "".join(blocks)
            + "</body>"
        )
        click.echo(f"wrote {html_out}")


@main.command("build-pairs")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output-dir", required=True, help="Where train.jsonl and valid.jsonl go.")
@click.option(
    "--valid-fraction",
    type=option_type("valid_fraction"),
    default=0.01,
    show_default=True,
    help="Held out (reference 1%).",
)
@click.option("--seed", type=option_type("seed"), default=0, show_default=True, help="Shuffle seed.")
@click.option("--conversational/--standard", default=False, help="TRL conversational form (no token ids).")
@click.option(
    "--max-naive", type=option_type("max_naive"), default=None, help="Keep at most this many naive pairs."
)
def build_pairs_command(inputs, output_dir, valid_fraction, seed, conversational, max_naive):
    """Mix pair files (naive and step-controlled), shuffle, and write train/valid JSONL."""
    try:
        r = build_pairs(list(inputs), output_dir, valid_fraction, seed, conversational, max_naive)
    except CommandError as e:
        fail(e)
    click.echo(
        f"{r['train']} train / {r['valid']} valid pairs {r['by_source']}\nwrote {output_dir}/train.jsonl"
    )


if __name__ == "__main__":
    main()
