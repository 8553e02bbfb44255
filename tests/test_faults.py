"""Real faults: bad inputs (one line, exit 2, input untouched), damaged logs, bad options, locks."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main
from mlx_scdpo.jsonl import read_finished

PAIR = {"prompt": "Q: 1 + 1 =", "chosen": " 2.", "rejected": " 3.", "source": "naive"}
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


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lines(*rows):
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _bad_files(good: dict, bad_field: tuple[str, object]):
    """(name, bytes) of each class of damaged input, built around one good record."""
    field, value = bad_field
    ok = _lines(good)
    return [
        ("non_utf8", ok + b'{"prompt": "\xff\xfe"}\n'),
        ("scalar_line", ok + b"42\n"),
        ("null_line", ok + b"null\n"),
        ("list_line", ok + b"[1, 2]\n"),
        ("blank_line", ok + b"\n" + ok),
        ("invalid_json", ok + b'{"prompt": \n'),
        ("torn_last_line", ok + b'{"prompt": "Q'),
        ("wrong_type", ok + _lines({**good, field: value})),
        ("missing_field", ok + _lines({k: v for k, v in good.items() if k != next(iter(good))})),
        ("utf8_bom", b"\xef\xbb\xbf" + ok),
        ("deep_nesting", ok + b"[" * 100_000 + b"]" * 100_000 + b"\n"),
        ("empty", b""),
    ]


def _check_one_line_exit_2(res, path, before):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    assert _digest(path) == before  # the input is never modified


def _commands(tiny_model, tmp_path, path):
    out = str(tmp_path / "out")
    return {
        "train": [
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(path),
            "--adapter-path",
            out,
            "--no-progress",
        ],
        "build-pairs": ["build-pairs", str(path), "--output-dir", out],
        "credit": ["credit", "--model", str(tiny_model), "--adapter-path", out, "--pairs", str(path)],
        "step-control": [
            "step-control",
            "--model",
            str(tiny_model),
            "--solutions",
            str(path),
            "--output-dir",
            out,
            "--no-progress",
        ],
        "eval": [
            "eval",
            "--model",
            str(tiny_model),
            "--task",
            "gsm8k",
            "--data-files",
            str(path),
            "--output-dir",
            out,
        ],
        "sample": [
            "sample",
            "--model",
            str(tiny_model),
            "--data-files",
            str(path),
            "--output-dir",
            out,
            "--no-progress",
        ],
        "score": ["score", str(path), "--task", "gsm8k", "--output-dir", out],
    }


CASES = {  # command: (good record, a field with a wrong type)
    "train": ({**PAIR, "prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}, ("chosen_ids", "abc")),
    "build-pairs": (PAIR, ("chosen", 5)),
    "credit": ({"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}, ("chosen_ids", "abc")),
    "step-control": (SOLUTION, ("samples", "none")),
    "eval": (PROBLEM, ("question", 7)),
    "sample": (PROBLEM, ("question", None)),
    "score": ({"doc_id": 0, "response": "2", "target": "2"}, ("doc_id", "x")),
}


@pytest.mark.parametrize("command", list(CASES))
def test_bad_input_table(tiny_model, tmp_path, command):
    good, bad_field = CASES[command]
    for name, data in _bad_files(good, bad_field):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(data)
        before = _digest(path)
        res = CliRunner().invoke(main, _commands(tiny_model, tmp_path, path)[command])
        _check_one_line_exit_2(res, path, before)
        if name != "empty":
            assert f"{path}:" in res.stderr, (name, res.stderr)  # file:line
    assert not (tmp_path / "out" / "generations_gsm8k.jsonl").exists()


def test_missing_final_newline_keeps_the_last_record(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_bytes(
        _lines(*[{**PAIR, "prompt": f"Q{i}"} for i in range(5)])
        + json.dumps({**PAIR, "prompt": "Q5"}).encode()
    )
    before = _digest(src)
    res = CliRunner().invoke(
        main, ["build-pairs", str(src), "--output-dir", str(tmp_path / "out"), "--valid-fraction", "0"]
    )
    assert res.exit_code == 0, res.output
    assert _digest(src) == before
    rows = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["prompt"] for r in rows) == [f"Q{i}" for i in range(6)]


BAD_OPTIONS = [
    ["train", "--data", "{pairs}", "--batch-size", "0"],
    ["train", "--data", "{pairs}", "--save-every", "0"],
    ["train", "--data", "{pairs}", "--steps-per-report", "0"],
    ["train", "--data", "{pairs}", "--iters", "-1"],
    ["train", "--data", "{pairs}", "--lora-rank", "0"],
    ["train", "--data", "{pairs}", "--grad-accumulation-steps", "0"],
    ["train", "--data", "{pairs}", "--epochs", "0"],
    ["train", "--data", "{pairs}", "--num-layers", "0"],
    ["train", "--data", "{pairs}", "--learning-rate", "nan"],
    ["train", "--data", "{pairs}", "--loss-type", "nope"],
    ["train", "--data", "{pairs}", "--max-prompt-length", "2048"],
    ["eval", "--task", "gsm8k", "--data-files", "{problems}", "--max-tokens", "0"],
    ["eval", "--task", "gsm8k", "--data-files", "{problems}", "--batch-size", "0"],
    ["eval", "--task", "gsm8k", "--data-files", "{problems}", "--limit", "0"],
    ["sample", "--data-files", "{problems}", "--output-dir", "{out}", "--samples-per-round", "0"],
    ["sample", "--data-files", "{problems}", "--output-dir", "{out}", "--batch-size", "0"],
    ["sample", "--data-files", "{problems}", "--output-dir", "{out}", "--max-tokens", "0"],
    ["step-control", "--solutions", "{solutions}", "--output-dir", "{out}", "--tmax", "-1"],
    ["step-control", "--solutions", "{solutions}", "--output-dir", "{out}", "--max-pairs-per-problem", "0"],
    ["build-pairs", "{pairs}", "--output-dir", "{out}", "--valid-fraction", "1"],
    ["build-pairs", "{pairs}", "--output-dir", "{out}", "--valid-fraction", "1.5"],
    ["build-pairs", "{pairs}", "--output-dir", "{out}", "--max-naive", "-1"],
    ["credit", "--adapter-path", "{out}", "--pairs", "{pairs}", "--limit", "0"],
]


@pytest.mark.parametrize("argv", BAD_OPTIONS, ids=lambda a: "_".join(a[:1] + a[-2:]))
def test_bad_options_stop_before_the_model_loads(tmp_path, argv):
    files = {
        "pairs": tmp_path / "pairs.jsonl",
        "problems": tmp_path / "problems.jsonl",
        "solutions": tmp_path / "solutions.jsonl",
    }
    files["pairs"].write_bytes(_lines(PAIR, PAIR))
    files["problems"].write_bytes(_lines(PROBLEM))
    files["solutions"].write_bytes(_lines(SOLUTION))
    names = {k: str(v) for k, v in files.items()} | {"out": str(tmp_path / "out")}
    argv = [a.format(**names) for a in argv]
    model = ["--model", str(tmp_path / "no-model")]  # never reached: the option is refused first
    if argv[0] != "build-pairs":
        argv = argv[:1] + model + argv[1:]
    before = {k: _digest(v) for k, v in files.items()}
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "no-model" not in res.stderr, res.stderr
    assert {k: _digest(v) for k, v in files.items()} == before


def test_yaml_values_are_typed_like_mlx_lm_and_checked(tmp_path):
    from mlx_scdpo.config import build_args
    from mlx_scdpo.training.train import TrainArgs

    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 1e-5\nbatch_size: 4\nlora_scale: 10\n")
    args = build_args(TrainArgs, {"model": "m", "data": "d"}, str(cfg))
    assert args.learning_rate == 1e-5 and isinstance(args.learning_rate, float) and args.batch_size == 4
    for text in (
        "batch_size: 0\n",
        "batch_size: abc\n",
        "batch_size: 2.5\n",
        "learning_rate: -1\n",
        "loss_type: nope\n",
        "grad_checkpoint: 3\n",
        "lora_keys: 5\n",
        "nonsense: 1\n",
        "a: [\n",
    ):
        cfg.write_text(text)
        res = CliRunner().invoke(
            main, ["train", "-c", str(cfg), "--model", str(tmp_path / "m"), "--data", "d"]
        )
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, (text, res.output)
        assert str(cfg) in res.stderr


def test_option_table_matches_the_modules():
    from eval.blocks import FORMATS
    from mlx_scdpo.config import OPTION_TYPES
    from mlx_scdpo.training.dpo import LOSS_TYPES

    assert tuple(OPTION_TYPES["loss_type"].choices) == LOSS_TYPES
    assert tuple(OPTION_TYPES["block_format"].choices) == tuple(FORMATS)


# ---------------------------------------------------------------- the project's own append logs


def test_read_finished_moves_damaged_lines_aside_and_keeps_the_rest(tmp_path):
    log = tmp_path / "generations_gsm8k.jsonl"
    good = [{"doc_id": i, "response": "x"} for i in range(4)]
    log.write_bytes(
        _lines(good[0], good[1])
        + b'{"doc_id": 9, "resp\n'
        + _lines(good[2])
        + b"\xff\n"
        + json.dumps(good[3]).encode()
        + b'\n{"doc_id": 5, "res'
    )
    rows = read_finished(log, "doc_id")
    assert list(rows) == [0, 1, 2, 3]  # valid lines after a damaged one are kept
    assert log.read_bytes() == _lines(*good)
    side = (tmp_path / "generations_gsm8k.jsonl.damaged").read_bytes()
    assert side == b'{"doc_id": 9, "resp\n\xff\n{"doc_id": 5, "res\n'  # moved aside, not lost
    # A complete last record that only lacks its newline is kept, and the newline added.
    log.write_bytes(_lines(good[0]) + json.dumps(good[1]).encode())
    assert list(read_finished(log, "doc_id")) == [0, 1] and log.read_bytes() == _lines(good[0], good[1])


# ---------------------------------------------------------------- one run per folder


def _hold_lock(folder):
    code = (
        "import sys, time; from mlx_scdpo.run_state import folder_lock\n"
        "with folder_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_lock_stops_a_second_run_and_a_dead_one_does_not(tiny_model, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_bytes(_lines(PROBLEM))
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        str(tiny_model),
        "--task",
        "gsm8k",
        "--data-files",
        str(problems),
        "--output-dir",
        str(out),
        "--max-tokens",
        "2",
    ]
    holder = _hold_lock(out)
    try:
        res = CliRunner().invoke(main, argv)
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
        assert f"pid {holder.pid}" in res.stderr and "'holder'" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    res = CliRunner().invoke(main, argv)  # the holder died (kill -9): its lock is gone with it
    assert res.exit_code == 0, res.output


def test_eval_limit_may_grow_and_golds_are_regraded(tiny_model, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_bytes(_lines(*[{"question": f"What is {i}?", "answer": f"#### {i}"} for i in range(4)]))
    out = tmp_path / "out"
    base = [
        "eval",
        "--model",
        str(tiny_model),
        "--task",
        "gsm8k",
        "--data-files",
        str(problems),
        "--output-dir",
        str(out),
        "--max-tokens",
        "3",
        "--batch-size",
        "2",
    ]
    assert CliRunner().invoke(main, base + ["--limit", "2"]).exit_code == 0
    gens = out / "generations_gsm8k.jsonl"
    first = gens.read_text()
    res = CliRunner().invoke(main, base + ["--limit", "4"])
    assert res.exit_code == 0, res.output
    assert gens.read_text().startswith(first) and len(gens.read_text().splitlines()) == 4
    # Golds changed in the data file: the same generations are graded against the new golds.
    problems.write_bytes(_lines(*[{"question": f"What is {i}?", "answer": "#### 999"} for i in range(4)]))
    res = CliRunner().invoke(main, base + ["--limit", "4"])
    assert res.exit_code == 0, res.output
    newest = max(out.glob("samples_*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
    samples = [json.loads(x) for x in newest.read_text().splitlines()]
    assert [s["target"] for s in samples] == ["999"] * 4
    # A changed question is a different run: refused with one line.
    problems.write_bytes(_lines(*[{"question": f"What is {i} + 1?", "answer": "#### 9"} for i in range(4)]))
    res = CliRunner().invoke(main, base + ["--limit", "4"])
    assert res.exit_code == 2 and "another prompt" in res.stderr


def test_sample_in_a_folder_of_another_run_is_refused(tiny_model, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_bytes(_lines(PROBLEM))
    base = [
        "sample",
        "--model",
        str(tiny_model),
        "--data-files",
        str(problems),
        "--output-dir",
        str(tmp_path / "o"),
        "--samples-per-round",
        "1",
        "--budget",
        "1",
        "--max-tokens",
        "3",
        "--no-progress",
    ]
    assert CliRunner().invoke(main, base).exit_code == 0
    before = _digest(tmp_path / "o" / "solutions.jsonl")
    res = CliRunner().invoke(main, base + ["--temperature", "0.5"])
    assert res.exit_code == 2 and "temperature" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert _digest(tmp_path / "o" / "solutions.jsonl") == before


# ---------------------------------------------------------------- build-pairs: both splits replaced together


def _build(src, out, env=None, check=True):
    cmd = [
        sys.executable,
        "-m",
        "mlx_scdpo.cli",
        "build-pairs",
        str(src),
        "--output-dir",
        str(out),
        "--valid-fraction",
        "0.25",
        "--seed",
        "3",
    ]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=check)


def test_build_pairs_killed_between_renames_never_mixes_splits(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_bytes(_lines(*[{**PAIR, "prompt": f"Q{i}"} for i in range(40)]))
    _build(src, tmp_path / "straight")
    out = tmp_path / "killed"
    _build(src, out)  # an earlier run, then a new one with another seed killed between the two renames
    old = {n: (out / n).read_bytes() for n in ("train.jsonl", "valid.jsonl")}
    cmd = [
        sys.executable,
        "-m",
        "mlx_scdpo.cli",
        "build-pairs",
        str(src),
        "--output-dir",
        str(out),
        "--seed",
        "4",
    ]
    res = subprocess.run(
        cmd, env={**os.environ, "MLX_SCDPO_KILL_AT": "build-pairs-swap"}, capture_output=True
    )
    assert res.returncode == -9
    # A reader refuses the half-replaced folder (it never repairs an input) ...
    res = CliRunner().invoke(main, ["train", "--model", str(tmp_path / "m"), "--data", str(out)])
    assert res.exit_code == 2 and "interrupted" in res.stderr
    # ... and the rerun finishes the swap, then writes what an uninterrupted run writes.
    assert (out / "train.jsonl").read_bytes() != old[
        "train.jsonl"
    ]  # the new train.jsonl was already in place
    _build(src, out)
    for name in ("train.jsonl", "valid.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert not list(out.glob(".*.new")) and not (out / ".pairs-swap.json").exists()


def test_two_concurrent_build_pairs_one_proceeds(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_bytes(_lines(*[{**PAIR, "prompt": f"Q{i}"} for i in range(10)]))
    holder = _hold_lock(tmp_path / "out")
    try:
        res = _build(src, tmp_path / "out", check=False)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "in use by" in res.stderr
    assert _build(src, tmp_path / "out").returncode == 0


# ---------------------------------------------------------------- eval: kill -9, rerun, same outputs


@pytest.mark.slow
def test_eval_killed_then_rerun_equals_an_uninterrupted_run(tiny_model, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_bytes(
        _lines(*[{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(24)])
    )

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "mlx_scdpo.cli",
            "eval",
            "--model",
            str(tiny_model),
            "--task",
            "gsm8k",
            "--data-files",
            str(problems),
            "--max-tokens",
            "16",
            "--batch-size",
            "4",
            "--output-dir",
            str(out),
        ]

    subprocess.run(cmd(tmp_path / "straight"), check=True, capture_output=True)
    out = tmp_path / "killed"
    gens = out / "generations_gsm8k.jsonl"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not gens.exists() or gens.read_bytes().count(b"\n") < 3):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    done_before = gens.read_bytes().count(b"\n")
    assert 3 <= done_before < 24
    subprocess.run(cmd(out), check=True, capture_output=True)

    def by_id(path):
        return {r["doc_id"]: r for r in map(json.loads, path.read_text().splitlines())}

    a, b = by_id(tmp_path / "straight" / "generations_gsm8k.jsonl"), by_id(gens)
    assert (
        sorted(b) == list(range(24)) and len(gens.read_text().splitlines()) == 24
    )  # none twice, none missing
    assert a == b
    newest = lambda d: max(d.glob("samples_*.jsonl"), key=lambda p: p.stat().st_mtime_ns)  # noqa: E731
    assert newest(out).read_text() == newest(tmp_path / "straight").read_text()


def test_step_control_refuses_no_correct_solutions_and_another_solutions_file(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    none_correct = tmp_path / "none.jsonl"
    none_correct.write_bytes(_lines({**SOLUTION, "samples": [{"text": " 3", "ids": [5], "correct": False}]}))
    out = tmp_path / "out"
    base = [
        "step-control",
        "--model",
        str(tiny_model),
        "--output-dir",
        str(out),
        "--rounds",
        "1",
        "--max-tokens",
        "4",
        "--no-progress",
    ]
    res = CliRunner().invoke(main, base + ["--solutions", str(none_correct)])
    assert (
        res.exit_code == 2
        and "no correct solution" in res.stderr
        and len(res.stderr.strip().splitlines()) == 1
    )
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_bytes(_lines({**SOLUTION, "prompt_ids": [1, 10_000_000]}))
    res = CliRunner().invoke(main, base + ["--solutions", str(foreign)])
    assert res.exit_code == 2 and f"{foreign}:1: token id 10000000" in res.stderr, res.output
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    text = "Step 1: 2 * 3 = 6\nStep 2: 6 + 1 = 7\nThe answer is \\boxed{7}."
    record = {
        **SOLUTION,
        "gold": "7",
        "prompt_ids": tok.encode("Q: compute.\n", add_special_tokens=False),
        "samples": [{"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}],
    }
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(_lines(record))
    second.write_bytes(_lines({**record, "problem_id": "p/1"}))
    res = CliRunner().invoke(main, base + ["--solutions", str(first)])
    assert res.exit_code == 0, res.output
    outcomes = (out / "step_control.jsonl").read_bytes()
    res = CliRunner().invoke(main, base + ["--solutions", str(second)])
    assert res.exit_code == 2 and "solutions" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (out / "step_control.jsonl").read_bytes() == outcomes
