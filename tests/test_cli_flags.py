"""One flag per thing across commands, old spellings still accepted, and ``-c`` for every dataclass command."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main
from mlx_scdpo.config import build_args
from mlx_scdpo.evaluate import EvalArgs
from mlx_scdpo.sampling import SampleArgs


def _params(command: str, argv: list[str]) -> dict:
    cmd = main.commands[command]
    with cmd.make_context(command, argv) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_help_shows_one_spelling(command):
    out = CliRunner().invoke(main, [command, "--help"]).output
    assert "--format [cot|code]" in out and "--max-code-rounds" in out
    assert "--solution-format" not in out and "--max-rounds" not in out and "--temperature" not in out
    if command == "sample":
        assert "--temp " in out


@pytest.mark.parametrize("new,old,field,value", [
    (["--format", "code"], ["--solution-format", "code"], "solution_format", "code"),
    (["--temp", "0.5"], ["--temperature", "0.5"], "temperature", 0.5),
    (["--max-code-rounds", "3"], ["--max-rounds", "3"], "max_rounds", 3),
])
def test_old_spellings_still_work(new, old, field, value):
    base = ["--model", "m", "--output-dir", "o"]
    assert _params("sample", base + new)[field] == value
    assert _params("sample", base + old)[field] == value


def test_eval_takes_old_format_flag_and_a_config(tmp_path):
    assert _params("eval", ["--model", "m", "--task", "math", "--format", "code"])["solution_format"] == "code"
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("model: m\ntask: math500\nmax_tokens: 64\nformat: code\n")
    params = _params("eval", ["-c", str(cfg), "--max-tokens", "32"])
    args = build_args(EvalArgs, params, params.pop("config"))
    assert (args.model, args.task, args.max_tokens, args.solution_format) == ("m", "math500", 32, "code")


def test_yaml_takes_either_spelling(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("model: m\noutput_dir: o\ntemp: 0.7\nmax-code-rounds: 2\nsolution_format: code\n")
    args = build_args(SampleArgs, {}, str(cfg))
    assert (args.temperature, args.max_rounds, args.solution_format) == (0.7, 2, "code")


def test_eval_task_is_still_required_and_checked():
    res = CliRunner().invoke(main, ["eval", "--model", "m"])
    assert res.exit_code == 2 and "--task" in res.output
    with pytest.raises(click.BadParameter):
        _params("eval", ["--model", "m", "--task", "aime"])


def test_prompt_settings_shared_by_eval_and_sample():
    from types import SimpleNamespace

    from mlx_scdpo.errors import UserError
    from mlx_scdpo.prompts import default_num_shots, prompt_settings

    with_template, without = SimpleNamespace(chat_template="{{x}}"), SimpleNamespace(chat_template=None)
    assert prompt_settings(with_template, "m", "gsm8k", None, None, False) == (True, default_num_shots("gsm8k", True))
    assert prompt_settings(without, "m", "math", None, 2, True) == (False, 2)
    with pytest.raises(UserError, match="has no chat template"):  # sample used to fail later, in the tokenizer
        prompt_settings(without, "m", "gsm8k", True, None, False)
