"""`mlx-scdpo score` / `python -m eval score`: reports and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_gsm8k_writes_lm_eval_shaped_reports(tmp_path):
    comp = _write(
        tmp_path / "c.jsonl",
        [
            {"doc_id": 0, "response": "3 + 4 = 7\n#### 7", "target": "7"},
            {"doc_id": 1, "response": "The answer is 9.", "target": "9"},
            {"doc_id": 2, "response": "#### 5", "target": "6"},
            {"doc_id": 3, "response": "so \\boxed{1,000} for 4 kids", "target": "1000"},
        ],
    )
    res = CliRunner().invoke(
        main, ["score", str(comp), "--task", "gsm8k", "--output-dir", str(tmp_path / "out")]
    )
    assert res.exit_code == 0, res.output
    results = json.loads(next((tmp_path / "out").glob("results_*.json")).read_text())
    metrics = results["results"]["gsm8k"]
    # This package's grading has its own name; lm-eval's names hold lm-eval's procedures:
    # strict-match needs "#### N"; flexible-extract takes the last number-like run, and
    # in doc 3 that is the "4" after the box.
    assert metrics["exact_match,scdpo-grader"] == pytest.approx(0.75)
    assert metrics["exact_match,strict-match"] == pytest.approx(0.25)
    assert metrics["exact_match,flexible-extract"] == pytest.approx(0.5)
    # lm-eval's mean_stderr: sqrt(var_{n-1} / n) = sqrt(0.25 / 4) for [1,1,0,1].
    assert metrics["exact_match_stderr,scdpo-grader"] == pytest.approx(0.25)
    assert results["n-samples"]["gsm8k"]["effective"] == 4
    assert "sympy" in results["versions"]
    samples = [
        json.loads(x) for x in next((tmp_path / "out").glob("samples_gsm8k_*.jsonl")).read_text().splitlines()
    ]
    assert [s["doc_id"] for s in samples] == [0, 1, 2, 3]
    assert samples[2]["correct"] is False
    assert set(samples[0]) >= {"doc_id", "prompt", "response", "extracted", "target", "correct", "lm_eval"}
    assert samples[3]["lm_eval"]["flexible-extract"] == {"filtered": "4", "exact_match": False}
    assert samples[1]["lm_eval"]["flexible-extract"] == {"filtered": "9.", "exact_match": True}
    assert samples[1]["lm_eval"]["strict-match"] == {"filtered": "[invalid]", "exact_match": False}


def test_score_math_breakdown_with_gold_from_dataset(tmp_path):
    data = _write(
        tmp_path / "math.jsonl",
        [
            {"problem": "p0", "solution": "so \\boxed{\\frac12}", "type": "Algebra", "level": "Level 1"},
            {"problem": "p1", "solution": "\\boxed{(1,2]}", "type": "Algebra", "level": "Level 3"},
            {"problem": "p2", "solution": "\\boxed{5}", "type": "Geometry", "level": "Level 3"},
        ],
    )
    comp = _write(
        tmp_path / "c.jsonl",
        [
            {"doc_id": 0, "response": "\\boxed{0.5}"},
            {"doc_id": 1, "response": "\\boxed{(1,2)}"},
            {"doc_id": 2, "response": "Final Answer: The final answer is $5$. I hope it is correct."},
        ],
    )
    res = CliRunner().invoke(main, ["score", str(comp), "--task", "math", "--data-files", str(data)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(next(tmp_path.glob("results_*.json")).read_text())["results"]["math"]
    assert metrics["breakdown"]["subject"] == {
        "Algebra": {"exact_match": 0.5, "n": 2},
        "Geometry": {"exact_match": 1.0, "n": 1},
    }
    assert metrics["breakdown"]["level"]["3"] == {"exact_match": 0.5, "n": 2}


@pytest.mark.parametrize(
    "content,expected",
    [
        ('{"doc_id": 0, "response": "1", "target": "1"}\n{"doc_id": 1, "resp', "c.jsonl:2: invalid JSON"),
        ('{"doc_id": 0, "target": "1"}\n', "c.jsonl:1: field 'response/completion/output/text' is missing"),
        ('{"response": "1", "target": "1"}\n', "c.jsonl:1: field 'doc_id' is missing"),
        ("", "c.jsonl: file is empty"),
        ("[1, 2]\n", "c.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_completions_give_one_line_and_exit_2(tmp_path, content, expected):
    comp = tmp_path / "c.jsonl"
    comp.write_text(content)
    res = CliRunner().invoke(
        main, ["score", str(comp), "--task", "gsm8k", "--output-dir", str(tmp_path / "o")]
    )
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing half-written


def test_bad_dataset_row_names_line_and_field(tmp_path):
    data = _write(tmp_path / "d.jsonl", [{"problem": "p", "solution": "\\boxed{1}"}, {"problem": "q"}])
    comp = _write(tmp_path / "c.jsonl", [{"doc_id": 0, "response": "1"}])
    res = CliRunner().invoke(main, ["score", str(comp), "--task", "math", "--data-files", str(data)])
    assert res.exit_code == 2
    assert "d.jsonl:2: field 'solution/answer' is missing" in res.output


def test_unknown_task_and_missing_file_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["score", str(tmp_path / "nope.jsonl"), "--task", "gsm8k"])
    assert res.exit_code == 2 and "no such file" in res.output
    res = CliRunner().invoke(main, ["score", str(tmp_path / "nope.jsonl"), "--task", "aime"])
    assert res.exit_code == 2


def test_python_m_eval_runs_without_mlx(tmp_path):
    comp = _write(tmp_path / "c.jsonl", [{"doc_id": 0, "response": "\\boxed{2}", "target": "2"}])
    code = (
        "import sys, runpy; sys.argv=['eval','score',%r,'--task','math'];"
        "\ntry:\n    runpy.run_module('eval', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n"
        "assert not any(m.startswith('mlx') for m in sys.modules), 'eval imported mlx'" % str(comp)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "100.00" in out.stdout


def test_score_code_format_uses_final_text_block(tmp_path):
    response = "```python\nprint(41)\n```\n```output\n41\n```\nOops, it is $\\boxed{42}$."
    comp = _write(
        tmp_path / "c.jsonl",
        [
            {"doc_id": 0, "response": response, "target": "42"},
            {"doc_id": 1, "response": "```python\nprint(7)\n```\n```output\n7\n```\n", "target": "7"},
        ],
    )
    res = CliRunner().invoke(main, ["score", str(comp), "--task", "math", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(next(tmp_path.glob("results_*.json")).read_text())["results"]["math"]
    assert metrics["exact_match,scdpo-grader"] == 1.0
    assert "exact_match,flexible-extract" not in metrics  # lm-eval's GSM8K names only for GSM8K
