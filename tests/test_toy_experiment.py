"""The toy-world experiment: splits, fast step-level evaluation, selection on validation, intervals."""

import json
import re
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten

import mlx_scdpo.toy.sft as toy_sft
from mlx_scdpo.cli import main
from mlx_scdpo.toy.evaluate import (
    greedy_texts,
    mean_with_interval,
    score_toy,
    step_control_error_positions,
    summarize,
    toy_prompt_ids,
)
from mlx_scdpo.toy.quickstart import headline_charts
from mlx_scdpo.toy.sft import ASSET_DIR
from mlx_scdpo.toy.world import SETTINGS, ToyProblem, held_out, make_splits, reserved_questions, toy_splits

HAS_TOY = (ASSET_DIR / "model.safetensors").exists()


@pytest.mark.parametrize("lo,hi", [(2, 3), (4, 6)])
def test_splits_are_disjoint_prefix_stable_and_in_range(lo, hi):
    big = toy_splits(400, 200, 600, min_steps=lo, max_steps=hi, seed=1)
    train, valid, test = ({p.question for p in s} for s in (big.train, big.valid, big.test))
    assert not train & valid and not train & test and not valid & test
    assert not train & reserved_questions()  # no setting's validation or test problem is ever trained on
    assert len(valid) == 200 and len(test) == 600  # held-out problems are distinct
    assert all(lo <= len(p.ops) + 1 <= hi for s in (big.train, big.valid, big.test) for p in s)
    small = toy_splits(3, 20, 50, min_steps=lo, max_steps=hi, seed=2)
    assert small.test == big.test[:50] and small.valid == big.valid[:20]  # any n_test: the same problems
    assert small.train != big.train[:3]  # training problems follow the seed
    legacy = {p.question for p in make_splits(0, 256, seed=0)[1]}
    assert not legacy & (valid | test)  # the first embedded model was selected on these


def test_splits_do_not_depend_on_the_process():
    code = (
        "from mlx_scdpo.toy.world import toy_splits; s = toy_splits(5, 5, 5, min_steps=4, max_steps=6, seed=3); "
        "print('|'.join(p.question for p in s.train + s.valid + s.test))"
    )
    here = toy_splits(5, 5, 5, min_steps=4, max_steps=6, seed=3)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "|".join(p.question for p in here.train + here.valid + here.test)


def test_split_sizes_are_checked():
    with pytest.raises(ValueError, match="at most 4000"):
        toy_splits(0, 0, 4001)
    with pytest.raises(ValueError, match="min_steps"):
        toy_splits(0, 0, 1, min_steps=4, max_steps=3)


P = ToyProblem(6, 7, (("+", 5), ("/", 3)))


@pytest.mark.parametrize(
    "text,correct,all_right,first_wrong",
    [
        (
            "Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47\nStep 3: 47 / 3 = 15\nThe answer is \\boxed{15}.",
            True,
            True,
            None,
        ),
        # right answer by luck: the final answer counts, the step-level score does not
        (
            "Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 46\nStep 3: 46 / 3 = 15\nThe answer is \\boxed{15}.",
            True,
            False,
            2,
        ),
        (
            "Step 1: 6 * 7 = 43\nStep 2: 43 + 5 = 48\nStep 3: 48 / 3 = 16\nThe answer is \\boxed{16}.",
            False,
            False,
            1,
        ),
        (
            "Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47\nStep 3: 47 / 3 = 16\nThe answer is \\boxed{16}.",
            False,
            False,
            3,
        ),
        ("Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47", False, False, 3),
        ("", False, False, 1),
    ],
)
def test_score_toy(text, correct, all_right, first_wrong):
    row = score_toy(P, text)
    assert (row["correct"], row["all_steps_right"], row["first_wrong_step"], row["steps"]) == (
        correct,
        all_right,
        first_wrong,
        3,
    )


def test_summarize_literal():
    rows = [
        {"correct": True, "all_steps_right": True, "first_wrong_step": None},
        {"correct": True, "all_steps_right": False, "first_wrong_step": 2},
        {"correct": False, "all_steps_right": False, "first_wrong_step": 3},
        {"correct": False, "all_steps_right": False, "first_wrong_step": 2},
    ]
    assert summarize(rows) == {
        "n": 4,
        "accuracy": 0.5,
        "all_steps_right": 0.25,
        "first_wrong_step": {2: 2, 3: 1},
        "mean_first_wrong_step": 7 / 3,
    }


@pytest.mark.parametrize(
    "values,mean,half",
    [
        # by hand: seed means .75/.5 (sd .17678, t(1) 12.706) -> 1.58837; problem means 0.5,0,1,1 (sd .47871) -> .46914
        ([[1, 0, 1, 1], [0, 0, 1, 1]], 0.625, 1.656089),
        ([[1, 0, 1, 0]], 0.5, 0.565803),  # one seed: the test-set part alone, 1.96 * .57735 / 2
        ([[1, 1], [1, 1], [1, 1]], 1.0, 0.0),
    ],
)
def test_mean_with_interval(values, mean, half):
    got = mean_with_interval(np.array(values))
    assert got == pytest.approx((mean, half), abs=1e-6)


def test_step_control_error_positions(tmp_path):
    rows = [  # k = 1: wrong at step 2 (k+1); k = 1: wrong at step 3 (later); k = 2: no wrong step
        {
            "question": P.question,
            "k": 1,
            "prefix": "Step 1: 6 * 7 = 42\n",
            "rejected": "Step 2: 42 + 5 = 46\nStep 3: 46 / 3 = 15\nThe answer is \\boxed{15}.",
        },
        {
            "question": P.question,
            "k": 1,
            "prefix": "Step 1: 6 * 7 = 42\n",
            "rejected": "Step 2: 42 + 5 = 47\nStep 3: 47 / 3 = 16\nThe answer is \\boxed{16}.",
        },
        {
            "question": P.question,
            "k": 2,
            "prefix": "Step 1: 6 * 7 = 42\nStep 2: 42 + 5 = 47\n",
            "rejected": "Step 3: 47 / 3 = 15\nThe answer is \\boxed{15}.",
        },
    ]
    path = tmp_path / "pairs_step_control.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = step_control_error_positions(path)
    assert got == {
        "pairs": 3,
        "k+1": pytest.approx(1 / 3),
        "later": pytest.approx(1 / 3),
        "none": pytest.approx(1 / 3),
        "k": {1: 2, 2: 1},
    }


@pytest.mark.skipif(not HAS_TOY, reason="embedded toy model missing")
def test_fast_greedy_equals_generate_batched():
    """The fast evaluator decodes exactly what ``eval``'s batched generator decodes."""
    from mlx_lm import load

    from mlx_scdpo.generation.batched import generate_batched

    model, tok = load(str(ASSET_DIR))
    problems = [p for lo, hi in SETTINGS.values() for p in held_out(lo, hi)[1][:24]]
    prompts = [toy_prompt_ids(tok, p.question) for p in problems]
    fast = greedy_texts(model, tok, prompts, max_tokens=150, batch_size=16)
    ref = {c.index: c.text for c in generate_batched(model, tok, prompts, max_tokens=150, batch_size=8)}
    assert fast == [ref[i] for i in range(len(prompts))]
    assert len(set(map(len, prompts))) > 1  # several prompt lengths, so several batches


def test_sft_checkpoint_is_chosen_on_validation_only(tmp_path, monkeypatch):
    """Every problem the SFT trainer scores is a validation problem; the kept weights are the best-scoring ones."""
    scripted = iter([0.2, 0.2, 0.6, 0.4, 0.3, 0.3])  # (short, long) at steps 2, 4, 6: the best is step 4
    seen, snapshots = [], []

    def fake_accuracy(model, tokenizer, problems):
        seen.extend(p.question for p in problems)
        snapshots.append({k: np.array(v) for k, v in tree_flatten(model.parameters())})
        return next(scripted)

    monkeypatch.setattr(toy_sft, "greedy_accuracy", fake_accuracy)
    out = tmp_path / "sft"
    result = toy_sft.train_toy_sft(
        toy_sft.ToySFTArgs(
            out_dir=str(out),
            minutes=10,
            batch_size=4,
            warmup_steps=0,
            steps=6,
            n_train=64,
            n_eval=8,
            eval_every=2,
            min_steps=2,
            max_steps=6,
        ),
        log=lambda _: None,
    )
    valid = {p.question for lo, hi in SETTINGS.values() for p in held_out(lo, hi)[1]}
    test = {p.question for lo, hi in SETTINGS.values() for p in held_out(lo, hi)[0]}
    assert len(seen) == 3 * 16 and set(seen) <= valid and not set(seen) & test
    assert result["best_valid_accuracy"] == pytest.approx(0.5)
    saved = mx.load(str(out / "model.safetensors"))
    best = snapshots[2]  # the weights scored at step 4
    assert all(np.array_equal(np.array(saved[k]), best[k]) for k in best)
    assert not all(np.array_equal(np.array(saved[k]), snapshots[4][k]) for k in best)


def test_headline_chart_has_error_bars_and_pair_counts():
    ev = lambda acc: {"accuracy": acc, "n": 400, "all_steps_right": acc}  # noqa: E731
    results = {
        "sft_eval": ev(0.6),
        "dpo_eval": ev(0.5),
        "scdpo_eval": ev(0.7),
        "pairs_dpo": {"train": 120},
        "pairs_scdpo": {"train": 310},
    }
    svg = headline_charts(results)
    assert svg.count("<svg") == 2 and "400 problems" in svg
    assert svg.count("<line") == 3  # one 95% whisker per evaluated method
    assert ">70.0%<" in svg and ">310.0<" in svg and "DPO (data-equal)" not in svg


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--n-test", "5000"], "--n-test at most 4000"),
        (["--min-steps", "4", "--max-steps", "3"], "--min-steps <= --max-steps"),
        (["--min-steps", "0"], "--min-steps': 0 is not in the range"),
    ],
)
def test_quickstart_refuses_bad_sizes(tmp_path, flags, message):
    res = CliRunner().invoke(
        main, ["quickstart", "--output-dir", str(tmp_path / "q"), *flags, "--no-progress"]
    )
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "q").exists()


def test_training_curve_shows_a_single_report():
    from mlx_scdpo.toy.quickstart import _svg_curve

    svg = _svg_curve({"dpo": [(1, 0.69)]}, "loss")
    assert svg.count("<circle") == 1 and "dpo" in svg
    assert (
        _svg_curve({"dpo": [(1, 0.7), (2, 0.6)], "scdpo": [(1, 0.7), (2, 0.5)]}, "loss").count("<circle") == 4
    )


EXPERIMENT = [sys.executable, "scripts/toy_experiment.py"]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--jobs", "0"], "--jobs must be at least 1 (got 0)"),
        (["--n-test", "5000"], "at most 4000"),
        (["--n-test", "0"], "--n-test must be 1..4000"),
        (["--seeds", "x"], "invalid int value: 'x'"),
        (["--settings", "huge"], "invalid choice: 'huge'"),
        (["--beta", "-1"], "--beta: -1.0 is not in the range x>0"),
        (["--learning-rate", "nan"], "--learning-rate: nan is not a finite number"),
        (["--t0", "2", "--tmax", "1"], "--t0 2.0 must not exceed --tmax 1.0"),
    ],
)
def test_experiment_refuses_bad_options_in_one_line(tmp_path, flags, message):
    res = subprocess.run(
        [*EXPERIMENT, "--output-dir", str(tmp_path / "x"), *flags], capture_output=True, text=True
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TOY, reason="embedded toy model missing")
def test_experiment_parallel_seeds_equal_serial_and_survive_kill_9(tmp_path):
    """--jobs 2 (two processes, one BLAS thread each) gives the serial run's rows and table; so does
    a --jobs 2 run whose parent is killed with SIGKILL half-way and then rerun (its seed processes
    end with it and release their folders)."""
    small = [*EXPERIMENT, "--seeds", "0", "1", "--settings", "long", "--n-train", "8", "--n-test", "24"]
    small += ["--iters", "2", "--budget", "4"]
    seconds = {}
    for jobs in (1, 2):
        t = time.perf_counter()
        res = subprocess.run(
            [*small, "--jobs", str(jobs), "--output-dir", str(tmp_path / f"j{jobs}")],
            capture_output=True,
            text=True,
        )
        seconds[jobs] = time.perf_counter() - t
        assert res.returncode == 0, res.stderr[-2000:]
    killed = [*small, "--jobs", "2", "--output-dir", str(tmp_path / "k")]
    proc = subprocess.Popen(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds[2] * 0.6)  # inside the seeds' work (the SFT evaluation comes first)
    proc.kill()
    proc.wait()
    time.sleep(3)  # the seed processes notice within a second
    finished = [(tmp_path / "k" / "long" / f"seed{s}" / "results.json").exists() for s in (0, 1)]
    assert not all(finished), "the kill came after the work: nothing was resumed"
    res = subprocess.run(killed, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    for seed in (0, 1):
        for method in ("dpo", "dpo_equal", "scdpo"):
            rows = [
                (tmp_path / run / "long" / f"seed{seed}" / "eval" / f"{method}.jsonl").read_text()
                for run in ("j1", "j2", "k")
            ]
            assert rows[0] == rows[1] == rows[2] and rows[0].count("\n") == 24
    # The probe shares sum float rewards over tokens; one vs two BLAS threads changes the reduction
    # order, which can move a share across a rounding edge (68.6% vs 68.7% seen in CI). Greedy rows
    # above are exact; the shares are compared to 0.2 points, the rest of the table exactly.
    share = r"(DPO|DPO \(data-equal\)|SCDPO) (\d+\.\d)%"
    tables, shares = [], []
    for r in ("j1", "j2", "k"):
        text = (tmp_path / r / "results.md").read_text()
        text = re.sub(r"[\d.]+ minutes (in all|of wall time, --jobs \d)", "", text)
        shares.append([float(v) for _, v in re.findall(share, text)])
        tables.append(re.sub(share, r"\1 _%", text))
    assert tables[0] == tables[1] == tables[2] and "| SCDPO − DPO |" in tables[0]
    assert len(shares[0]) == 3 and all(len(s) == 3 for s in shares)
    assert all(abs(a - b) <= 0.2 for s in shares[1:] for a, b in zip(shares[0], s))


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--learning-rates", "-1"], "--learning-rate: -1.0 is not in the range x>0"),
        (["--betas", "nan"], "--beta: nan is not a finite number"),
        (["--n-valid", "0"], "--n-valid must be 1..1000 (got 0)"),
        (["--ramps", "a:b:c"], "expected T0:DT:TMAX"),
        (["--ramps", "1.5:0.1:1.0"], "T0 1.5 must not exceed TMAX 1.0"),
        (["--ramps", "1:-1:2"], "--dt: -1.0 is not in the range x>=0"),
        ([], "results.json: not a finished quickstart run"),  # --base is not a quickstart folder
    ],
)
def test_ablation_refuses_bad_options_in_one_line(tmp_path, flags, message):
    """scripts/toy_ablation.py: a bad flag or base folder is one line and exit 2, before any folder."""
    res = subprocess.run(
        [sys.executable, "scripts/toy_ablation.py", "--base", str(tmp_path / "nope")]
        + ["--output-dir", str(tmp_path / "x"), *flags],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()
