"""Text stop strings in every generating command: a model forced to write "\\n\\nQuestion:" after
its answer stops there, keeps none of the stop string's tokens, and finishes with "stop".

The tiny fixture tokenizer (seed 0) spells "The answer is 4.\\n\\nQuestion: What" as SCRIPT;
a logits processor forces the model to write SCRIPT whatever it was asked."""

import json

import mlx.core as mx
import pytest
from click.testing import CliRunner
from mlx_lm import load
from mlx_lm.generate import BatchGenerator

from mlx_scdpo.cli import main
from mlx_scdpo.generation.batched import generate_batched, trim_at_stop

SCRIPT = [283, 310, 308, 223, 22, 16, 201, 201, 313, 28, 223, 57, 74, 67, 86]
ANSWER = [283, 310, 308, 223, 22, 16]  # "The answer is 4." (the stop string starts at the first 201)


def forcing(start: int):
    """A processor that makes SCRIPT[n] the only possible n-th generated token."""

    def processor(context, logits):
        n = min(context.size - start, len(SCRIPT) - 1)
        bias = mx.where(mx.arange(logits.shape[-1]) == SCRIPT[n], 0.0, -1e9)
        return logits + bias

    return processor


class ForcedBatchGenerator(BatchGenerator):
    """mlx-lm's BatchGenerator with the forcing processor added to every inserted sequence."""

    def insert(self, prompts, max_tokens=None, caches=None, all_tokens=None, logits_processors=None, **kw):
        before = all_tokens or [[] for _ in prompts]
        procs = [
            list(p or []) + [forcing(len(a) + len(q))]
            for p, q, a in zip(logits_processors or [None] * len(prompts), prompts, before)
        ]
        return super().insert(
            prompts, max_tokens, caches=caches, all_tokens=all_tokens, logits_processors=procs, **kw
        )


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setattr("mlx_scdpo.generation.batched.BatchGenerator", ForcedBatchGenerator)
    monkeypatch.setattr("mlx_scdpo.generation.code_loop.BatchGenerator", ForcedBatchGenerator)


def test_script_is_the_tiny_tokenizers_spelling(tiny_model):
    _, tok = load(str(tiny_model))
    assert tok.encode("The answer is 4.\n\nQuestion: What", add_special_tokens=False) == SCRIPT
    assert tok.decode(ANSWER) == "The answer is 4."


class PieceTokenizer:
    """A tokenizer whose ids decode to fixed pieces (one piece may hold a stop string's start)."""

    pieces = {0: "The answer is 4", 1: ".\n\n", 2: "Question", 3: ":", 4: " W", 5: "\n"}

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


@pytest.mark.parametrize(
    "ids, expected, hit",
    [
        ([0, 1, 2, 3, 4], [0], True),  # ".\n\n" holds the stop string's first characters: it goes too
        ([0, 5, 5, 2, 3, 4], [0], True),  # "\n", "\n", "Question", ":" all belong to the stop string
        ([0, 5, 5, 2], [0, 5, 5, 2], False),  # not complete yet
        ([0, 1, 0], [0, 1, 0], False),
    ],
)
def test_trim_at_stop_keeps_no_token_of_the_stop_string(ids, expected, hit):
    assert trim_at_stop(PieceTokenizer(), ids, ["\n\nQuestion:"]) == (expected, hit)


def test_trim_at_stop_looks_only_after_start():
    # A stop string inside an execution output (before ``start``) is not a stop.
    assert trim_at_stop(PieceTokenizer(), [0, 1, 2, 3, 0], ["\n\nQuestion:"], start=4) == (
        [0, 1, 2, 3, 0],
        False,
    )


def test_generate_batched_stops_and_drops_the_stop_tokens(tiny_model):
    model, tok = load(str(tiny_model))
    prompt = tok.encode("Question: What is 2 + 2?\nAnswer:")
    procs = [[forcing(len(prompt))]] * 2
    (c,) = generate_batched(
        model, tok, [prompt], max_tokens=14, stop_strings=["\n\nQuestion:"], logits_processors=procs[:1]
    )
    assert (c.tokens, c.text, c.finish_reason) == (ANSWER, "The answer is 4.", "stop")
    (c,) = generate_batched(model, tok, [prompt], max_tokens=12, logits_processors=procs[:1])
    assert (c.tokens, c.finish_reason) == (SCRIPT[:12], "length")
    # From a prefilled cache (step-control's path), too.
    from mlx_scdpo.generation.batched import prefill_cache

    (c,) = generate_batched(
        model,
        tok,
        [prompt],
        max_tokens=14,
        stop_strings=["\n\nQuestion:"],
        logits_processors=procs[:1],
        caches=[prefill_cache(model, prompt)],
    )
    assert (c.tokens, c.finish_reason) == (ANSWER, "stop")


def _problems(tmp_path):
    rows = [
        {"question": "What is 2 + 2?", "answer": "#### 4"},
        {"question": "What is 2 + 3?", "answer": "#### 5"},
    ]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["cot", "code"])
def test_eval_base_model_stops_at_the_next_question(tiny_model, tmp_path, forced, fmt):
    args = [
        "eval",
        "--model",
        str(tiny_model),
        "--task",
        "gsm8k",
        "--data-files",
        str(_problems(tmp_path)),
        "--no-chat-template",
        "--num-shots",
        "1",
        "--max-tokens",
        "14",
        "--format",
        fmt,
    ]
    res = CliRunner().invoke(main, args + ["--output-dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    rows = sorted(_rows(tmp_path / "a" / "generations_gsm8k.jsonl"), key=lambda r: r["doc_id"])
    assert [(r["response"], r["num_tokens"], r["finish_reason"]) for r in rows] == [
        ("The answer is 4.", 6, "stop")
    ] * 2
    results = json.loads(next((tmp_path / "a").glob("results_*.json")).read_text())
    assert results["config"]["stop_strings"] == ["\n\nQuestion:", "\n\nProblem:"]
    # --stop '' turns stop strings off: the invented next question stays in.
    res = CliRunner().invoke(main, args + ["--output-dir", str(tmp_path / "b"), "--stop", ""])
    assert res.exit_code == 0, res.output
    row = _rows(tmp_path / "b" / "generations_gsm8k.jsonl")[0]
    assert (
        row["response"] == "The answer is 4.\n\nQuestion: What"[: len(row["response"])]
        and row["num_tokens"] == 14
    )
    assert row["finish_reason"] == "length" and "Question" in row["response"]
    # A chosen stop string replaces the defaults.
    res = CliRunner().invoke(
        main, args + ["--output-dir", str(tmp_path / "c"), "--stop", " is", "--stop", "zz"]
    )
    assert res.exit_code == 0, res.output
    assert {(r["response"], r["num_tokens"]) for r in _rows(tmp_path / "c" / "generations_gsm8k.jsonl")} == {
        ("The answer", 2)
    }


def test_sample_keeps_no_stop_tokens_in_solutions_or_pairs(tiny_model, tmp_path, forced):
    out = tmp_path / "s"
    res = CliRunner().invoke(
        main,
        [
            "sample",
            "--model",
            str(tiny_model),
            "--data-files",
            str(_problems(tmp_path)),
            "--output-dir",
            str(out),
            "--samples-per-round",
            "2",
            "--budget",
            "2",
            "--max-tokens",
            "14",
            "--no-chat-template",
            "--num-shots",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    recs = _rows(out / "solutions.jsonl")
    assert [
        [(s["ids"], s["text"], s["finish_reason"], s["correct"]) for s in r["samples"]] for r in recs
    ] == [[(ANSWER, "The answer is 4.", "stop", True)], [(ANSWER, "The answer is 4.", "stop", False)]]
    assert recs[0]["stop"] == ["\n\nQuestion:", "\n\nProblem:"]


def test_step_control_rejected_side_keeps_no_stop_tokens(tiny_model, tmp_path, forced):
    _, tok = load(str(tiny_model))
    text = "Step 1: 2 + 3 = 5\nStep 2: 5 + 0 = 5\nStep 3: 5 * 1 = 5\nThe answer is 5."
    prompt = "Question: What is 2 + 3?\nAnswer:"
    rec = {
        "problem_id": "toy/0",
        "task": "gsm8k",
        "question": "What is 2 + 3?",
        "gold": "5",
        "prompt": prompt,
        "prompt_ids": tok.encode(prompt),
        "n_sampled": 1,
        "samples": [{"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}],
    }
    (tmp_path / "solutions.jsonl").write_text(json.dumps(rec) + "\n")
    res = CliRunner().invoke(
        main,
        [
            "step-control",
            "--model",
            str(tiny_model),
            "--solutions",
            str(tmp_path / "solutions.jsonl"),
            "--output-dir",
            str(tmp_path / "sc"),
            "--max-tokens",
            "14",
            "--rounds",
            "1",
            "--max-pairs-per-problem",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    pairs = _rows(tmp_path / "sc" / "pairs_step_control.jsonl")
    assert [p["k"] for p in pairs] == [1, 2]
    assert {(tuple(p["rejected_ids"]), p["rejected"]) for p in pairs} == {(tuple(ANSWER), "The answer is 4.")}
    rows = _rows(tmp_path / "sc" / "step_control.jsonl")
    assert {r["finish_reason"] for r in rows} == {"stop"}


def test_step_control_truncated_continuations_are_no_rejected_side_by_default(tiny_model, tmp_path, forced):
    _, tok = load(str(tiny_model))
    text = "Step 1: 2 + 3 = 5\nStep 2: 5 + 0 = 5\nStep 3: 5 * 1 = 5\nThe answer is 5."
    rec = {
        "problem_id": "toy/0",
        "task": "gsm8k",
        "question": "Q",
        "gold": "5",
        "prompt": "Q\n",
        "prompt_ids": tok.encode("Q\n"),
        "n_sampled": 1,
        "samples": [
            {
                "text": text,
                "ids": tok.encode(text, add_special_tokens=False),
                "correct": True,
                "finish_reason": "stop",
            }
        ],
    }
    (tmp_path / "solutions.jsonl").write_text(json.dumps(rec) + "\n")
    base = [
        "step-control",
        "--model",
        str(tiny_model),
        "--solutions",
        str(tmp_path / "solutions.jsonl"),
        "--max-tokens",
        "5",
        "--rounds",
        "2",
        "--max-pairs-per-problem",
        "3",
    ]
    res = CliRunner().invoke(main, base + ["--output-dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert [r["status"] for r in _rows(tmp_path / "a" / "step_control.jsonl")] == ["exhausted", "exhausted"]
    assert _rows(tmp_path / "a" / "pairs_step_control.jsonl") == []
    res = CliRunner().invoke(main, base + ["--output-dir", str(tmp_path / "b"), "--include-truncated"])
    assert res.exit_code == 0, res.output
    pairs = _rows(tmp_path / "b" / "pairs_step_control.jsonl")
    assert [
        (p["k"], p["rejected_ids"], p["chosen_finish_reason"], p["rejected_finish_reason"]) for p in pairs
    ] == [(1, SCRIPT[:5], "stop", "length"), (2, SCRIPT[:5], "stop", "length")]


def test_stop_option_sources(tmp_path):
    from mlx_scdpo.config import build_args
    from mlx_scdpo.method.sampling import SampleArgs
    from mlx_scdpo.method.step_control import StepControlArgs, run_stop_strings
    from mlx_scdpo.prompts import DEFAULT_STOP

    (tmp_path / "c.yaml").write_text('stop: ["\\n\\nQ:", "END"]\n')
    assert build_args(SampleArgs, {"model": "m", "output_dir": "o"}, str(tmp_path / "c.yaml")).stop == [
        "\n\nQ:",
        "END",
    ]
    # Repeated flags win over the file; no flag leaves the file's value (click gives an empty tuple).
    assert build_args(
        SampleArgs, {"model": "m", "output_dir": "o", "stop": ("A", "B")}, str(tmp_path / "c.yaml")
    ).stop == ["A", "B"]
    assert build_args(SampleArgs, {"model": "m", "output_dir": "o", "stop": ()}).stop is None
    args = StepControlArgs(model="m", solutions="s", output_dir="o")
    assert run_stop_strings(args, [{"stop": ["\n\nQ:"]}, {"stop": ["\n\nQ:", "X"]}]) == ("\n\nQ:", "X")
    assert run_stop_strings(args, [{}]) == DEFAULT_STOP  # solutions written before stop strings were recorded
    assert (
        run_stop_strings(
            StepControlArgs(model="m", solutions="s", output_dir="o", stop=[""]), [{"stop": ["Q"]}]
        )
        == ()
    )
