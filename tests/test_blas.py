"""OpenBLAS preloading changes speed, not results."""

import json
import os
import subprocess
import sys

import pytest

SNIPPET = r"""
import json, sys
import mlx_scdpo, mlx_scdpo.blas as b
import mlx.core as mx, numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((192, 160)).astype(np.float32)
c = rng.standard_normal((160, 96)).astype(np.float32)
out = np.array(mx.array(a) @ mx.array(c))
print(json.dumps({"loaded": b.loaded_path, "err": float(np.abs(out - a @ c).max()), "out": out[:4, :4].tolist()}))
"""


def _run(env_extra):
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.linux_only("the OpenBLAS preload (macOS uses Accelerate)")
def test_openblas_results_match_numpy_and_opt_out():
    with_blas = _run({})
    without = _run({"MLX_SCDPO_NO_OPENBLAS": "1"})
    assert without["loaded"] is None
    assert with_blas["err"] < 2e-4 and without["err"] < 2e-4
    if with_blas["loaded"] is None:
        pytest.skip("OpenBLAS is not installed here (apt install libopenblas0-pthread)")
    for r1, r2 in zip(with_blas["out"], without["out"]):
        assert r1 == pytest.approx(r2, rel=1e-4, abs=1e-4)
