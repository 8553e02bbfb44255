"""`mlx-scdpo quickstart` end to end on the embedded toy model (small settings)."""

import json

import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main
from mlx_scdpo.toy.sft import ASSET_DIR, LONG_ASSET_DIR


@pytest.mark.slow
@pytest.mark.skipif(not (ASSET_DIR / "model.safetensors").exists(), reason="embedded toy model missing")
def test_quickstart_small(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(
        main,
        [
            "quickstart",
            "--output-dir",
            str(out),
            "--n-train",
            "64",  # the 2-3-step model is right 99% of the time: enough problems for some wrong samples
            "--n-test",
            "32",
            "--budget",
            "8",
            "--iters",
            "2",
            "--batch-size",
            "4",
            "--data-equal",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    for path in (
        "pairs/train.jsonl",
        "pairs/valid.jsonl",
        "pairs/naive/train.jsonl",
        "adapters/dpo/adapters.safetensors",
        "adapters/scdpo/adapters.safetensors",
        "adapters/dpo_equal/adapters.safetensors",
        "report.html",
    ):
        assert (out / path).exists(), path
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["sft_accuracy"] <= 1.0 and "scdpo_accuracy" in results
    assert results["pairs_scdpo"]["by_source"].get("step_control", 0) > 0
    html = (out / "report.html").read_text()
    assert "<svg" in html and "SFT accuracy" in html and "<span title=" in html
    assert html.index("greedy test accuracy") < html.index("Training curves") < html.index("<span title=")
    assert "SCDPO accuracy" in res.output and "time: sample" in res.output
    rows = [json.loads(line) for line in (out / "eval" / "scdpo.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and {"correct", "all_steps_right", "first_wrong_step"} <= rows[0].keys()


@pytest.mark.slow
@pytest.mark.skipif(
    not (LONG_ASSET_DIR / "model.safetensors").exists(), reason="embedded 4-6-step model missing"
)
def test_quickstart_long_setting(tmp_path):
    """--max-steps over 3 picks the 4-6-step model; problems, samples and test rows have 4-6 steps."""
    out = tmp_path / "qs"
    res = CliRunner().invoke(
        main,
        [
            "quickstart",
            "--output-dir",
            str(out),
            "--min-steps",
            "4",
            "--max-steps",
            "6",
            "--n-train",
            "24",
            "--n-test",
            "16",
            "--budget",
            "4",
            "--iters",
            "1",
            "--batch-size",
            "2",
            "--skip-scdpo",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["max_steps"] == 6 and "dpo_accuracy" in results
    problems = [json.loads(line) for line in (out / "data" / "train_problems.jsonl").read_text().splitlines()]
    assert all(4 <= q["question"].count(",") + 1 <= 6 for q in problems)
    rows = [json.loads(line) for line in (out / "eval" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(4 <= r["steps"] <= 6 for r in rows)


def test_no_naive_pairs_is_one_clear_line(tmp_path):
    """A model that never errs on the training problems leaves no naive pair: say so, not 'file is empty'."""
    from mlx_scdpo.errors import UserError
    from mlx_scdpo.toy.quickstart import QuickstartArgs, _build_variant_pairs

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs_naive.jsonl").write_text("")
    with pytest.raises(UserError, match="no naive pairs: no problem got both a right and a wrong sample"):
        _build_variant_pairs(QuickstartArgs(output_dir=str(tmp_path)), tmp_path, {})


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({}, (5e-6, 0.1)),  # 2-3 steps: chosen on its validation problems
        ({"min_steps": 4, "max_steps": 6}, (5e-7, 0.1)),  # 4-6 steps: its own choice
        ({"learning_rate": 3e-5}, (3e-5, 0.1)),  # a given flag wins
        ({"min_steps": 4, "max_steps": 6, "beta": 0.5}, (5e-7, 0.5)),
    ],
)
def test_learning_rate_and_beta_default_per_setting(tmp_path, monkeypatch, flags, expected):
    """Unset --learning-rate/--beta take the setting's validation-chosen values, recorded in the run."""
    from mlx_scdpo.toy import quickstart

    seen = {}
    monkeypatch.setattr(quickstart, "_run_quickstart", lambda args, log, sft: seen.setdefault("args", args))
    quickstart.run_quickstart(quickstart.QuickstartArgs(output_dir=str(tmp_path / "qs"), **flags))
    assert (seen["args"].learning_rate, seen["args"].beta) == expected
