"""Shared fixtures: a tiny random model built locally (never a hub download)."""

from pathlib import Path

import pytest

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX on Linux)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from mlx_scdpo.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="5m", seed=0)


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path}")
    return path
