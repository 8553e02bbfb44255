"""Rebuild the embedded toy SFT model (``mlx_scdpo/toy/assets/toy_model``).

    python scripts/train_toy_model.py [--minutes 30] [--out-dir DIR] [--seed 0]

Prints greedy validation accuracy every ``--eval-every`` steps and keeps the best checkpoint.
"""

import argparse
from dataclasses import fields

import mlx_scdpo  # noqa: F401  (OpenBLAS before MLX)
from mlx_scdpo.toy.sft import ToySFTArgs, train_toy_sft


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(ToySFTArgs):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = ToySFTArgs(**vars(ap.parse_args()))
    result = train_toy_sft(args)
    print(
        f"best greedy validation accuracy {result['best_valid_accuracy']:.3f} after {result['steps']} steps"
    )


if __name__ == "__main__":
    main()
