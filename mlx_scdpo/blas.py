"""Load Debian's OpenBLAS before MLX on Linux.

The ``mlx-cpu`` wheel resolves ``cblas_sgemm`` & co. from whatever BLAS the process has
loaded; without one it falls back to a slow reference BLAS (an order of magnitude slower
fp32 matmuls; measured in docs/performance.md). Loading
``libopenblas.so.0`` with ``RTLD_GLOBAL`` before ``mlx.core`` is imported makes MLX bind to
it. Opt out with ``MLX_SCDPO_NO_OPENBLAS=1``. On macOS MLX uses Accelerate: nothing to do.
"""

from __future__ import annotations

import ctypes
import os
import sys

OPT_OUT_ENV = "MLX_SCDPO_NO_OPENBLAS"
_CANDIDATES = (
    "libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)
loaded_path: str | None = None


def preload_openblas() -> str | None:
    """Load OpenBLAS globally if on Linux, present, not opted out and MLX not yet imported.

    Returns the library loaded, or None.
    """
    global loaded_path
    if loaded_path is not None:
        return loaded_path
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT_ENV, "") not in ("", "0"):
        return None
    if "mlx.core" in sys.modules:  # too late: MLX already bound its BLAS symbols
        return None
    for name in _CANDIDATES:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        loaded_path = name
        return name
    return None


def set_openblas_threads(n: int) -> bool:
    """Limit the preloaded OpenBLAS to ``n`` threads (at run time; True if it was loaded here).

    For processes that run side by side on few cores: the toy model's matrices are too small
    for two threads to share one matmul well (``scripts/toy_experiment.py --jobs``).
    """
    if loaded_path is None:
        return False
    ctypes.CDLL(loaded_path, mode=ctypes.RTLD_GLOBAL).openblas_set_num_threads(n)
    return True
