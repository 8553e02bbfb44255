"""Export mlx-lm LoRA adapters to Hugging Face PEFT format (for PyTorch / GPU clusters).

mlx-lm stores ``<module>.lora_a`` with shape (in, r) and ``<module>.lora_b`` (r, out) and
computes ``y = W x + scale * (x A) B``. PEFT stores ``lora_A.weight`` (r, in) and
``lora_B.weight`` (out, r) and scales by ``lora_alpha / r``; so A and B are transposed,
``lora_alpha = scale * r``, and keys gain PEFT's ``base_model.model.`` prefix. When only
some blocks were adapted (``num_layers``), ``layers_to_transform`` lists them (with
``layers_pattern``), as PEFT's ``LoraConfig`` takes them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_scdpo.errors import UserError
from mlx_scdpo.models import read_adapters


def peft_state_dict(weights: dict) -> dict:
    """PEFT-named, transposed LoRA tensors from mlx-lm adapter weights."""
    out = {}
    for name, w in weights.items():
        module, leaf = name.rsplit(".", 1)
        if leaf not in ("lora_a", "lora_b"):
            raise UserError(f"{name}: only LoRA adapters can be exported to PEFT (not DoRA or full weights)")
        peft_leaf = "lora_A" if leaf == "lora_a" else "lora_B"
        out[f"base_model.model.{module}.{peft_leaf}.weight"] = np.ascontiguousarray(np.array(w).T)
    return out


def export_peft(adapter_path: str, out_dir: str, base_model: str | None = None) -> int:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder (--peft takes an output folder)")
    if out.is_dir() and Path(adapter_path).is_dir() and os.path.samefile(out, adapter_path):
        raise UserError(
            f"{out_dir}: is the adapter folder itself; export to another folder (inputs are never changed)"
        )
    config, weights = read_adapters(adapter_path)
    if config.get("fine_tune_type", "lora") != "lora":
        raise UserError(
            f"{adapter_path}: fine_tune_type {config['fine_tune_type']} cannot be exported to PEFT LoRA"
        )
    lora = config["lora_parameters"]
    tensors = peft_state_dict({k: v.astype(mx.float32) for k, v in weights.items()})
    ranks = {
        (v.shape[0] if k.endswith("lora_A.weight") else v.shape[1]) if v.ndim == 2 else -1
        for k, v in tensors.items()
    }  # A is (r, in), B is (out, r)
    if not tensors or ranks != {lora["rank"]}:  # a PEFT config with another r would load silently wrong
        raise UserError(
            f"{adapter_path}: adapters.safetensors holds LoRA rank(s) {sorted(ranks)}, "
            f"adapter_config.json says {lora['rank']}"
        )
    targets = sorted({k.split(".")[-3] for k in tensors})
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora["rank"],
        "lora_alpha": lora["scale"] * lora["rank"],
        "lora_dropout": lora.get("dropout", 0.0),
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "base_model_name_or_path": base_model or config.get("model"),
        "inference_mode": True,
    }
    layers = sorted({int(m.group(1)) for k in tensors if (m := re.search(r"\.layers\.(\d+)\.", k))})
    if config.get("num_layers", -1) != -1 and layers:
        # Only the last --num-layers blocks were adapted: without this PEFT adds LoRA to every layer.
        peft_config["layers_to_transform"] = layers
        peft_config["layers_pattern"] = "layers"
    out.mkdir(parents=True, exist_ok=True)
    # Each file written aside and renamed: a kill never leaves a half-written adapter to be uploaded.
    mx.save_safetensors(
        str(out / ".adapter_model.tmp.safetensors"),
        {k: mx.array(v) for k, v in tensors.items()},
        metadata={"format": "pt"},
    )
    (out / ".adapter_config.json.tmp").write_text(json.dumps(peft_config, indent=2))
    os.replace(out / ".adapter_model.tmp.safetensors", out / "adapter_model.safetensors")
    os.replace(out / ".adapter_config.json.tmp", out / "adapter_config.json")
    return len(tensors) // 2
