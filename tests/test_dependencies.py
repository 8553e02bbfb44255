"""pyproject's dependencies: every third-party import of the package is declared, the installed
versions meet the floors, and the mlx-lm / tqdm / PyYAML APIs the code calls exist at those floors."""

import ast
import inspect
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# Import name -> distribution name, where they differ.
DIST_OF = {"mlx_lm": "mlx-lm", "yaml": "pyyaml", "mlx": "mlx"}
# Optional features, imported only when asked for (``--report-to wandb``).
OPTIONAL = {"wandb"}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {r.name.lower(): r for r in reqs if r.marker is None or r.marker.evaluate()}


def _third_party_imports() -> set[str]:
    names = set()
    for folder in ("mlx_scdpo", "eval"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {
        n for n in names if n not in sys.stdlib_module_names and n not in ("mlx_scdpo", "eval")
    } - OPTIONAL


def test_every_third_party_import_is_declared():
    declared = _requirements()
    missing = sorted(n for n in _third_party_imports() if DIST_OF.get(n, n).lower() not in declared)
    assert missing == []


def test_installed_versions_meet_the_floors():
    for name, req in _requirements().items():
        assert req.specifier.contains(metadata.version(name), prereleases=True), (name, str(req.specifier))


def test_floors_cover_the_apis_used():
    reqs = _requirements()
    assert str(reqs["mlx-lm"].specifier) == ">=0.31.2"  # next_generated and insert(caches=, all_tokens=)
    assert re.fullmatch(r">=\d+(\.\d+)*", str(reqs["tqdm"].specifier))
    assert re.fullmatch(r">=\d+(\.\d+)*", str(reqs["pyyaml"].specifier))


def test_mlx_lm_batch_generator_api():
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.models.cache import make_prompt_cache  # noqa: F401

    init = inspect.signature(BatchGenerator.__init__).parameters
    assert {"stop_tokens", "sampler", "completion_batch_size", "prefill_batch_size"} <= set(init)
    insert = inspect.signature(BatchGenerator.insert).parameters
    assert {"caches", "all_tokens", "logits_processors"} <= set(insert)
    assert "return_prompt_caches" in inspect.signature(BatchGenerator.remove).parameters
    assert callable(BatchGenerator.next_generated) and callable(BatchGenerator.close)
    from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: F401


def test_tqdm_and_yaml_apis():
    import yaml
    from tqdm import tqdm

    bar = tqdm(total=2, initial=1, desc="d", unit="u", disable=True)
    bar.set_postfix(tok_s="1")
    bar.update(1)
    bar.close()
    assert callable(yaml.SafeLoader.add_implicit_resolver) and yaml.__with_libyaml__ in (True, False)
