"""Streaming `sample` / `step-control`: per-draw randomness, bounded windows, and kill -9 + resume
giving byte-identical outputs to an uninterrupted run.

The toy model (``mlx_scdpo/toy/assets``) is right often enough that prefixes need several rounds
and problems reach their pair cap, so the order-dependent parts (rounds, the cap, draw order)
are exercised; the tiny random model checks batch-composition independence.
"""

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import mlx.core as mx
import pytest
from click.testing import CliRunner
from mlx_lm import load

from mlx_scdpo.cli import main
from mlx_scdpo.generation.windows import InOrder, ItemNoise, Request, item_noise, stream_completions
from mlx_scdpo.toy.sft import ASSET_DIR
from mlx_scdpo.toy.world import make_splits, write_jsonl

TOY = str(ASSET_DIR)
REPO = Path(__file__).resolve().parents[1]


def test_item_noise_samples_the_softmax_at_its_temperature():
    logits = mx.array([[2.0, 1.0, 0.0, -1.0]] * 20000)
    for temp in (1.0, 0.7):
        picks = mx.argmax(ItemNoise(3, temp)(None, logits), axis=-1)
        freq = [(picks == i).sum().item() / picks.size for i in range(4)]
        want = mx.softmax(logits[0] / temp).tolist()
        assert freq == pytest.approx(want, abs=0.015)
    assert ItemNoise(3, 0.0)(None, logits[:1]).tolist() == logits[:1].tolist()  # temperature 0: greedy


def test_a_draw_does_not_depend_on_its_batch_mates(tiny_model):
    model, tok = load(str(tiny_model))
    prompts = [tok.encode(f"Question {i}: what is {i} + {i}?\n", add_special_tokens=False) for i in range(5)]

    def run(order, batch_size):
        reqs = [Request(i, prompts[i], [item_noise(2.0, 0, "p", i)]) for i in order]

        def pull(n):
            out, reqs[:] = reqs[:n], reqs[n:]
            return out

        return {
            tag: c.tokens
            for tag, c in stream_completions(model, tok, pull, max_tokens=16, batch_size=batch_size)
        }

    alone = {i: run([i], 1)[i] for i in (0, 3)}
    together = run([4, 3, 2, 1, 0], 3)
    assert together[0] == alone[0] and together[3] == alone[3]
    assert len({tuple(t) for t in together.values()}) == 5


def test_in_order_buffer():
    buf = InOrder()
    buf.put(1, "b")
    assert list(buf.pop_ready()) == [] and len(buf) == 1
    buf.put(0, "a")
    assert list(buf.pop_ready()) == ["a", "b"] and len(buf) == 0


def _toy_solutions(path: Path, n: int) -> Path:
    """Toy problems with their correct solution (as if sampled), token ids included."""
    _, tok = load(TOY)
    train, _ = make_splits(n, 0, seed=3)
    with open(path, "w") as f:
        for i, p in enumerate(train):
            prompt, text = f"Q: {p.question}\n", p.solution()
            f.write(
                json.dumps(
                    {
                        "problem_id": f"toy/{i}",
                        "task": "gsm8k",
                        "question": p.question,
                        "gold": str(p.answer),
                        "prompt": prompt,
                        "prompt_ids": tok.encode(prompt, add_special_tokens=False),
                        "n_sampled": 1,
                        "samples": [
                            {"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}
                        ],
                    }
                )
                + "\n"
            )
    return path


def _step_control_args(solutions, out, batch_size=3):
    return [
        "step-control",
        "--model",
        TOY,
        "--solutions",
        str(solutions),
        "--output-dir",
        str(out),
        "--max-tokens",
        "48",
        "--rounds",
        "3",
        "--max-pairs-per-problem",
        "1",
        "--t0",
        "1.8",
        "--dt",
        "0.4",
        "--tmax",
        "2.6",
        "--batch-size",
        str(batch_size),
        "--seed",
        "5",
        "--no-progress",
    ]


def _sample_args(problems, out, batch_size=5):
    return [
        "sample",
        "--model",
        TOY,
        "--data-files",
        str(problems),
        "--output-dir",
        str(out),
        "--samples-per-round",
        "2",
        "--budget",
        "6",
        "--min-correct",
        "1",
        "--min-wrong",
        "1",
        "--max-tokens",
        "96",
        "--temp",
        "2.0",  # hot: the embedded model is right 99% of the time at 1.0, and wrong samples must occur
        "--batch-size",
        str(batch_size),
        "--problems-per-batch",
        "3",
        "--seed",
        "2",
        "--no-progress",
    ]


def _run_ok(args):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


def _killed(args, kill_at: str, tmp_path):
    """Run the command in a child process that SIGKILLs itself at ``kill_at`` (``run_state.kill_point``)."""
    env = {**os.environ, "MLX_SCDPO_KILL_AT": kill_at}
    proc = subprocess.run(
        [sys.executable, "-m", "mlx_scdpo.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])


def _same_outputs(a: Path, b: Path, names):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


SC_FILES = ("step_control.jsonl", "pairs_step_control.jsonl")
SAMPLE_FILES = ("solutions.jsonl", "pairs_naive.jsonl")


@pytest.fixture(scope="module")
def step_control_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("sc")
    solutions = _toy_solutions(d / "solutions.jsonl", 8)
    _run_ok(_step_control_args(solutions, d / "ref"))
    rows = [json.loads(x) for x in (d / "ref" / "step_control.jsonl").read_text().splitlines()]
    # The cases below mean something only if rounds, pairs and the cap all occur.
    assert {r["status"] for r in rows} >= {"pair", "capped"} and any(r["round"] > 1 for r in rows)
    return solutions, d / "ref"


def test_step_control_records_the_schedule_it_was_given(step_control_reference):
    """--t0 1.8 --dt 0.4 --tmax 2.6 reach the processor: each pair records, per generated step, the
    temperature it was sampled at (read back from the processor), written out here as numbers."""
    from mlx_scdpo.method.steps import split_steps

    _, ref = step_control_reference
    pairs = [json.loads(x) for x in (ref / "pairs_step_control.jsonl").read_text().splitlines()]
    assert pairs
    for p in pairs:
        n_steps = len(split_steps(p["rejected"]).steps)
        assert p["temperatures"] == pytest.approx(([1.8, 2.2] + [2.6] * 100)[:n_steps]), p["rejected"]


@pytest.mark.slow
def test_step_control_killed_inside_a_window_resumes_byte_identical(step_control_reference, tmp_path):
    solutions, ref = step_control_reference
    args = _step_control_args(solutions, tmp_path / "o")
    _killed(args, "step-control-write:2", tmp_path)  # 2 outcomes written, the window's others live
    assert len((tmp_path / "o" / "step_control.jsonl").read_text().splitlines()) == 2
    _run_ok(args)
    _same_outputs(tmp_path / "o", ref, SC_FILES)


def test_step_control_results_do_not_depend_on_the_batch_size(step_control_reference, tmp_path):
    solutions, ref = step_control_reference
    _run_ok(_step_control_args(solutions, tmp_path / "o", batch_size=7))
    _same_outputs(tmp_path / "o", ref, SC_FILES)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["step-control-draw:1", "step-control-draw:7", "step-control-write:5"])
def test_step_control_killed_anywhere_resumes_byte_identical(step_control_reference, tmp_path, kill_at):
    solutions, ref = step_control_reference
    args = _step_control_args(solutions, tmp_path / "o")
    _killed(args, kill_at, tmp_path)
    _run_ok(args)
    _same_outputs(tmp_path / "o", ref, SC_FILES)


@pytest.fixture(scope="module")
def sample_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    train, _ = make_splits(7, 0, seed=4)
    write_jsonl(train, d / "problems.jsonl")
    _run_ok(_sample_args(d / "problems.jsonl", d / "ref"))
    recs = [json.loads(x) for x in (d / "ref" / "solutions.jsonl").read_text().splitlines()]
    assert len(recs) == 7 and len({r["n_sampled"] for r in recs}) > 1  # problems close after different rounds
    return d / "problems.jsonl", d / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["sample-draw:3", "sample-write:1", "sample-write:4"])
def test_sample_killed_anywhere_resumes_byte_identical(sample_reference, tmp_path, kill_at):
    problems, ref = sample_reference
    args = _sample_args(problems, tmp_path / "o")
    _killed(args, kill_at, tmp_path)
    _run_ok(args)
    _same_outputs(tmp_path / "o", ref, SAMPLE_FILES)


@pytest.mark.slow
def test_sample_results_do_not_depend_on_batch_or_window(sample_reference, tmp_path):
    problems, ref = sample_reference
    args = _sample_args(problems, tmp_path / "o", batch_size=2)
    args[args.index("--problems-per-batch") + 1] = "1"
    _run_ok(args)
    _same_outputs(tmp_path / "o", ref, SAMPLE_FILES)


def test_live_prefix_caches_are_bounded_by_the_window(tmp_path, monkeypatch):
    """Prefilled KV caches exist only for live prefixes: at most the batch size, whatever the dataset."""
    import mlx_scdpo.generation.batched as generation

    alive, peak = [0], [0]
    real = generation.prefill_cache

    def counted(model, tokens):
        cache = real(model, tokens)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(cache[0], lambda: alive.__setitem__(0, alive[0] - 1))
        return cache

    monkeypatch.setattr(generation, "prefill_cache", counted)
    solutions = _toy_solutions(tmp_path / "solutions.jsonl", 12)
    from mlx_scdpo.method.step_control import StepControlArgs, run_step_control

    res = run_step_control(
        StepControlArgs(
            model=TOY,
            solutions=str(solutions),
            output_dir=str(tmp_path / "o"),
            rounds=1,
            max_tokens=32,
            batch_size=2,
            progress=False,
        )
    )
    assert res["prefixes"] > 12  # more prefixes than the window by far
    assert res["peak_live_prefixes"] <= 2 and 1 <= peak[0] <= 2


@pytest.mark.slow
def test_code_format_step_control_killed_resumes_byte_identical(tiny_model, tmp_path):
    """Code-integrated prefixes: kept code replayed in each continuation's sandbox, outcomes still reproducible."""
    _, tok = load(str(tiny_model))
    rows = []
    for i in range(4):
        text = (
            f"First compute.\n```python\nx = {i + 6} * 7\nprint(x)\n```\n```output\n{(i + 6) * 7}\n```\n"
            f"Now add one.\n```python\nprint(x + 1)\n```\n```output\n{(i + 6) * 7 + 1}\n```\n"
            f"The answer is \\boxed{{{(i + 6) * 7 + 1}}}."
        )
        prompt = f"Question {i}: {i + 6} * 7 + 1?\n"
        rows.append(
            {
                "problem_id": f"code/{i}",
                "task": "gsm8k",
                "question": "Q",
                "gold": str((i + 6) * 7 + 1),
                "prompt": prompt,
                "prompt_ids": tok.encode(prompt, add_special_tokens=False),
                "solution_format": "code",
                "block_format": "markdown",
                "samples": [
                    {"text": text, "ids": tok.encode(text, add_special_tokens=False), "correct": True}
                ],
            }
        )
    solutions = tmp_path / "solutions.jsonl"
    solutions.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def args(out):
        return [
            "step-control",
            "--model",
            str(tiny_model),
            "--solutions",
            str(solutions),
            "--output-dir",
            str(out),
            "--max-tokens",
            "16",
            "--rounds",
            "2",
            "--batch-size",
            "3",
            "--max-pairs-per-problem",
            "2",
            "--include-truncated",
            "--no-progress",
        ]

    _run_ok(args(tmp_path / "ref"))
    assert len((tmp_path / "ref" / "step_control.jsonl").read_text().splitlines()) == 12  # 3 prefixes x 4
    _killed(args(tmp_path / "o"), "step-control-write:4", tmp_path)
    _run_ok(args(tmp_path / "o"))
    _same_outputs(tmp_path / "o", tmp_path / "ref", SC_FILES)
