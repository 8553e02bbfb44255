"""Model loading with user-facing errors and CPU-friendly dtypes."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import mlx.core as mx

from mlx_scdpo.errors import UserError


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def read_adapters(adapter_path: str) -> tuple[dict, dict]:
    """(adapter_config, weights) of an adapter folder; a missing, damaged or foreign one is a ``UserError``."""
    src = Path(adapter_path)
    if not (src / "adapter_config.json").is_file() or not (src / "adapters.safetensors").is_file():
        raise UserError(f"{adapter_path}: not an adapter folder (adapter_config.json, adapters.safetensors)")
    try:
        config = json.loads((src / "adapter_config.json").read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{src / 'adapter_config.json'}: damaged (not JSON)") from None
    lora = config.get("lora_parameters") if isinstance(config, dict) else None
    rank, scale = (lora.get("rank"), lora.get("scale")) if isinstance(lora, dict) else (None, None)
    if (
        not (isinstance(rank, int) and not isinstance(rank, bool) and 0 < rank < 2**31)
        or isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
    ):
        raise UserError(
            f"{src / 'adapter_config.json'}: field 'lora_parameters' needs rank (a positive integer) "
            f"and scale (a number)"
        )
    if config.get("fine_tune_type", "lora") not in ("lora", "dora", "full"):
        raise UserError(f"{src / 'adapter_config.json'}: field 'fine_tune_type' must be lora, dora or full")
    if not isinstance(config.get("num_layers"), int):
        raise UserError(f"{src / 'adapter_config.json'}: field 'num_layers' is missing or not an integer")
    try:
        weights = mx.load(str(src / "adapters.safetensors"))
    except Exception as e:  # truncated or not safetensors: mlx raises a bare RuntimeError/ValueError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{src / 'adapters.safetensors'}: damaged ({msg})") from None
    if not weights:
        raise UserError(f"{src / 'adapters.safetensors'}: holds no tensors")
    return config, weights


def _local_config(model: str) -> dict:
    """A local model folder's config.json (empty for hub ids, or when absent, damaged or not a
    regular file: a FIFO there must not hang the read; loading reports those)."""
    path = Path(model).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def config_size(model: str, key: str = "vocab_size") -> int | None:
    """A size in a local model folder's config.json (``vocab_size``, ``hidden_size``; None for hub ids
    or when absent), so token ids and options can be checked before the model loads."""
    config = _local_config(model)
    text_config = config.get("text_config")
    size = config.get(key) or (text_config.get(key) if isinstance(text_config, dict) else None)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def config_vocab_size(model: str) -> int | None:
    """The vocabulary size in a local model folder's config.json (see ``config_size``)."""
    return config_size(model, "vocab_size")


def _refuse_special_files(folder: Path) -> None:
    """A FIFO or device among a model's files would hang or flood the loader: one line instead."""
    for f in folder.iterdir():
        try:
            mode = f.stat().st_mode
        except OSError:  # a broken link: the loader reports it if it needs the file
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UserError(f"{f}: not a regular file (a FIFO, socket or device in the model folder)")


# Far beyond any released model (the largest have ~200 layers, hidden 2^14-2^15, vocab ~2.6e5): a
# config.json past these is damaged, and building it would hang or exhaust memory before failing.
_SIZE_LIMITS = {
    "num_hidden_layers": 4096,
    "hidden_size": 1 << 17,
    "intermediate_size": 1 << 20,
    "vocab_size": 1 << 24,
    "num_attention_heads": 4096,
    "num_key_value_heads": 4096,
}


def _refuse_absurd_sizes(model: str) -> None:
    """One line for a config.json whose sizes no model has (``num_hidden_layers: 10**12`` hung the loader)."""
    for key, limit in _SIZE_LIMITS.items():
        size = config_size(model, key)
        if size is not None and size > limit:
            raise UserError(
                f"{Path(model).expanduser() / 'config.json'}: field '{key}' is {size}, beyond any "
                f"model ({limit}); the file looks damaged"
            )


def load_model(model: str, adapter_path: str | None = None):
    """``mlx_lm.load`` with one-line errors; floating weights become float32 on CPU.

    On CPU, bf16/fp16 matmuls are far slower than fp32 (no native half-precision GEMM),
    so the weights are upcast there. Quantized layers are left as they are.
    """
    from mlx_lm import load  # heavy (transformers): only when a model loads

    if adapter_path is not None:
        read_adapters(adapter_path)  # a damaged adapter folder is named as such, not as a bad model
    looks_local = model.startswith((".", "/", "~")) or Path(model).exists()
    if looks_local and not (Path(model).expanduser() / "config.json").is_file():
        raise UserError(f"{model}: no such model folder (expected config.json)")
    if looks_local:
        _refuse_special_files(Path(model).expanduser())
        _refuse_absurd_sizes(model)
    try:
        mdl, tokenizer = load(
            str(Path(model).expanduser()) if looks_local else model, adapter_path=adapter_path
        )
    except Exception as e:  # hub errors, unsupported architectures, bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{model}: could not load model ({msg})") from None
    if on_cpu():
        mdl.set_dtype(mx.float32)
    return mdl, tokenizer


def _base_magnitude(module) -> mx.array:
    """The magnitude a DoRA layer starts from (mlx-lm's ``set_linear`` / ``set_embedding``): the norms of
    the frozen weight's rows, with which it computes exactly the base layer when its adapter is off."""
    if hasattr(module, "linear"):
        return mx.linalg.norm(module._dequantized_weight().astype(mx.float32), axis=1)
    return mx.linalg.norm(module.embedding.weight, axis=1)


def set_adapter_scale(model, scale: float | None, saved: dict | None = None) -> dict:
    """Set every LoRA/DoRA layer's scale (0 switches adapters off); ``None`` restores ``saved``.

    Scale 0 alone leaves a DoRA layer at ``m / ||W|| * W x`` with its trained magnitude
    ``m``: not the base model. So while adapters are off a DoRA layer also gets its base
    magnitude back, and the trained one is restored with the scale.
    Returns the old (scale, magnitude) of each layer.
    """
    saved = saved if saved is not None else {}
    for name, module in model.named_modules():
        if not (hasattr(module, "lora_a") and hasattr(module, "scale")):
            continue
        dora = "m" in module
        if scale is None:
            module.scale, m = saved[name]
            if dora:
                module.m = m
            continue
        saved.setdefault(name, (module.scale, module.m if dora else None))
        module.scale = scale
        if dora:
            module.m = _base_magnitude(module) if scale == 0 else saved[name][1]
    return saved
