"""Generation on mlx-lm's BatchGenerator: batched, the sandboxed code loop, the temperature ramp,
and streaming windows with per-item seeds."""
