"""`mlx-scdpo quickstart` end to end on the embedded toy model (small settings)."""

import json

import pytest
from click.testing import CliRunner

from mlx_scdpo.cli import main
from mlx_scdpo.toy_sft import ASSET_DIR


@pytest.mark.slow
@pytest.mark.skipif(not (ASSET_DIR / "model.safetensors").exists(), reason="embedded toy model missing")
def test_quickstart_small(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(main, ["quickstart", "--output-dir", str(out), "--n-train", "24", "--n-test", "32",
                                    "--budget", "4", "--iters", "2", "--batch-size", "4", "--data-equal",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    for path in ("pairs/train.jsonl", "pairs/valid.jsonl", "pairs/naive/train.jsonl", "adapters/dpo/adapters.safetensors",
                 "adapters/scdpo/adapters.safetensors", "adapters/dpo_equal/adapters.safetensors", "report.html"):
        assert (out / path).exists(), path
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["sft_accuracy"] <= 1.0 and "scdpo_accuracy" in results
    assert results["pairs_scdpo"]["by_source"].get("step_control", 0) > 0
    html = (out / "report.html").read_text()
    assert "<svg" in html and "SFT accuracy" in html and "<span title=" in html
    assert "SCDPO accuracy" in res.output and "time: sample" in res.output
