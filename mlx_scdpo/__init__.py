"""Step-Controlled DPO (SCDPO) for Apple MLX.

Importing the package first makes MLX fast on Linux CPUs (see ``mlx_scdpo.blas``);
it does not import MLX itself.
"""

from mlx_scdpo.blas import preload_openblas

preload_openblas()

__version__ = "0.1.0"
