"""Model loading with user-facing errors and CPU-friendly dtypes."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from eval.errors import UserError


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def load_model(model: str, adapter_path: str | None = None):
    """``mlx_lm.load`` with one-line errors; floating weights become float32 on CPU.

    On CPU, bf16/fp16 matmuls are far slower than fp32 (no native half-precision GEMM),
    so the weights are upcast there. Quantized layers are left as they are.
    """
    from mlx_lm import load

    if adapter_path is not None and not (Path(adapter_path) / "adapter_config.json").is_file():
        raise UserError(f"{adapter_path}: no adapter_config.json (not an adapter folder)")
    looks_local = model.startswith((".", "/", "~")) or Path(model).exists()
    if looks_local and not (Path(model).expanduser() / "config.json").is_file():
        raise UserError(f"{model}: no such model folder (expected config.json)")
    try:
        mdl, tokenizer = load(str(Path(model).expanduser()) if looks_local else model, adapter_path=adapter_path)
    except Exception as e:  # hub errors, unsupported architectures, bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{model}: could not load model ({msg})") from None
    if on_cpu():
        mdl.set_dtype(mx.float32)
    return mdl, tokenizer
