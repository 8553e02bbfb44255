"""`mlx-scdpo eval` end to end on the tiny fixture model, and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import shared_data

from mlx_scdpo.cli import main


def _problems(tmp_path, n=12):
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(n)
    ]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _doc_ids(path):
    return [json.loads(line)["doc_id"] for line in path.read_text().splitlines()]


def test_eval_end_to_end_and_rerun_skips_finished(tiny_model, tmp_path):
    data = _problems(tmp_path)
    args = [
        "eval",
        "--model",
        str(tiny_model),
        "--task",
        "gsm8k",
        "--data-files",
        str(data),
        "--max-tokens",
        "12",
        "--batch-size",
        "4",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    gens = tmp_path / "out" / "generations_gsm8k.jsonl"
    assert sorted(_doc_ids(gens)) == list(range(12))
    results = json.loads(next((tmp_path / "out").glob("results_*.json")).read_text())
    assert results["config"]["chat_template"] is True and len(results["config"]["prompt_hash"]) == 16
    assert results["n-samples"]["gsm8k"]["effective"] == 12
    row = json.loads(gens.read_text().splitlines()[0])
    assert row["prompt"].startswith("<|im_start|>user\n") and "\\boxed{}" in row["prompt"]
    assert 0 < row["num_tokens"] <= 12
    # Same command again: nothing regenerated.
    before = gens.read_text()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and gens.read_text() == before
    # A different run in the same folder is refused with one line.
    res = CliRunner().invoke(main, args[:-2] + ["--output-dir", str(tmp_path / "out"), "--no-chat-template"])
    assert res.exit_code == 2 and "holds a different run" in res.output


def test_eval_base_model_fewshot_prompt(tiny_model, tmp_path):
    data = _problems(tmp_path, 2)
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "--model",
            str(tiny_model),
            "--task",
            "gsm8k",
            "--data-files",
            str(data),
            "--max-tokens",
            "4",
            "--no-chat-template",
            "--num-shots",
            "2",
            "--output-dir",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    prompt = json.loads((tmp_path / "o" / "generations_gsm8k.jsonl").read_text().splitlines()[0])["prompt"]
    assert prompt.count("Question:") == 3 and prompt.endswith("Answer:")


def test_eval_missing_model_and_adapter_exit_2(tmp_path):
    data = _problems(tmp_path, 1)
    res = CliRunner().invoke(
        main, ["eval", "--model", str(tmp_path / "nope"), "--task", "gsm8k", "--data-files", str(data)]
    )
    assert res.exit_code == 2 and "no such model folder" in res.output


@pytest.mark.slow
def test_eval_resume_after_kill(tiny_model, tmp_path):
    data = shared_data("gsm8k_test.jsonl")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "mlx_scdpo.cli",
        "eval",
        "--model",
        str(tiny_model),
        "--task",
        "gsm8k",
        "--data-files",
        str(data),
        "--limit",
        "40",
        "--max-tokens",
        "24",
        "--batch-size",
        "4",
        "--output-dir",
        str(out),
    ]
    gens = out / "generations_gsm8k.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not gens.exists() or len(gens.read_text().splitlines()) < 5):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _doc_ids(gens) if gens.read_text().endswith("\n") else _doc_ids(gens)[:-1]
    assert 5 <= len(partial) < 40
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = _doc_ids(gens)
    assert sorted(ids) == list(range(40))  # no duplicate, none missing
    assert ids[: len(partial)] == partial  # finished rows were kept, not regenerated


def test_eval_code_format_records_executions(tiny_model, tmp_path):
    data = _problems(tmp_path, 3)
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "--model",
            str(tiny_model),
            "--task",
            "gsm8k",
            "--data-files",
            str(data),
            "--max-tokens",
            "8",
            "--format",
            "code",
            "--output-dir",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "o" / "generations_gsm8k.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["executions"] == 0 for r in rows)
    assert "integrate natural language reasoning with programs" in rows[0]["prompt"]
    results = json.loads(next((tmp_path / "o").glob("results_*.json")).read_text())
    assert results["config"]["solution_format"] == "code" and results["config"]["block_format"] == "markdown"
