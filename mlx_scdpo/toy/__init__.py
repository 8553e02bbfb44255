"""The offline toy world: its problems, the embedded toy model, its SFT, and ``quickstart``."""
