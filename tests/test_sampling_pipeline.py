"""sample -> step-control -> build-pairs on the tiny fixture model (random weights, so its
continuations err; the correct solutions are supplied)."""

import json

import pytest
from click.testing import CliRunner
from mlx_lm import load

from mlx_scdpo.cli import main
from mlx_scdpo.generation.batched import generate_batched, prefill_cache
from mlx_scdpo.generation.ramp import SeededSampler
from mlx_scdpo.method.steps import split_steps

REFERENCE = [1.1, 1.2, 1.3] + [1.4] * 100  # the default ramp: 1.1, +0.1 a step, at most 1.4


def _problems(tmp_path, n=4):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(n)]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sample(tiny_model, tmp_path, out, seed, limit=3):
    args = [
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
        "4",
        "--max-tokens",
        "12",
        "--seed",
        str(seed),
        "--limit",
        str(limit),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return [json.loads(x) for x in (out / "solutions.jsonl").read_text().splitlines()]


def test_sample_is_seeded_resumable_and_keeps_token_ids(tiny_model, tmp_path):
    a = _sample(tiny_model, tmp_path, tmp_path / "a", seed=1)
    b = _sample(tiny_model, tmp_path, tmp_path / "b", seed=1)
    c = _sample(tiny_model, tmp_path, tmp_path / "c", seed=2)
    texts = lambda recs: [[s["text"] for s in r["samples"]] for r in recs]  # noqa: E731
    assert texts(a) == texts(b) and texts(a) != texts(c)
    assert [r["problem_id"] for r in a] == ["gsm8k/0", "gsm8k/1", "gsm8k/2"]
    assert all(r["n_sampled"] == 4 for r in a)  # budget spent: the random model is never right
    _, tok = load(str(tiny_model))
    s = a[0]["samples"][0]
    assert tok.decode(s["ids"]) == s["text"] and 0 < len(s["ids"]) <= 12
    # Resume: a larger --limit only samples the new problem.
    more = _sample(tiny_model, tmp_path, tmp_path / "a", seed=1, limit=4)
    assert [r["problem_id"] for r in more] == ["gsm8k/0", "gsm8k/1", "gsm8k/2", "gsm8k/3"]
    assert more[:3] == a


def _solutions_file(tok, path):
    """Problems whose correct solution is supplied (as if sampled), with its token ids."""
    records = []
    for i in range(3):
        a, b = i + 2, i + 3
        text = (
            f"Step 1: {a} * {b} = {a * b}\nStep 2: {a * b} + 1 = {a * b + 1}\nStep 3: {a * b + 1} - 2 = "
            f"{a * b - 1}\nThe answer is \\boxed{{{a * b - 1}}}."
        )
        prompt = f"Question {i}: compute.\n"
        records.append(
            {
                "problem_id": f"toy/{i}",
                "task": "gsm8k",
                "question": f"Q{i}",
                "gold": str(a * b - 1),
                "prompt": prompt,
                "prompt_ids": tok.encode(prompt, add_special_tokens=False),
                "n_sampled": 1,
                "samples": [
                    {
                        "text": text,
                        "ids": tok.encode(text, add_special_tokens=False),
                        "correct": True,
                        "extracted": str(a * b - 1),
                    }
                ],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_step_control_pairs_share_exactly_k_steps(tiny_model, tmp_path):
    _, tok = load(str(tiny_model))
    records = _solutions_file(tok, tmp_path / "solutions.jsonl")
    out = tmp_path / "sc"
    args = [
        "step-control",
        "--model",
        str(tiny_model),
        "--solutions",
        str(tmp_path / "solutions.jsonl"),
        "--output-dir",
        str(out),
        "--max-tokens",
        "24",
        "--rounds",
        "2",
        "--max-pairs-per-problem",
        "1",
        "--include-truncated",
    ]  # the random model seldom ends before 24 tokens
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    pairs = [json.loads(x) for x in (out / "pairs_step_control.jsonl").read_text().splitlines()]
    assert len(pairs) == 3  # the cap: one pair per problem
    by_id = {r["problem_id"]: r for r in records}
    for p in pairs:
        rec = by_id[p["problem_id"]]
        sol = rec["samples"][0]
        steps = split_steps(sol["text"]).steps
        assert p["source"] == "step_control" and p["k"] in (1, 2)  # 4 steps: the last two never end a prefix
        kept = "".join(steps[: p["k"]])
        assert p["prompt"] == rec["prompt"] + kept
        assert p["chosen"] == sol["text"][len(kept) :]
        assert (
            p["prompt_ids"] + p["chosen_ids"] == rec["prompt_ids"] + sol["ids"]
        )  # token space, no re-tokenizing
        assert tok.decode(p["prompt_ids"][len(rec["prompt_ids"]) :]) == kept
        assert tok.decode(p["rejected_ids"]) == p["rejected"] and p["rejected"] != p["chosen"]
        # One per generated step, as applied (read back from the processor): the reference schedule, as numbers.
        assert p["temperatures"] and p["temperatures"] == pytest.approx(
            REFERENCE[: len(split_steps(p["rejected"]).steps)]
        )
    rows = [json.loads(x) for x in (out / "step_control.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in rows) == ["capped", "capped", "capped", "pair", "pair", "pair"]
    # Re-running finds everything finished.
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and (out / "step_control.jsonl").read_text().count("\n") == 6
    # build-pairs mixes them with naive pairs into TRL-ready files.
    res = CliRunner().invoke(
        main,
        [
            "build-pairs",
            str(out / "pairs_step_control.jsonl"),
            "--output-dir",
            str(tmp_path / "final"),
            "--valid-fraction",
            "0.34",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "final" / "train.jsonl").read_text().splitlines()) == 2


def test_continuation_from_cached_prefix_equals_generation_from_scratch(tiny_model):
    model, tok = load(str(tiny_model))
    prefix = tok.encode("Question: what is 3 + 4?\nStep 1: 3 + 4 = 7\n", add_special_tokens=False)
    cache = prefill_cache(model, prefix)

    # A high temperature makes any logit difference visible in the samples.
    def run(caches):
        out = generate_batched(
            model, tok, [prefix] * 3, max_tokens=24, sampler=SeededSampler(7, temp=3.0), caches=caches
        )
        return [c.tokens for c in sorted(out, key=lambda c: c.index)]

    scratch = run(None)
    assert run([cache] * 3) == scratch
    assert run([cache] * 3) == scratch  # the shared cache was not modified by use

    def greedy(caches):
        return list(generate_batched(model, tok, [prefix], max_tokens=24, caches=caches))[0].tokens

    assert greedy([cache]) == greedy(None)


def test_code_integrated_step_control(tiny_model, tmp_path):
    _, tok = load(str(tiny_model))
    text = (
        "First compute the product.\n```python\nx = 6 * 7\nprint(x)\n```\n```output\n42\n```\n"
        "Now add one.\n```python\nprint(x + 1)\n```\n```output\n43\n```\nThe answer is \\boxed{43}."
    )
    prompt = "Question: 6 * 7 + 1?\n"
    rec = {
        "problem_id": "toy/code",
        "task": "gsm8k",
        "question": "Q",
        "gold": "43",
        "prompt": prompt,
        "prompt_ids": tok.encode(prompt, add_special_tokens=False),
        "n_sampled": 1,
        "solution_format": "code",
        "block_format": "markdown",
        "samples": [{"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}],
    }
    (tmp_path / "solutions.jsonl").write_text(json.dumps(rec) + "\n")
    from mlx_scdpo.method.step_control import StepControlArgs, plan_prefixes

    prefixes, _ = plan_prefixes([rec], tok, StepControlArgs(model="m", solutions="s", output_dir="o"), {})
    # blocks: text, code, exec, text, code, exec, text -> prefix ends after text (1), exec (3), text (4)
    assert [p.k for p in prefixes] == [1, 3, 4]
    assert prefixes[1].code_blocks == ["x = 6 * 7\nprint(x)\n"]
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
            "16",
            "--rounds",
            "2",
            "--max-pairs-per-problem",
            "3",
            "--include-truncated",
        ],
    )
    assert res.exit_code == 0, res.output
    pairs = [json.loads(x) for x in (tmp_path / "sc" / "pairs_step_control.jsonl").read_text().splitlines()]
    assert pairs and {p["k"] for p in pairs} <= {1, 3, 4}
    for p in pairs:
        assert p["prompt"] + p["chosen"] == prompt + text
        assert p["prompt_ids"] + p["chosen_ids"] == rec["prompt_ids"] + rec["samples"][0]["ids"]


def test_sample_code_format(tiny_model, tmp_path):
    args = [
        "sample",
        "--model",
        str(tiny_model),
        "--data-files",
        str(_problems(tmp_path, 2)),
        "--output-dir",
        str(tmp_path / "o"),
        "--samples-per-round",
        "2",
        "--budget",
        "2",
        "--max-tokens",
        "8",
        "--solution-format",
        "code",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (tmp_path / "o" / "solutions.jsonl").read_text().splitlines()]
    assert recs[0]["solution_format"] == "code" and recs[0]["block_format"] == "markdown"
    assert "integrate natural language reasoning with programs" in recs[0]["prompt"]
    assert all(len(s["gen_mask"]) == len(s["ids"]) for r in recs for s in r["samples"])
