"""Shared fixtures: a tiny random model built locally (never a hub download); the ``linux_only`` marker."""

import functools
import sys
from pathlib import Path

import pytest
from hypothesis import settings

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX on Linux)

# No per-example deadline: a loaded 2-core CI machine made a 200 ms deadline fail at random.
settings.register_profile("scdpo", deadline=None)
settings.load_profile("scdpo")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from mlx_scdpo.toy.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="5m", seed=0)


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path}")
    return path


def sandbox_mount_points(directory: str) -> list[str]:
    """Names bubblewrap creates in a sandbox's private ``directory`` (``/tmp`` ...) to bind the Python
    installation when it lives below it (a checkout in ``/tmp``): empty, read-only mount points."""
    import os
    import sys

    from mlx_scdpo.sandbox.isolation import python_dirs

    prefix = directory.rstrip("/") + "/"
    paths = [*python_dirs(sys.path), os.path.realpath(sys.prefix)]
    return sorted({p[len(prefix) :].split("/")[0] for p in paths if p.startswith(prefix)})


@functools.lru_cache(maxsize=None)
def bwrap_here() -> bool:
    """Whether the sandbox isolates with bubblewrap here (Linux with a working ``bwrap``)."""
    from mlx_scdpo.sandbox import isolation as sandbox_isolation

    try:
        return sandbox_isolation.detect() == "bwrap"
    except sandbox_isolation.SandboxUnavailable:
        return False


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.linux_only("why", bwrap=False)``: a test that needs a Linux feature is skipped, with
    its reason, off Linux (or, with ``bwrap``, wherever bubblewrap does not work), so the suite runs on a
    Mac; ``-m "not linux_only"`` runs here what a Mac runs."""
    for item in items:
        mark = item.get_closest_marker("linux_only")
        if mark is None:
            continue
        why = mark.args[0] if mark.args else "a Linux feature"
        if sys.platform != "linux":
            item.add_marker(pytest.mark.skip(reason=f"needs Linux: {why}"))
        elif mark.kwargs.get("bwrap") and not bwrap_here():
            item.add_marker(pytest.mark.skip(reason=f"needs a working bubblewrap: {why}"))
