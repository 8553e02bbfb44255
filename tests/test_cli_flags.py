"""One flag per thing across commands, old spellings still accepted, and ``-c`` for every dataclass command."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main
from mlx_scdpo.config import build_args
from mlx_scdpo.evaluate import EvalArgs
from mlx_scdpo.method.sampling import SampleArgs


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


@pytest.mark.parametrize(
    "new,old,field,value",
    [
        (["--format", "code"], ["--solution-format", "code"], "solution_format", "code"),
        (["--temp", "0.5"], ["--temperature", "0.5"], "temperature", 0.5),
        (["--max-code-rounds", "3"], ["--max-rounds", "3"], "max_rounds", 3),
    ],
)
def test_old_spellings_still_work(new, old, field, value):
    base = ["--model", "m", "--output-dir", "o"]
    assert _params("sample", base + new)[field] == value
    assert _params("sample", base + old)[field] == value


def test_eval_takes_old_format_flag_and_a_config(tmp_path):
    assert (
        _params("eval", ["--model", "m", "--task", "math", "--format", "code"])["solution_format"] == "code"
    )
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
    from mlx_scdpo.prompts import prompt_settings

    with_template, without = SimpleNamespace(chat_template="{{x}}"), SimpleNamespace(chat_template=None)
    assert prompt_settings(with_template, "m", "gsm8k", None, None, False) == (True, 0)  # chat: zero-shot
    assert prompt_settings(without, "m", "math", None, 2, True) == (False, 2)
    with pytest.raises(
        UserError, match="has no chat template"
    ):  # sample used to fail later, in the tokenizer
        prompt_settings(without, "m", "gsm8k", True, None, False)


def test_prompt_settings_and_prompts_on_real_tokenizers(tiny_model, tmp_path):
    """The same decisions on real tokenizers: the tiny model's (a ChatML template) and a copy without one
    (a base model's); a chat prompt is rendered by the real template, few-shot turns included."""
    import json
    import shutil

    from mlx_lm import load

    from mlx_scdpo.errors import UserError
    from mlx_scdpo.prompts import build_prompt_tokens, prompt_settings

    base_model = tmp_path / "base"
    shutil.copytree(tiny_model, base_model)
    config = json.loads((base_model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (base_model / "tokenizer_config.json").write_text(json.dumps(config))
    _, chat_tok = load(str(tiny_model))
    _, base_tok = load(str(base_model))
    assert chat_tok.chat_template is not None and base_tok.chat_template is None
    assert prompt_settings(chat_tok, "m", "gsm8k", None, None, False) == (True, 0)  # chat: zero-shot
    assert prompt_settings(base_tok, "m", "gsm8k", None, None, False) == (
        False,
        8,
    )  # base: Wei et al.'s 8 exemplars
    assert prompt_settings(base_tok, "m", "math", None, None, False) == (False, 4)  # Minerva's 4
    with pytest.raises(UserError, match="has no chat template"):
        prompt_settings(base_tok, "m", "gsm8k", True, None, False)
    ids, text = build_prompt_tokens(chat_tok, "gsm8k", "What is 1 + 1?", 1, chat=True)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|im_start|>assistant\n") == 2  # one few-shot answer, then the generation prompt
    assert chat_tok.decode(ids) == text
    _, text = build_prompt_tokens(base_tok, "gsm8k", "What is 1 + 1?", 1, chat=False)
    assert "<|im_start|>" not in text and text.endswith("Question: What is 1 + 1?\nAnswer:")
