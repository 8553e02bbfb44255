"""Build a tiny random model folder that ``mlx_lm.load`` opens.

python scripts/make_tiny_model.py OUT_DIR [--size 5m|50m] [--seed N]
"""

import argparse

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX on Linux)
from mlx_scdpo.toy.tiny_model import SIZES, count_parameters, make_tiny_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", choices=sorted(SIZES), default="5m")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = make_tiny_model(args.out_dir, args.size, args.seed)
    print(f"wrote {path} ({count_parameters(path) / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    main()
