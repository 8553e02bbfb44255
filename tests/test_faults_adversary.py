"""An outsider's bad-input table, per command: every numeric and choice option at and beyond its
range (0, negatives, 2**63, nan, text), YAML configs with wrong types and repeated keys, output
paths that are files or inputs, special files, damaged model folders, records with wrong types.

Every case must end with exit code 2 and ONE line on stderr naming the file, line, field or
option, no traceback, and every input byte-unchanged.
"""

import hashlib
import json
import os

import click
import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main

PAIR = {
    "prompt": "Q: 1 + 1 =",
    "chosen": " 2.",
    "rejected": " 3.",
    "source": "naive",
    "prompt_ids": [1, 2],
    "chosen_ids": [3],
    "rejected_ids": [4],
}
SOLUTION = {
    "problem_id": "p/0",
    "task": "gsm8k",
    "question": "Q",
    "gold": "2",
    "prompt": "Q: 1 + 1 =",
    "prompt_ids": [1, 2, 3],
    "samples": [{"text": " 2", "ids": [4], "correct": True}],
}
PROBLEM = {"question": "What is 1 + 1?", "answer": "#### 2"}


def _lines(*rows):
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _digests(paths):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _one_line_exit_2(argv, inputs=(), must_name=None):
    """Run the CLI; assert exit 2, one line naming ``must_name``, inputs unchanged. Returns the line."""
    before = _digests(inputs)
    res = CliRunner().invoke(main, [str(a) for a in argv])
    assert res.exit_code == 2, (argv, res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, res.stderr)
    assert "Traceback" not in res.output
    assert _digests(inputs) == before, argv  # inputs are never written
    if must_name is not None:
        assert str(must_name) in lines[0], (argv, lines[0])
    return lines[0]


# ---------------------------------------------------------------- every ranged option, from the CLI itself

#: Required arguments of each command (their values are never reached: the bad option is refused first).
REQUIRED = {
    "eval": ["--model", "m", "--task", "gsm8k"],
    "sample": ["--model", "m", "--output-dir", "o"],
    "step-control": ["--model", "m", "--solutions", "s", "--output-dir", "o"],
    "train": ["--model", "m", "--data", "d"],
    "credit": ["--model", "m", "--adapter-path", "a", "--pairs", "p"],
    "build-pairs": ["x.jsonl", "--output-dir", "o"],
    "export": ["--adapter-path", "a", "--peft", "p"],
    "quickstart": [],
    "score": ["c.jsonl", "--task", "gsm8k"],
}


def _bad_values(typ) -> list[str]:
    """Values outside a click type: below and above its range, non-numbers, 2**63, nan."""
    if isinstance(typ, click.Choice):
        return ["nope", ""]
    out = ["abc", "", str(-(2**63))]
    if isinstance(typ, click.IntRange):
        out += ["1.5", "true", str(2**63)]
        if typ.min is not None:
            out.append(str(typ.min - 1))
        if typ.max is not None:
            out.append(str(typ.max + 1))
        if type(typ).__name__ == "AllOrPositive":
            out.append("0")
    else:  # a finite number in a range
        out += ["nan", "inf", "-inf", "1e400"]
        if typ.min is not None:
            out.append(str(typ.min) if typ.min_open else str(typ.min - 1))
        if typ.max is not None:
            out.append(str(typ.max) if typ.max_open else str(typ.max + 1))
    return out


def _option_cases():
    cases = []
    for name, cmd in sorted(main.commands.items()):
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(
                p.type, (click.IntRange, click.FloatRange, click.Choice)
            ):
                for value in _bad_values(p.type):
                    cases.append(
                        pytest.param(name, p.opts[0], value, id=f"{name}{p.opts[0]}={value or 'empty'}")
                    )
    return cases


def test_every_numeric_option_is_ranged():
    """No int/float option escapes the range table (a bare click.INT takes 2**63)."""
    for name, cmd in main.commands.items():
        for p in cmd.params:
            assert not isinstance(
                p.type, (click.types.IntParamType, click.types.FloatParamType)
            ) or isinstance(p.type, (click.IntRange, click.FloatRange)), (name, p.name)


@pytest.mark.parametrize("command,flag,value", _option_cases())
def test_option_out_of_range_is_one_line(command, flag, value):
    _one_line_exit_2([command, *REQUIRED[command], flag, value], must_name=flag)


# ---------------------------------------------------------------- YAML configs (-c)

YAML_CASES = [  # (text, what the line must name)
    ("seed: 9223372036854775808\n", "seed"),
    ("seed: 4294967296\n", "seed"),
    ("batch_size: 9223372036854775807\n", "batch_size"),
    ("batch_size: true\n", "batch_size"),
    ("batch_size: 1.0\n", "batch_size"),
    ("batch_size: [1]\n", "batch_size"),
    ("batch_size: {a: 1}\n", "batch_size"),
    ("learning_rate: .nan\n", "learning_rate"),
    ("learning_rate: -.inf\n", "learning_rate"),
    ("learning_rate: 1e999\n", "learning_rate"),
    ("learning_rate: 'fast'\n", "learning_rate"),
    ("epochs: 1e300\n", "epochs"),
    ("timeout: 1e300\n", "timeout"),
    ("loss_type: 5\n", "loss_type"),
    ("loss_type: null\n", "loss_type"),
    ("model: null\n", "model"),
    ("model: [a, b]\n", "model"),
    ("resume: 'yes'\n", "resume"),
    ("resume: 1\n", "resume"),
    ("lora_keys: [1, 2]\n", "lora_keys"),
    ("lora_keys: self_attn.q_proj\n", "lora_keys"),
    ("batch_size: 2\nbatch_size: 3\n", "batch_size"),  # a repeated key: PyYAML would keep the last silently
    ("batch-size: 2\nbatch-size: 3\n", "batch-size"),
    ("nonsense: 1\n", "nonsense"),
    ("config: other.yaml\n", "config"),
    ("- batch_size\n", ""),
    ("42\n", ""),
    ("batch_size: [\n", ""),
    ("!!python/object:os.system {}\n", ""),
]


@pytest.mark.parametrize("text,name", YAML_CASES, ids=lambda x: x if isinstance(x, str) else None)
def test_yaml_config_faults_are_one_line(tmp_path, text, name):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    line = _one_line_exit_2(
        ["train", "-c", cfg, "--model", tmp_path / "m", "--data", tmp_path / "d"], [cfg], must_name=cfg
    )
    assert name in line and "m:" not in line  # refused before the (missing) model is looked at


def test_yaml_config_non_utf8_and_special_files(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"batch_size: \xff\n")
    _one_line_exit_2(["train", "-c", cfg, "--model", "m", "--data", "d"], [cfg], must_name=cfg)
    os.mkfifo(tmp_path / "fifo.yaml")  # never written: must not hang
    _one_line_exit_2(
        ["train", "-c", tmp_path / "fifo.yaml", "--model", "m", "--data", "d"], must_name="fifo.yaml"
    )
    _one_line_exit_2(["train", "-c", tmp_path, "--model", "m", "--data", "d"], must_name=tmp_path)


def test_huge_sizes_within_range_neither_crash_nor_allocate(tiny_model, tmp_path):
    """--batch-size 2**31-1 trains (padding and the memory estimate stop at the data); a LoRA rank above
    the hidden size is refused from config.json before the model loads (an allocation that large
    segfaults MLX)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(_lines(PAIR, PAIR, PAIR))
    base = [
        "train",
        "--model",
        tiny_model,
        "--data",
        pairs,
        "--adapter-path",
        tmp_path / "ad",
        "--no-progress",
        "--iters",
        "1",
        "--num-layers",
        "1",
        "--ref-cache-dir",
        tmp_path / "ref",
    ]
    res = CliRunner().invoke(main, [str(a) for a in base + ["--batch-size", str(2**31 - 1)]])
    assert res.exit_code == 0, res.output
    _one_line_exit_2(base + ["--lora-rank", str(2**31 - 1)], [pairs], must_name="--lora-rank")
    # a run that does not fit is refused with its one error line (the estimate is in it, not on a line before)
    _one_line_exit_2(base + ["--memory-limit-gb", "0.001"], [pairs], must_name="exceeds")


# ---------------------------------------------------------------- paths: outputs that are files or inputs; FIFOs


@pytest.fixture()
def files(tmp_path):
    f = {
        "pairs": tmp_path / "pairs.jsonl",
        "problems": tmp_path / "problems.jsonl",
        "solutions": tmp_path / "solutions.jsonl",
        "completions": tmp_path / "completions.jsonl",
        "afile": tmp_path / "afile",
    }
    f["pairs"].write_bytes(_lines(PAIR, PAIR, PAIR))
    f["problems"].write_bytes(_lines(PROBLEM))
    f["solutions"].write_bytes(_lines(SOLUTION))
    f["completions"].write_bytes(_lines({"doc_id": 0, "response": "2", "target": "2"}))
    f["afile"].write_text("not a folder")
    return f


def _outputs_at(out, tiny_model, f):
    m = ["--model", tiny_model]
    return {
        "eval": ["eval", *m, "--task", "gsm8k", "--data-files", f["problems"], "--output-dir", out],
        "sample": ["sample", *m, "--data-files", f["problems"], "--output-dir", out, "--no-progress"],
        "step-control": [
            "step-control",
            *m,
            "--solutions",
            f["solutions"],
            "--output-dir",
            out,
            "--no-progress",
        ],
        "train": ["train", *m, "--data", f["pairs"], "--adapter-path", out, "--no-progress"],
        "train-ref-cache": [
            "train",
            *m,
            "--data",
            f["pairs"],
            "--adapter-path",
            out.parent / "ad",
            "--ref-cache-dir",
            out,
            "--no-progress",
            "--iters",
            "1",
        ],
        "build-pairs": ["build-pairs", f["pairs"], "--output-dir", out],
        "score": ["score", f["completions"], "--task", "gsm8k", "--output-dir", out],
        "quickstart": ["quickstart", "--output-dir", out, "--n-train", "2", "--no-progress"],
    }


@pytest.mark.parametrize(
    "command",
    ["eval", "sample", "step-control", "train", "train-ref-cache", "build-pairs", "score", "quickstart"],
)
@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_output_folder_that_is_a_file(tiny_model, files, command, where):
    out = files["afile"] if where == "is_a_file" else files["afile"] / "sub"
    argv = _outputs_at(out, tiny_model, files)[command]
    _one_line_exit_2(argv, list(files.values()), must_name=files["afile"])


def test_build_pairs_never_writes_over_its_inputs(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_bytes(_lines(PAIR, PAIR, PAIR))
    (out / "valid.jsonl").write_bytes(_lines(PAIR))
    inputs = [out / "train.jsonl", out / "valid.jsonl"]
    _one_line_exit_2(
        ["build-pairs", out / "train.jsonl", "--output-dir", out], inputs, must_name="train.jsonl"
    )
    _one_line_exit_2(
        ["build-pairs", files["pairs"], out / "valid.jsonl", "--output-dir", out],
        inputs,
        must_name="valid.jsonl",
    )
    os.symlink(out / "train.jsonl", tmp_path / "link.jsonl")  # the same file by another name
    _one_line_exit_2(
        ["build-pairs", tmp_path / "link.jsonl", "--output-dir", out], inputs, must_name="link.jsonl"
    )
    os.symlink(out, tmp_path / "out-link")
    _one_line_exit_2(["build-pairs", out / "train.jsonl", "--output-dir", tmp_path / "out-link"], inputs)


def test_credit_html_and_export_never_write_over_their_inputs(files, tmp_path):
    adapters = tmp_path / "ad"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(
        json.dumps({"lora_parameters": {"rank": 4, "scale": 1.0}, "num_layers": 1})
    )
    (adapters / "adapters.safetensors").write_bytes(b"\0" * 16)
    inputs = [files["pairs"], adapters / "adapter_config.json", adapters / "adapters.safetensors"]
    base = ["credit", "--model", tmp_path / "m", "--adapter-path", adapters, "--pairs", files["pairs"]]
    _one_line_exit_2(base + ["--html", files["pairs"]], inputs, must_name=files["pairs"])
    _one_line_exit_2(base + ["--html", adapters / "adapter_config.json"], inputs)
    _one_line_exit_2(["export", "--adapter-path", adapters, "--peft", adapters], inputs, must_name=adapters)
    _one_line_exit_2(
        ["export", "--adapter-path", adapters, "--peft", adapters / "adapters.safetensors"], inputs
    )
    _one_line_exit_2(["export", "--adapter-path", adapters, "--peft", files["afile"] / "sub"], inputs)


@pytest.mark.parametrize("kind", ["fifo", "folder", "dev_null", "dev_zero", "missing"])
def test_special_files_as_inputs_never_hang(tiny_model, files, tmp_path, kind):
    """A FIFO nobody writes to would block a reader forever; devices never end or are empty."""
    path = {
        "fifo": tmp_path / "in.jsonl",
        "folder": tmp_path / "dir.jsonl",
        "dev_null": "/dev/null",
        "dev_zero": "/dev/zero",
        "missing": tmp_path / "none.jsonl",
    }[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    m, out = ["--model", tiny_model], tmp_path / "out"
    for argv in (
        ["train", *m, "--data", path, "--adapter-path", out],
        ["build-pairs", path, "--output-dir", out],
        ["credit", *m, "--adapter-path", out, "--pairs", path],
        ["step-control", *m, "--solutions", path, "--output-dir", out],
        ["eval", *m, "--task", "gsm8k", "--data-files", path, "--output-dir", out],
        ["sample", *m, "--data-files", path, "--output-dir", out],
        ["score", path, "--task", "gsm8k"],
        ["train", "-c", path, *m, "--data", files["pairs"]],
    ):
        _one_line_exit_2(argv, list(files.values()), must_name=path)


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json", "model.safetensors"])
def test_a_fifo_in_the_model_folder_never_hangs(tiny_model, files, tmp_path, name):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    os.remove(model / name)
    os.mkfifo(model / name)
    _one_line_exit_2(
        [
            "eval",
            "--model",
            model,
            "--task",
            "gsm8k",
            "--data-files",
            files["problems"],
            "--output-dir",
            tmp_path / "out",
        ],
        list(files.values()),
        must_name=model,
    )
    _one_line_exit_2(
        ["train", "--model", model, "--data", files["pairs"], "--adapter-path", tmp_path / "ad"],
        list(files.values()),
        must_name=model,
    )


@pytest.mark.parametrize(
    "key,value", [("num_hidden_layers", 10**12), ("hidden_size", 2**40), ("vocab_size", 2**40)]
)
def test_absurd_sizes_in_config_json_are_one_line(tiny_model, files, tmp_path, key, value):
    """``num_hidden_layers: 10**12`` made the loader hang (building the layers) for minutes."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, key: value}))
    _one_line_exit_2(
        [
            "eval",
            "--model",
            model,
            "--task",
            "gsm8k",
            "--data-files",
            files["problems"],
            "--output-dir",
            tmp_path / "out",
        ],
        list(files.values()),
        must_name=key,
    )


def test_python_m_eval_usage_errors_are_one_line(files):
    import subprocess
    import sys

    for argv in (
        ["score", str(files["completions"]), "--task", "aime"],
        ["score", str(files["completions"])],
        ["score", str(files["completions"]), "--task", "gsm8k", "--output-dir", str(files["afile"])],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "eval", *argv], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, (argv, res.stderr)
    res = CliRunner().invoke(main, ["eval", "--model", "m"])  # click lists the choices of a missing option
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "--task" in res.stderr


# ---------------------------------------------------------------- records: non-JSON numbers and wrong field types

GOOD = {
    "train": PAIR,
    "build-pairs": PAIR,
    "credit": PAIR,
    "step-control": SOLUTION,
    "eval": PROBLEM,
    "sample": PROBLEM,
    "score": {"doc_id": 0, "response": "2", "target": "2"},
}


def _record_argv(command, path, tiny_model, out):
    m = ["--model", tiny_model]
    return {
        "train": ["train", *m, "--data", path, "--adapter-path", out, "--no-progress"],
        "build-pairs": ["build-pairs", path, "--output-dir", out],
        "credit": ["credit", *m, "--adapter-path", out, "--pairs", path],
        "step-control": ["step-control", *m, "--solutions", path, "--output-dir", out, "--no-progress"],
        "eval": ["eval", *m, "--task", "gsm8k", "--data-files", path, "--output-dir", out],
        "sample": ["sample", *m, "--data-files", path, "--output-dir", out, "--no-progress"],
        "score": ["score", path, "--task", "gsm8k", "--output-dir", out],
    }[command]


NON_JSON_NUMBERS = {
    "nan": b"NaN",
    "infinity": b"Infinity",
    "minus_infinity": b"-Infinity",
    "overflow": b"1e400",
}


@pytest.mark.parametrize("number", list(NON_JSON_NUMBERS))
@pytest.mark.parametrize("command", list(GOOD))
def test_nan_and_infinity_are_not_json(tiny_model, tmp_path, command, number):
    """Python's json reads NaN/Infinity (and 1e400 as inf); JSON has none: a line with one is refused."""
    good = GOOD[command]
    bad = (
        json.dumps({**good, "extra": 0})
        .encode()
        .replace(b'"extra": 0', b'"extra": ' + NON_JSON_NUMBERS[number])
    )
    path = tmp_path / "in.jsonl"
    path.write_bytes(_lines(good) + bad + b"\n")
    line = _one_line_exit_2(
        _record_argv(command, path, tiny_model, tmp_path / "out"), [path], must_name=f"{path}:2"
    )
    assert "not JSON" in line or "beyond the range" in line


PROBLEM_FAULTS = [  # (task, rows, the line and field the error names)
    ("gsm8k", [PROBLEM, {"question": "Q?", "answer": None}], ":2: field 'answer'"),
    ("gsm8k", [{"question": "Q?", "answer": [2]}], ":1: field 'answer'"),
    ("gsm8k", [{"question": "Q?", "answer": True}], ":1: field 'answer'"),
    ("math", [{"problem": "Q?", "solution": ["\\boxed{1}"]}], ":1: field 'solution'"),
    ("math", [{"problem": "Q?", "answer": {"a": 1}}], ":1: field 'answer'"),
    (
        "math",
        [{"problem": "Q?", "answer": "1", "type": "A"}, {"problem": "R?", "answer": "1", "type": 5}],
        ":2: field 'type'",
    ),
    ("math", [{"problem": "Q?", "answer": "1", "unique_id": {"a": 1}}], ":1: field 'unique_id'"),
    ("math", [{"problem": "Q?", "answer": "1", "unique_id": 7}], ":1: field 'unique_id'"),
    ("math", [{"problem": "Q?", "answer": "1", "level": [1, 2]}], ":1: field 'level'"),
    ("math", [{"problem": "Q?", "answer": "1", "subject": False}], ":1: field 'subject'"),
]


@pytest.mark.parametrize("task,rows,named", PROBLEM_FAULTS)
def test_problem_fields_of_the_wrong_type(tiny_model, tmp_path, task, rows, named):
    """A gold given as a list or true would be graded as the text "[2]" or "True"; an id that is an object
    crashes sampling: each is one line before anything loads."""
    path = tmp_path / "problems.jsonl"
    path.write_bytes(_lines(*rows))
    m = ["--model", tmp_path / "no-model"]  # never reached
    _one_line_exit_2(
        ["eval", *m, "--task", task, "--data-files", path, "--output-dir", tmp_path / "e"],
        [path],
        must_name=f"{path}{named}",
    )
    _one_line_exit_2(
        ["sample", *m, "--task", task, "--data-files", path, "--output-dir", tmp_path / "s"],
        [path],
        must_name=f"{path}{named}",
    )


COMPLETION_FAULTS = [
    ([{"doc_id": 0, "response": "2", "target": None}], ":1: field 'target'"),
    ([{"doc_id": 0, "response": "2", "target": []}], ":1: field 'target'"),
    ([{"doc_id": 0, "response": "2", "target": {"v": 2}}], ":1: field 'target'"),
    ([{"doc_id": True, "response": "2", "target": "2"}], ":1: field 'doc_id'"),
    (
        [{"doc_id": 0, "response": "2", "target": "2"}, {"doc_id": 0, "response": "3", "target": "2"}],
        ":2: field 'doc_id'",
    ),  # graded twice, it would count twice
]


@pytest.mark.parametrize("rows,named", COMPLETION_FAULTS)
def test_score_completion_faults(tmp_path, rows, named):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_lines(*rows))
    _one_line_exit_2(
        ["score", path, "--task", "gsm8k", "--output-dir", tmp_path / "o"], [path], must_name=f"{path}{named}"
    )


def test_score_mixed_subject_types_do_not_crash_the_breakdown(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        _lines(
            {"doc_id": 0, "response": "\\boxed{2}", "target": "2", "subject": "Algebra"},
            {"doc_id": 1, "response": "\\boxed{2}", "target": "2", "subject": 5},
        )
    )
    res = CliRunner().invoke(
        main, ["score", str(path), "--task", "math", "--output-dir", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert "subject 5" in res.output and "subject Algebra" in res.output


PAIR_TEXT = {"prompt": "Q: 1 + 1 =", "chosen": " 2.", "rejected": " 3."}
ASSISTANT = [{"role": "assistant", "content": "2"}]
PAIR_FAULTS = {  # name: (bad line 2, what the line names); the private check feeds such files to both commands
    "lone_surrogate_prompt": (b'{"prompt": "Q \\ud800", "chosen": " 2.", "rejected": " 3."}', "surrogate"),
    "lone_surrogate_chosen": (b'{"prompt": "Q", "chosen": "\\udfff", "rejected": " 3."}', "surrogate"),
    "empty_messages": (json.dumps({"prompt": [], "chosen": [], "rejected": []}).encode(), "prompt"),
    "message_role_not_text": (
        json.dumps(
            {"prompt": [{"role": 5, "content": "x"}], "chosen": ASSISTANT, "rejected": ASSISTANT}
        ).encode(),
        "prompt",
    ),
    "message_without_content": (
        json.dumps({"prompt": [{"role": "user"}], "chosen": ASSISTANT, "rejected": ASSISTANT}).encode(),
        "prompt",
    ),
    "ids_of_lists": (
        json.dumps({**PAIR_TEXT, "prompt_ids": [1], "chosen_ids": [[2]], "rejected_ids": [3]}).encode(),
        "chosen_ids",
    ),
    "ids_negative": (
        json.dumps({**PAIR_TEXT, "prompt_ids": [1], "chosen_ids": [-1], "rejected_ids": [3]}).encode(),
        "chosen_ids",
    ),
    "ids_float": (
        json.dumps({**PAIR_TEXT, "prompt_ids": [1.0], "chosen_ids": [2], "rejected_ids": [3]}).encode(),
        "prompt_ids",
    ),
    "k_true": (json.dumps({**PAIR_TEXT, "k": True}).encode(), "'k'"),
    "source_number": (json.dumps({**PAIR_TEXT, "source": 1}).encode(), "source"),
    "bom_inside": (b"\xef\xbb\xbf" + json.dumps(PAIR_TEXT).encode(), "BOM"),
    "utf16": (json.dumps(PAIR_TEXT).encode("utf-16"), "UTF-8"),
    "cr_line_ends": (json.dumps(PAIR_TEXT).encode() + b"\r" + json.dumps(PAIR_TEXT).encode(), "invalid JSON"),
    "spaces_only": (b"   \t ", "blank"),
}


@pytest.mark.parametrize("name", list(PAIR_FAULTS))
def test_pair_faults_for_build_pairs_and_train(tiny_model, tmp_path, name):
    bad, named = PAIR_FAULTS[name]
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_lines({**PAIR_TEXT, "question": "1 + 1?"}) + bad + b"\n")
    for argv in (
        ["build-pairs", path, "--output-dir", tmp_path / "bp"],
        ["build-pairs", path, "--output-dir", tmp_path / "bpc", "--conversational"],
        ["train", "--model", tiny_model, "--data", path, "--adapter-path", tmp_path / "ad", "--no-progress"],
    ):
        line = _one_line_exit_2(argv, [path], must_name=f"{path}:2")
        assert named in line or argv[-1] == "--conversational", line  # that one may name 'question' first


def test_conversational_responses_must_be_assistant_turns(tiny_model, tmp_path):
    """A user turn as the chosen response cannot be rendered after the prompt's generation prompt."""
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        _lines(
            {
                "prompt": [{"role": "user", "content": "1 + 1?"}],
                "chosen": ASSISTANT,
                "rejected": [{"role": "user", "content": "3"}],
            }
        )
    )
    _one_line_exit_2(
        ["train", "--model", tiny_model, "--data", path, "--adapter-path", tmp_path / "ad"],
        [path],
        must_name=f"{path}:1: field 'rejected'",
    )


# ---------------------------------------------------------------- adapters: damaged configs and tensors, credit records


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A one-step training run: its adapter folder (with a checkpoint) and a function giving its argv."""
    d = tmp_path_factory.mktemp("adapters")
    pairs = d / "pairs.jsonl"
    pairs.write_bytes(_lines(*[{"prompt": f"Q{i}:", "chosen": " a", "rejected": " b"} for i in range(4)]))

    def argv(out):
        return [
            str(a)
            for a in [
                "train",
                "--model",
                tiny_model,
                "--data",
                pairs,
                "--adapter-path",
                out,
                "--iters",
                "1",
                "--num-layers",
                "1",
                "--lora-rank",
                "4",
                "--no-progress",
                "--ref-cache-dir",
                d / "ref",
            ]
        ]

    res = CliRunner().invoke(main, argv(d / "ad"))
    assert res.exit_code == 0, res.output
    return d / "ad", argv


@pytest.fixture(scope="module")
def adapters(trained):
    return trained[0]


def _lora(config, **changes):
    return {**config, "lora_parameters": {**config["lora_parameters"], **changes}}


ADAPTER_FAULTS = {
    "rank_zero": lambda c: _lora(c, rank=0),
    "rank_true": lambda c: _lora(c, rank=True),
    "rank_huge": lambda c: _lora(c, rank=2**40),
    "scale_text": lambda c: _lora(c, scale="x"),
    "scale_nan": lambda c: _lora(c, scale=float("nan")),
    "type_unknown": lambda c: {**c, "fine_tune_type": "nope"},
    "not_an_object": lambda c: [c],
    "no_lora_parameters": lambda c: {k: v for k, v in c.items() if k != "lora_parameters"},
}


@pytest.mark.parametrize("fault", list(ADAPTER_FAULTS))
def test_damaged_adapter_config(tiny_model, adapters, tmp_path, fault):
    import shutil

    bad = tmp_path / "ad"
    shutil.copytree(adapters, bad, ignore=shutil.ignore_patterns("checkpoint*"))
    config = ADAPTER_FAULTS[fault](json.loads((adapters / "adapter_config.json").read_text()))
    (bad / "adapter_config.json").write_text(json.dumps(config))  # json writes NaN as Python reads it
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(_lines({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]}))
    inputs = [bad / "adapter_config.json", bad / "adapters.safetensors", pairs]
    name = bad / "adapter_config.json"
    _one_line_exit_2(["export", "--adapter-path", bad, "--peft", tmp_path / "peft"], inputs, must_name=name)
    _one_line_exit_2(
        ["credit", "--model", tiny_model, "--adapter-path", bad, "--pairs", pairs], inputs, must_name=name
    )
    assert not (tmp_path / "peft").exists()


def test_export_refuses_tensors_that_disagree_with_the_config(adapters, tmp_path):
    """A PEFT config whose r differs from the tensors would load, silently wrong."""
    import shutil

    import mlx.core as mx

    bad = tmp_path / "ad"
    shutil.copytree(adapters, bad, ignore=shutil.ignore_patterns("checkpoint*"))
    mx.save_safetensors(
        str(bad / "adapters.safetensors"),
        {
            "model.layers.0.self_attn.q_proj.lora_a": mx.zeros((8, 2)),
            "model.layers.0.self_attn.q_proj.lora_b": mx.zeros((2, 8)),
        },
    )
    _one_line_exit_2(
        ["export", "--adapter-path", bad, "--peft", tmp_path / "peft"],
        [bad / "adapters.safetensors"],
        must_name="rank",
    )
    assert not (tmp_path / "peft").exists()


def test_credit_records_and_html_path(tiny_model, adapters, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    for bad, named in (
        ({"prompt_ids": [1], "chosen_ids": [], "rejected_ids": []}, ":1: field 'chosen_ids' is empty"),
        ({"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": []}, ":1: field 'rejected_ids'"),
    ):
        pairs.write_bytes(_lines(bad))
        _one_line_exit_2(
            ["credit", "--model", tiny_model, "--adapter-path", adapters, "--pairs", pairs],
            [pairs],
            must_name=f"{pairs}{named}",
        )
    pairs.write_bytes(_lines({"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}))
    for html in (tmp_path, tmp_path / "missing" / "x.html"):  # checked before the model loads, not after
        line = _one_line_exit_2(
            [
                "credit",
                "--model",
                tmp_path / "no-model",
                "--adapter-path",
                adapters,
                "--pairs",
                pairs,
                "--html",
                html,
            ],
            [pairs],
            must_name=html,
        )
        assert "no-model" not in line


# ---------------------------------------------------------------- step-control: solutions records

SOLUTION_FAULTS = {  # a solutions.jsonl record (usually written by `sample`) edited by hand or by another tool
    "empty_prompt_ids": ([{**SOLUTION, "prompt_ids": []}], ":1: field 'prompt_ids' is empty"),
    "empty_gold": ([{**SOLUTION, "gold": " "}], ":1: field 'gold' is empty"),
    "empty_problem_id": ([{**SOLUTION, "problem_id": ""}], ":1: field 'problem_id' is empty"),
    "unknown_block_format": (
        [{**SOLUTION, "solution_format": "code", "block_format": "nope"}],
        ":1: field 'block_format'",
    ),  # was a KeyError
    "solution_format_number": ([{**SOLUTION, "solution_format": 5}], ":1: field 'solution_format'"),
    "unknown_solution_format": ([{**SOLUTION, "solution_format": "prose"}], ":1: field 'solution_format'"),
    "unknown_task": ([{**SOLUTION, "task": "aime"}], ":1: field 'task'"),
    "problem_twice": (
        [SOLUTION, SOLUTION],
        ":2: field 'problem_id'",
    ),  # would merge two problems' continuations
    "correct_as_text": (
        [{**SOLUTION, "samples": [{"text": " 2", "ids": [4], "correct": "true"}]}],
        ":1: field 'samples'",
    ),
}


@pytest.mark.parametrize("fault", list(SOLUTION_FAULTS))
def test_step_control_solution_faults(tiny_model, tmp_path, fault):
    rows, named = SOLUTION_FAULTS[fault]
    path = tmp_path / "solutions.jsonl"
    path.write_bytes(_lines(*rows))
    _one_line_exit_2(
        [
            "step-control",
            "--model",
            tiny_model,
            "--solutions",
            path,
            "--output-dir",
            tmp_path / "out",
            "--no-progress",
        ],
        [path],
        must_name=f"{path}{named}",
    )
    assert not (tmp_path / "out" / "step_control.jsonl").exists()


# ---------------------------------------------------------------- sample: a kill between two records of a batch


def _sample_argv(tiny_model, problems, out):
    return [
        "sample",
        "--model",
        str(tiny_model),
        "--data-files",
        str(problems),
        "--output-dir",
        str(out),
        "--samples-per-round",
        "2",
        "--budget",
        "2",
        "--max-tokens",
        "6",
        "--problems-per-batch",
        "4",
        "--no-progress",
    ]


def _by_problem(path):
    return {r["problem_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_sample_rerun_after_a_half_written_batch_equals_one_run(tiny_model, tmp_path):
    """A kill while a batch's records are written leaves some of them (and a torn one): seeds depend on
    the batch, so the rerun must draw that batch again whole, not a batch of the remaining problems."""
    import shutil

    problems = tmp_path / "p.jsonl"
    problems.write_bytes(
        _lines(*[{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(8)])
    )
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert CliRunner().invoke(main, _sample_argv(tiny_model, problems, straight)).exit_code == 0
    written = (straight / "solutions.jsonl").read_bytes().splitlines(keepends=True)
    killed.mkdir()
    shutil.copy(straight / "sample_run.json", killed / "sample_run.json")
    (killed / "solutions.jsonl").write_bytes(
        b"".join(written[:2]) + written[2][:40]
    )  # 2 of batch 1, one torn
    res = CliRunner().invoke(main, _sample_argv(tiny_model, problems, killed))
    assert res.exit_code == 0, res.output
    assert _by_problem(killed / "solutions.jsonl") == _by_problem(straight / "solutions.jsonl")
    assert len((killed / "solutions.jsonl").read_text().splitlines()) == 8  # none twice
    assert (killed / "pairs_naive.jsonl").read_bytes() == (straight / "pairs_naive.jsonl").read_bytes()


@pytest.mark.slow
def test_sample_killed_at_random_moments_then_rerun_equals_one_run(tiny_model, tmp_path):
    import random
    import subprocess
    import sys
    import time

    problems = tmp_path / "p.jsonl"
    problems.write_bytes(
        _lines(*[{"question": f"What is {i} * 3?", "answer": f"#### {3 * i}"} for i in range(24)])
    )
    argv = lambda out: [sys.executable, "-m", "mlx_scdpo.cli", *_sample_argv(tiny_model, problems, out)]  # noqa: E731
    subprocess.run(argv(tmp_path / "straight"), check=True, capture_output=True, timeout=600)
    out, rng = tmp_path / "killed", random.Random(13)
    for _ in range(3):  # kill at a random moment after some progress, three times over
        proc = subprocess.Popen(argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 8.0))
        proc.kill()
        proc.wait()
    subprocess.run(argv(out), check=True, capture_output=True, timeout=600)
    assert _by_problem(out / "solutions.jsonl") == _by_problem(tmp_path / "straight" / "solutions.jsonl")
    assert len((out / "solutions.jsonl").read_text().splitlines()) == 24


# ---------------------------------------------------------------- two runs on one folder


def _hold(folder):
    import subprocess
    import sys

    code = (
        "import sys, time; from mlx_scdpo.run_state import folder_lock\n"
        "with folder_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", ["sample", "step-control", "eval", "train", "build-pairs", "quickstart"])
def test_a_second_run_on_a_held_folder_stops_with_one_line(tiny_model, files, tmp_path, command):
    out = tmp_path / "out"
    holder = _hold(out)
    try:
        argv = _outputs_at(out, tiny_model, files)[command]
        _one_line_exit_2(argv, list(files.values()), must_name=f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "solutions.jsonl").exists() and not (out / "step_control.jsonl").exists()


# ---------------------------------------------------------------- step-control: killed between two outcomes


def _step_control_case(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    records = []
    for i in range(6):
        text = (
            f"Step 1: {i} + {i} = {2 * i}\nStep 2: so it is {2 * i}\nStep 3: check {2 * i}\nThe answer is "
            f"\\boxed{{{2 * i}}}."
        )
        records.append(
            {
                **SOLUTION,
                "problem_id": f"p/{i}",
                "gold": str(2 * i),
                "prompt_ids": tok.encode(f"Q{i}: compute.\n", add_special_tokens=False),
                "samples": [
                    {"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}
                ],
            }
        )
    solutions = tmp_path / "solutions.jsonl"
    solutions.write_bytes(_lines(*records))
    return lambda out: [
        "step-control",
        "--model",
        str(tiny_model),
        "--solutions",
        str(solutions),
        "--output-dir",
        str(out),
        "--rounds",
        "4",
        "--max-tokens",
        "3",
        "--max-pairs-per-problem",
        "9",
        "--include-truncated",
        "--no-progress",
    ]


def test_step_control_rerun_after_a_kill_between_outcomes_equals_one_run(tiny_model, tmp_path):
    """Outcomes are appended as prefixes finish, over rounds. A rerun continues the rest in other
    batches: each continuation's draw must not depend on its batch (nor on a shared, split-per-call
    key), or the rerun's pairs differ from one run's."""
    import shutil

    argv = _step_control_case(tiny_model, tmp_path)
    straight = tmp_path / "straight"
    res = CliRunner().invoke(main, argv(straight))
    assert res.exit_code == 0, res.output
    rows = (straight / "step_control.jsonl").read_bytes().splitlines(keepends=True)
    assert len({json.loads(r)["round"] for r in rows}) > 1  # outcomes from more than one round
    for cut in (1, len(rows) - 1):
        out = tmp_path / f"killed{cut}"
        out.mkdir()
        shutil.copy(straight / "step_control_run.json", out / "step_control_run.json")
        (out / "step_control.jsonl").write_bytes(b"".join(rows[:cut]) + rows[cut][:25])  # and a torn line
        res = CliRunner().invoke(main, argv(out))
        assert res.exit_code == 0, res.output
        for name in ("step_control.jsonl", "pairs_step_control.jsonl"):
            assert sorted((out / name).read_bytes().splitlines()) == sorted(
                (straight / name).read_bytes().splitlines()
            )


# ---------------------------------------------------------------- the project's own state files, tampered with


@pytest.mark.parametrize(
    "change",
    [{"step": -3}, {"batch": "x"}, {"epoch": -1}, {"step": True}, None],
    ids=["step_negative", "batch_text", "epoch_negative", "step_true", "not_an_object"],
)
def test_resume_from_a_tampered_checkpoint_state(trained, tmp_path, change):
    import shutil

    ad, argv = trained
    out = tmp_path / "ad"
    shutil.copytree(ad, out)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    (out / "checkpoint" / "state.json").write_text(
        json.dumps([state] if change is None else {**state, **change})
    )
    _one_line_exit_2(argv(out) + ["--resume"], must_name="no complete checkpoint")


def test_tampered_run_identity_and_lock_files(tiny_model, files, tmp_path):
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        tiny_model,
        "--task",
        "gsm8k",
        "--data-files",
        files["problems"],
        "--output-dir",
        out,
        "--max-tokens",
        "2",
    ]
    assert CliRunner().invoke(main, [str(a) for a in argv]).exit_code == 0
    (out / "generations_gsm8k.meta.json").write_text("[]")
    _one_line_exit_2(argv, list(files.values()), must_name="generations_gsm8k.meta.json")
    (out / "generations_gsm8k.meta.json").unlink()
    (out / ".mlx-scdpo.lock").unlink()
    (out / ".mlx-scdpo.lock").mkdir()
    _one_line_exit_2(argv, list(files.values()), must_name=".mlx-scdpo.lock")


def test_a_damaged_parquet_is_one_line_without_log_lines(tiny_model, tmp_path):
    """In a process of its own: the datasets library logs to the stderr it found at import."""
    import subprocess
    import sys

    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1garbagegarbagePAR1")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_scdpo.cli",
            "eval",
            "--model",
            str(tiny_model),
            "--task",
            "gsm8k",
            "--data-files",
            str(bad),
            "--output-dir",
            str(tmp_path / "e"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and str(bad) in res.stderr, res.stderr


def test_build_pairs_refuses_one_file_given_twice(files, tmp_path):
    os.symlink(files["pairs"], tmp_path / "again.jsonl")
    for second in (files["pairs"], tmp_path / "again.jsonl"):
        _one_line_exit_2(
            ["build-pairs", files["pairs"], second, "--output-dir", tmp_path / "out"],
            [files["pairs"]],
            must_name="given twice",
        )
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_export_leaves_no_half_written_file(adapters, tmp_path):
    res = CliRunner().invoke(
        main, ["export", "--adapter-path", str(adapters), "--peft", str(tmp_path / "peft")]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "peft").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


# ---------------------------------------------------------------- kill -9 at random moments (slow)


def _kill_at_random_moments(argv, out, progress, times=3, seed=13):
    """Start ``argv`` and SIGKILL it once ``progress(out)`` is true plus a random delay, ``times`` times."""
    import random
    import subprocess
    import time

    rng = random.Random(seed)
    for _ in range(times):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not progress(out):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_step_control_killed_at_random_moments_then_rerun_equals_one_run(tiny_model, tmp_path):
    import subprocess
    import sys

    argv = _step_control_case(tiny_model, tmp_path)
    cli = [sys.executable, "-m", "mlx_scdpo.cli"]
    subprocess.run(cli + argv(tmp_path / "straight"), check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed"
    _kill_at_random_moments(cli + argv(out), out, lambda o: (o / "step_control.jsonl").exists())
    subprocess.run(cli + argv(out), check=True, capture_output=True, timeout=600)
    for name in ("step_control.jsonl", "pairs_step_control.jsonl"):
        got = sorted((out / name).read_bytes().splitlines())
        assert got == sorted((tmp_path / "straight" / name).read_bytes().splitlines()), name


@pytest.mark.slow
def test_train_killed_at_random_moments_then_resumed_equals_one_run(tiny_model, tmp_path):
    import subprocess
    import sys

    import mlx.core as mx
    import numpy as np

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(
        _lines(
            *[
                {
                    "prompt": f"Question: {i} + 2 = ?\nAnswer:",
                    "chosen": f" {i + 2}.",
                    "rejected": f" {i + 5}.",
                }
                for i in range(12)
            ]
        )
    )

    def argv(out):
        return [
            sys.executable,
            "-m",
            "mlx_scdpo.cli",
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(pairs),
            "--adapter-path",
            str(out),
            "--batch-size",
            "2",
            "--learning-rate",
            "1e-3",
            "--num-layers",
            "2",
            "--lora-rank",
            "4",
            "--steps-per-report",
            "1",
            "--warmup-ratio",
            "0",
            "--iters",
            "12",
            "--save-every",
            "2",
            "--ref-cache-dir",
            str(tmp_path / "ref"),
            "--no-progress",
        ]

    subprocess.run(argv(tmp_path / "straight"), check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed"
    subprocess.run(argv(out)[:-1] + ["--stop-after", "1", "--no-progress"], check=True, capture_output=True)
    _kill_at_random_moments(argv(out) + ["--resume"], out, lambda o: (o / "checkpoint").exists())
    subprocess.run(argv(out) + ["--resume"], check=True, capture_output=True, timeout=600)
    a, b = (mx.load(str(d / "adapters.safetensors")) for d in (tmp_path / "straight", out))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), atol=1e-6)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # each step logged once


@pytest.mark.parametrize(
    "command,name",
    [
        ("eval", "generations_gsm8k.jsonl"),
        ("sample", "solutions.jsonl"),
        ("sample", "pairs_naive.jsonl"),
        ("step-control", "step_control.jsonl"),
        ("step-control", "pairs_step_control.jsonl"),
        ("train", "metrics.jsonl"),
    ],
)
def test_an_input_named_as_an_output_of_its_folder_is_never_written(tiny_model, tmp_path, command, name):
    """A problems file called solutions.jsonl in the output folder would be read as the run's own log
    (its lines without problem_id moved aside); a pairs file called metrics.jsonl deleted by a fresh
    training start. Refused instead, the file untouched."""
    out = tmp_path / "out"
    out.mkdir()
    path = out / name
    rows = {"eval": PROBLEM, "sample": PROBLEM, "step-control": SOLUTION, "train": PAIR}[command]
    path.write_bytes(_lines(rows))
    m = ["--model", tiny_model]
    argv = {
        "eval": ["eval", *m, "--task", "gsm8k", "--data-files", path, "--output-dir", out],
        "sample": ["sample", *m, "--data-files", path, "--output-dir", out, "--no-progress"],
        "step-control": ["step-control", *m, "--solutions", path, "--output-dir", out, "--no-progress"],
        "train": ["train", *m, "--data", path, "--adapter-path", out, "--no-progress"],
    }[command]
    _one_line_exit_2(argv, [path], must_name="is also an output")
    assert sorted(p.name for p in out.iterdir()) == [name]
