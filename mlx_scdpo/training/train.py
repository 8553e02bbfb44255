"""``mlx-scdpo train``: DPO training of LoRA / DoRA adapters (or the last layers) with MLX.

* Reference log-probs come from the frozen base model, computed once before the adapters
  are added and cached on disk (keyed by model, data and tokenization settings); no second
  model is held in memory. ``--reference on-the-fly`` instead recomputes them each step
  with the adapters switched off (LoRA scale 0).
* Each prompt runs once and its (differentiable) KV cache serves both the chosen and the
  rejected response (``mlx_scdpo.training.shared_prompt``); otherwise chosen and rejected rows go
  through the model in one forward pass;
  batches are length-bucketed; the step is compiled (``mx.compile`` over model,
  optimizer and RNG state, as mlx-lm's trainer) with optional gradient accumulation and
  checkpointing; AdamW with linear warmup then cosine decay.
* The LM head and log-softmax run in chunks of positions (``mlx_scdpo.training.logps``); before the
  reference pass a preflight prints the estimated peak memory and refuses a run that would
  not fit (``mlx_scdpo.training.memory``).
* Logs TRL's metric names to the terminal, ``ADAPTER_PATH/metrics.jsonl`` and, with
  ``--report-to wandb``, to Weights & Biases.
* Checkpoints (adapters, optimizer state, step, data position) every ``--save-every``
  steps, written to a fresh folder and swapped in by renames (a kill never leaves a mixed
  one); the RNG is reseeded from (seed, step) each step, so ``--resume`` continues
  exactly where the checkpoint left off. ``--resume`` refuses a checkpoint of other
  settings or data, and rewrites ``metrics.jsonl`` up to the checkpoint's step so each
  step is logged once. A non-finite loss stops training (exit 2). One run per folder (lock).
* Data parallel over processes or Macs with ``mx.distributed`` (``mlx.launch``): each
  process takes every size-th pair of a batch, the processes' gradients are summed (each
  loss is normalized by the whole batch), and rank 0 writes metrics and checkpoints.
* Output: ``adapters.safetensors`` + ``adapter_config.json`` in mlx-lm's format, so
  ``mlx_lm.load(..., adapter_path=...)``, ``mlx_lm.generate --adapter-path`` and
  ``mlx_lm.fuse`` take them unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from tqdm import tqdm

from mlx_scdpo.config import check_values
from mlx_scdpo.errors import UserError
from mlx_scdpo.jsonl import fsync_dir, read_finished, write_jsonl_atomic, write_text_atomic
from mlx_scdpo.models import config_size, config_vocab_size, load_model, set_adapter_scale
from mlx_scdpo.run_state import (
    check_output_folder,
    data_identity,
    folder_lock,
    kill_point,
    model_identity,
    refuse_overwriting,
)
from mlx_scdpo.training.dpo import LOSS_TYPES, dpo_objective, pair_logps
from mlx_scdpo.training.fast_swiglu import use_fast_swiglu
from mlx_scdpo.training.logps import DEFAULT_CHUNK, check_output_head
from mlx_scdpo.training.memory import batch_lengths, preflight
from mlx_scdpo.training.preference_data import (
    TokenizedPair,
    bucketed_batches,
    check_token_ids,
    load_pairs,
    pair_files,
    sequence_arrays,
    tokenize_pair,
    vocab_size,
)
from mlx_scdpo.training.shared_prompt import checkpoint_layers, shared_batch_arrays, supports_shared_prompt

METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


@dataclass
class TrainArgs:
    model: str = field(metadata={"help": "Base (SFT) model folder or hub id; also the reference."})
    data: str = field(metadata={"help": "Folder with train.jsonl [+ valid.jsonl], or one JSONL of pairs."})
    adapter_path: str = field(default="adapters", metadata={"help": "Where adapters and checkpoints go."})
    fine_tune_type: str = field(default="lora", metadata={"help": "lora, dora or full (last --num-layers)."})
    num_layers: int = field(
        default=16, metadata={"help": "Transformer blocks to adapt, from the last (-1: all)."}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_scale: float = field(
        default=20.0, metadata={"help": "LoRA scale (mlx-lm's; PEFT alpha = scale * rank)."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_keys: list | None = field(
        default=None, metadata={"help": "Module keys to adapt (default: mlx-lm's)."}
    )
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid, ipo or hinge."})
    beta: float = field(default=0.1, metadata={"help": "DPO beta (reference 0.1)."})
    label_smoothing: float = field(default=0.0, metadata={"help": "cDPO label smoothing (sigmoid loss)."})
    rpo_alpha: float = field(default=0.0, metadata={"help": "Weight of an NLL term on the chosen responses."})
    reference: str = field(default="precompute", metadata={"help": "precompute (cached) or on-the-fly."})
    ref_cache_dir: str | None = field(
        default=None, metadata={"help": "Reference log-prob cache (default ~/.cache/mlx-scdpo/reference)."}
    )
    iters: int | None = field(default=None, metadata={"help": "Optimizer steps (default: from --epochs)."})
    epochs: float = field(default=1.0, metadata={"help": "Epochs, when --iters is not given."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per micro-batch."})
    grad_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with linear warmup."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int = field(default=1024, metadata={"help": "Longest prompt + response (reference 1024)."})
    max_prompt_length: int = field(default=512, metadata={"help": "Longest prompt, cut from the left (512)."})
    grad_checkpoint: bool = field(
        default=False,
        metadata={
            "help": "Recompute every layer's activations in the backward pass (less memory, more compute)."
        },
    )
    grad_checkpoint_layers: int = field(
        default=0,
        metadata={
            "help": "Recompute only this many layers (from the first): a memory/speed trade in between."
        },
    )
    shared_prompt: bool = field(
        default=True,
        metadata={
            "help": "Run each prompt once for chosen and rejected "
            "(falls back if the architecture is unsupported)."
        },
    )
    logits_chunk: int = field(
        default=DEFAULT_CHUNK,
        metadata={"help": "Logits (positions x vocabulary) the LM head computes at once; 0: all at once."},
    )
    memory_limit_gb: float | None = field(
        default=None,
        metadata={
            "help": "Refuse to start when the estimated peak "
            "memory exceeds this many GB (default: "
            "the machine's memory; 0: no check)."
        },
    )
    fast_swiglu: bool = field(
        default=True,
        metadata={
            "help": "On the CPU backend, SwiGLU with a vectorized sigmoid "
            "and a leaner backward (mlx_scdpo/training/fast_swiglu.py)."
        },
    )
    steps_per_report: int = field(default=10, metadata={"help": "Steps between metric reports."})
    steps_per_eval: int = field(default=100, metadata={"help": "Steps between validations (0: never)."})
    val_batches: int = field(default=8, metadata={"help": "Validation batches (-1: all)."})
    save_every: int = field(default=100, metadata={"help": "Steps between checkpoints."})
    seed: int = field(default=0, metadata={"help": "Data order, LoRA init and dropout seed."})
    resume: bool = field(default=False, metadata={"help": "Continue from ADAPTER_PATH/checkpoint."})
    stop_after: int | None = field(
        default=None,
        metadata={
            "help": "Checkpoint and stop after this many steps of this run (resume later with --resume)."
        },
    )
    report_to: str | None = field(default=None, metadata={"help": "Also log to: wandb."})
    wandb_project: str = field(
        default="mlx-scdpo", metadata={"help": "wandb project (with --report-to wandb)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


# ---------------------------------------------------------------- model setup


def _layers(model):
    return model.layers if hasattr(model, "layers") else model.model.layers


def adapter_config(args: TrainArgs) -> dict:
    lora = {"rank": args.lora_rank, "scale": args.lora_scale, "dropout": args.lora_dropout}
    if args.lora_keys:
        lora["keys"] = list(args.lora_keys)
    return {"fine_tune_type": args.fine_tune_type, "num_layers": args.num_layers, "lora_parameters": lora}


def add_adapters(model, args: TrainArgs) -> None:
    """Freeze the model and add trainable adapters (or unfreeze the last layers)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers  # mlx-lm is heavy: only when adapters are added

    model.freeze()
    n = len(_layers(model)) if args.num_layers == -1 else args.num_layers
    if args.fine_tune_type == "full":
        for layer in _layers(model)[-n:]:
            layer.unfreeze()
    elif args.fine_tune_type in ("lora", "dora"):
        linear_to_lora_layers(
            model, n, adapter_config(args)["lora_parameters"], use_dora=args.fine_tune_type == "dora"
        )
    else:
        raise UserError(f"--fine-tune-type {args.fine_tune_type}: choose lora, dora or full")


# ---------------------------------------------------------------- reference log-probs


def _fingerprint(args: TrainArgs, pairs: list[TokenizedPair], fast_swiglu: bool = False) -> str:
    h = hashlib.sha256()
    model_path = Path(args.model)
    h.update(args.model.encode())
    if fast_swiglu:  # slightly different numerics: its own cache entry
        h.update(b"fast_swiglu")
    if model_path.is_dir():
        for f in sorted(model_path.glob("*.safetensors")) + [model_path / "config.json"]:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for p in pairs:
        h.update(np.asarray(p.prompt + [-1] + p.chosen + [-2] + p.rejected, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def compute_logps(
    model, pairs: list[TokenizedPair], batch_size: int, pad_id: int, shared: bool, chunk: int = DEFAULT_CHUNK
) -> np.ndarray:
    """(N, 2) summed response log-probs (chosen, rejected) of ``model`` for every pair."""
    out = np.zeros((len(pairs), 2), dtype=np.float32)
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        arrays = batch_arrays([pairs[i] for i in idx], pad_id, shared)
        pc, pr, _, _ = pair_logps(model, {k: mx.array(v) for k, v in arrays.items()}, chunk)
        mx.eval(pc, pr)
        out[idx, 0], out[idx, 1] = np.array(pc), np.array(pr)
    return out


def reference_logps(
    model, args: TrainArgs, pairs: list[TokenizedPair], pad_id: int, shared: bool, fast_swiglu: bool = False
) -> np.ndarray:
    """Cached reference log-probs of the frozen base model."""
    cache_dir = Path(args.ref_cache_dir or Path.home() / ".cache" / "mlx-scdpo" / "reference")
    path = cache_dir / f"{_fingerprint(args, pairs, fast_swiglu)}{'-shared' if shared else ''}.npy"
    if path.is_file():
        return np.load(path)
    logps = compute_logps(model, pairs, args.batch_size, pad_id, shared, args.logits_chunk)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, logps)
    tmp.replace(path)
    return logps


# ---------------------------------------------------------------- training


def batch_arrays(pairs: list[TokenizedPair], pad_id: int, shared: bool) -> dict:
    return shared_batch_arrays(pairs, pad_id) if shared else sequence_arrays(pairs, pad_id)


def response_tokens(batch: dict) -> int:
    return int(batch["response_mask" if "prompts" in batch else "mask"].sum().item())


def make_batch(
    pairs, ref, idx, batch_size, pad_id, shared: bool = False, rank: int = 0, size: int = 1
) -> dict:
    """Arrays for one batch, padded to ``batch_size`` pairs (weight 0); this process's shard of it."""
    batch_size = min(
        batch_size, len(pairs)
    )  # padding beyond the data adds nothing (and --batch-size may be huge)
    weight = np.ones(len(idx), dtype=np.float32)
    if len(idx) < batch_size:  # pad to a fixed batch size: one compiled shape per length
        extra = batch_size - len(idx)
        weight = np.concatenate([weight, np.zeros(extra, dtype=np.float32)])
        idx = list(idx) + [idx[0]] * extra
    norm = max(float(weight.sum()), 1.0)
    idx, weight = list(idx)[rank::size], weight[rank::size]
    batch = {k: mx.array(v) for k, v in batch_arrays([pairs[i] for i in idx], pad_id, shared).items()}
    batch["weight"] = mx.array(weight)
    if size > 1:
        batch["norm"] = mx.array(norm)
    if ref is not None:
        batch["ref_chosen"] = mx.array(ref[idx, 0])
        batch["ref_rejected"] = mx.array(ref[idx, 1])
    return batch


def lr_schedule(args: TrainArgs, total_steps: int):
    warmup = int(round(args.warmup_ratio * total_steps))
    cosine = optim.cosine_decay(args.learning_rate, max(total_steps - warmup, 1), 0.0)
    if warmup == 0:
        return cosine
    return optim.join_schedules([optim.linear_schedule(0.0, args.learning_rate, warmup), cosine], [warmup])


CHECKPOINT = "checkpoint"


def _write_safetensors(path: Path, arrays: dict) -> None:
    mx.save_safetensors(str(path), arrays)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _save_adapters(model, args: TrainArgs, out: Path) -> None:
    """adapters.safetensors + adapter_config.json, each replaced atomically."""
    weights = dict(tree_flatten(model.trainable_parameters()))
    tmp = out / ".adapters.tmp.safetensors"
    _write_safetensors(tmp, weights)
    os.replace(tmp, out / "adapters.safetensors")
    config = {**adapter_config(args), "model": args.model, "train_args": asdict(args)}
    write_text_atomic(out / "adapter_config.json", json.dumps(config, indent=2))


def save_checkpoint(model, optimizer, args: TrainArgs, step: int, data_pos: dict, identity: dict) -> None:
    """Adapters, optimizer and state written to a fresh folder, then swapped in by renames.

    A kill at any moment leaves ``checkpoint`` (complete) or, between the two renames,
    ``checkpoint.prev`` (complete, the one before), which ``load_checkpoint`` falls back to.
    """
    out = Path(args.adapter_path)
    ckpt, prev, tmp = out / CHECKPOINT, out / f"{CHECKPOINT}.prev", out / f"{CHECKPOINT}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _write_safetensors(tmp / "adapters.safetensors", dict(tree_flatten(model.trainable_parameters())))
    kill_point("checkpoint-files")
    _write_safetensors(tmp / "optimizer.safetensors", dict(tree_flatten(optimizer.state)))
    write_text_atomic(tmp / "state.json", json.dumps({"step": step, **data_pos, "run": identity}))
    fsync_dir(tmp)
    if ckpt.exists():
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(ckpt, prev)
    kill_point("checkpoint-swap")
    os.replace(tmp, ckpt)
    fsync_dir(out)
    if prev.exists():
        shutil.rmtree(prev)
    _save_adapters(model, args, out)


def _read_checkpoint(ckpt: Path) -> tuple[dict, dict, dict]:
    """(state, adapter weights, optimizer arrays) of one checkpoint folder; ValueError if damaged."""
    try:
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        weights = mx.load(str(ckpt / "adapters.safetensors"))
        opt = mx.load(str(ckpt / "optimizer.safetensors"))
    except Exception as e:  # missing, truncated, not JSON / safetensors
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    counts = [state.get(k) for k in ("step", "epoch", "batch")] if isinstance(state, dict) else [None]
    if (
        not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        or not weights
        or not opt
    ):
        raise ValueError("incomplete state")
    return state, weights, opt


def load_checkpoint(model, optimizer, args: TrainArgs, identity: dict) -> tuple[int, dict]:
    """Restore the newest complete checkpoint (``checkpoint``, else ``checkpoint.prev``).

    Refuses, with one line, a checkpoint of a different run (another rank, data, rate...)
    and a folder with no complete checkpoint.
    """
    out = Path(args.adapter_path)
    found, problems = None, []
    for ckpt in (out / CHECKPOINT, out / f"{CHECKPOINT}.prev"):
        if not ckpt.exists():
            continue
        try:
            found = (ckpt, *_read_checkpoint(ckpt))
            break
        except ValueError as e:
            problems.append(f"{ckpt.name}: {e}")
    if found is None:
        why = f" ({'; '.join(problems)})" if problems else ""
        raise UserError(f"{out / CHECKPOINT}: no complete checkpoint to resume from{why}")
    ckpt, state, weights, opt = found
    old = state.pop("run", None)
    if old is not None:
        diff = [k for k in identity if old.get(k) != identity[k]]
        if diff:
            shown = ", ".join(f"{k} ({old.get(k)!r} then, {identity[k]!r} now)" for k in diff[:3])
            raise UserError(f"{ckpt}: --resume with different settings: {shown}")
    try:
        model.load_weights(list(weights.items()), strict=False)
        optimizer.state = tree_unflatten(list(opt.items()))
    except ValueError as e:
        raise UserError(f"{ckpt}: does not fit this model ({str(e).splitlines()[0]})") from None
    return state.pop("step"), state


def resume_identity(args: TrainArgs, data_hash: str) -> dict:
    """What a resumed run must share with its checkpoint: model, data and every setting that shapes it."""
    skip = (
        "resume",
        "stop_after",
        "progress",
        "report_to",
        "wandb_project",
        "adapter_path",
        "ref_cache_dir",
        "steps_per_report",
        "steps_per_eval",
        "val_batches",
        "save_every",
        "grad_checkpoint",
        "grad_checkpoint_layers",
        "reference",
        "logits_chunk",  # the same gradients (tested)
        "memory_limit_gb",
    )
    settings = {k: v for k, v in asdict(args).items() if k not in skip}
    return {**settings, "model": model_identity(args.model), "data": data_hash}


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records up to ``step`` in the run's own metrics log (a resumed run logs the rest once)."""
    if not path.exists():
        return
    rows = [r for r in read_finished(path, None) if isinstance(r.get("step"), int) and r["step"] <= step]
    write_jsonl_atomic(path, rows)


def _log(path: Path, record: dict, run=None) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if run is not None:
        run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def _start_reporting(args: TrainArgs):
    if args.report_to in (None, "", "none"):
        return None
    if args.report_to != "wandb":
        raise UserError(f"--report-to {args.report_to}: only wandb is supported")
    try:
        import wandb
    except ImportError:
        raise UserError("--report-to wandb: the wandb package is not installed (pip install wandb)") from None
    return wandb.init(
        project=args.wandb_project, config=asdict(args), resume="allow" if args.resume else None
    )


def evaluate(model, pairs, ref, args: TrainArgs, pad_id: int, on_the_fly: bool, shared: bool) -> dict:
    batches = bucketed_batches([p.length for p in pairs], args.batch_size, args.seed, 0)
    if args.val_batches != -1:
        batches = batches[: args.val_batches]
    sums: dict[str, float] = {}
    for idx in batches:
        batch = make_batch(pairs, ref, idx, args.batch_size, pad_id, shared)
        if on_the_fly:
            _add_reference(model, batch, args.logits_chunk)
        loss, metrics = dpo_objective(
            model, batch, args.beta, args.loss_type, args.label_smoothing, args.rpo_alpha, args.logits_chunk
        )
        for k, v in {"loss": loss, **metrics}.items():
            sums[k] = sums.get(k, 0.0) + v.item()
    return {f"eval/{k}": v / max(len(batches), 1) for k, v in sums.items()}


def _add_reference(model, batch: dict, chunk: int = DEFAULT_CHUNK) -> None:
    saved = set_adapter_scale(model, 0.0)
    rc, rr, _, _ = pair_logps(model, batch, chunk)
    set_adapter_scale(model, None, saved)
    batch["ref_chosen"], batch["ref_rejected"] = mx.stop_gradient(rc), mx.stop_gradient(rr)


def run_train(args: TrainArgs, on_report=None) -> dict:
    """Train; returns the last reported metrics. ``on_report(record)`` sees every report."""
    with ExitStack() as stack:  # undoes the process-wide patches (checkpointing, fast SwiGLU)
        return _run_train(args, on_report, stack)


def _run_train(args: TrainArgs, on_report, stack: ExitStack) -> dict:
    _check_settings(args)
    world = mx.distributed.init()
    rank, size = world.rank(), world.size()
    train_rows, valid_rows, files, identity = _check_data(args, size)
    if rank == 0:  # one run per adapter folder
        stack.enter_context(folder_lock(args.adapter_path, "train"))
    model, tokenizer = load_model(args.model)
    for rows, f in zip((train_rows, valid_rows), files):
        check_token_ids(rows, vocab_size(model), f)
    check_output_head(model)  # an output transform we do not reproduce: refused before any work
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tok = partial(
        tokenize_pair, tokenizer, max_length=args.max_length, max_prompt_length=args.max_prompt_length
    )
    train, valid = [tok(r) for r in train_rows], [tok(r) for r in valid_rows]
    # Entered before the reference pass, so reference and policy use the same numerics.
    fast = stack.enter_context(use_fast_swiglu(model, args.fast_swiglu))
    shared = args.shared_prompt and supports_shared_prompt(model)
    if args.shared_prompt and not shared and rank == 0:
        print(
            f"shared prompt: not supported by model type {getattr(model, 'model_type', '?')} (its forward "
            f"differs with a prompt cache); chosen and rejected run as whole sequences"
        )  # stderr: errors only
    if train:  # before the reference pass: a run that cannot fit stops now, not at its first step
        _preflight(model, args, train, shared, rank, size)
    on_the_fly = args.reference == "on-the-fly"
    data = _Pairs(
        train,
        valid,
        pad_id,
        shared,
        on_the_fly,
        ref_train=None if on_the_fly else reference_logps(model, args, train, pad_id, shared, fast),
        ref_valid=None
        if on_the_fly or not valid
        else reference_logps(model, args, valid, pad_id, shared, fast),
    )

    mx.random.seed(args.seed)
    add_adapters(model, args)
    n_checkpointed = -1 if args.grad_checkpoint else args.grad_checkpoint_layers
    if n_checkpointed:  # patches the layer class; undone after training
        stack.callback(
            setattr, type(_layers(model)[0]), "__call__", checkpoint_layers(_layers(model), n_checkpointed)
        )
    micro_per_epoch = math.ceil(len(train) / args.batch_size)
    total = args.iters or max(1, int(args.epochs * micro_per_epoch / args.grad_accumulation_steps))
    optimizer = optim.AdamW(learning_rate=lr_schedule(args, total), weight_decay=args.weight_decay)
    step, data_pos = _start(model, optimizer, args, identity, rank)
    run = None
    if rank == 0:
        write_text_atomic(Path(args.adapter_path) / "train_config.json", json.dumps(asdict(args), indent=2))
        run = _start_reporting(args)
    return _train_loop(
        model, optimizer, args, data, total, step, data_pos, identity, run, on_report, rank, size
    )


def _check_settings(args: TrainArgs) -> None:
    """The settings alone (before any file is read)."""
    check_values(args)
    if args.ref_cache_dir is not None:
        check_output_folder(args.ref_cache_dir, "--ref-cache-dir")
    if args.loss_type not in LOSS_TYPES:
        raise UserError(f"--loss-type {args.loss_type}: choose from {', '.join(LOSS_TYPES)}")
    if args.reference not in ("precompute", "on-the-fly"):
        raise UserError(f"--reference {args.reference}: choose precompute or on-the-fly")
    if args.reference == "on-the-fly" and args.fine_tune_type == "full":
        raise UserError("--reference on-the-fly needs adapters (lora/dora), not full fine-tuning")


def _check_data(args: TrainArgs, size: int):
    """(train rows, valid rows, their files, the run's identity), checked against the model's config
    (before the model loads)."""
    if args.batch_size % size:
        raise UserError(f"--batch-size {args.batch_size} must be divisible by the {size} processes")
    train_rows, valid_rows = load_pairs(args.data)
    files = pair_files(args.data)
    identity = resume_identity(args, data_identity(*files))
    for rows, f in zip((train_rows, valid_rows), files):  # from config.json: before the model loads
        check_token_ids(rows, config_vocab_size(args.model) or 2**63, f)
    if args.lora_rank > (config_size(args.model, "hidden_size") or args.lora_rank):
        raise UserError(
            f"--lora-rank {args.lora_rank}: above the model's hidden size "
            f"{config_size(args.model, 'hidden_size')}"
        )
    if (
        args.ref_cache_dir is not None
        and Path(args.ref_cache_dir).exists()
        and not Path(args.ref_cache_dir).is_dir()
    ):
        raise UserError(f"--ref-cache-dir {args.ref_cache_dir}: exists and is not a folder")
    refuse_overwriting(
        files,
        args.adapter_path,
        ("metrics.jsonl", "train_config.json", "adapter_config.json", "adapters.safetensors"),
    )
    return train_rows, valid_rows, files, identity


def _preflight(
    model, args: TrainArgs, train: list[TokenizedPair], shared: bool, rank: int, size: int
) -> None:
    """Print the estimated peak memory; refuse a run that would not fit (``mlx_scdpo.training.memory``)."""
    # stdout, with the training reports: stderr carries only errors (one line each)
    echo = (lambda line: print(line, flush=True)) if rank == 0 else (lambda line: None)
    # A batch never holds more pairs than the data has (--batch-size beyond the data trains on all of it).
    preflight(
        model,
        replace(args, batch_size=max(1, min(args.batch_size, len(train)) // size)),
        batch_lengths(train, args.batch_size, args.seed),
        shared,
        echo,
    )


@dataclass
class _Pairs:
    """The tokenized pairs of a run and how they go through the model."""

    train: list[TokenizedPair]
    valid: list[TokenizedPair]
    pad_id: int
    shared: bool  # one prompt pass for chosen and rejected (mlx_scdpo.training.shared_prompt)
    on_the_fly: bool  # reference log-probs recomputed each step (adapters off)
    ref_train: np.ndarray | None = None
    ref_valid: np.ndarray | None = None


def _start(model, optimizer, args: TrainArgs, identity: dict, rank: int) -> tuple[int, dict]:
    """(step, data position) to start from: the checkpoint's with ``--resume``, else a fresh folder."""
    out = Path(args.adapter_path)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    step, data_pos = 0, {"epoch": 0, "batch": 0}
    if args.resume:
        optimizer.init(model.trainable_parameters())
        step, data_pos = load_checkpoint(model, optimizer, args, identity)
        if rank == 0:
            truncate_metrics(metrics_path, step)
    elif rank == 0:  # a fresh start: the folder's metrics and checkpoints are this run's only
        metrics_path.unlink(missing_ok=True)
        for name in (CHECKPOINT, f"{CHECKPOINT}.prev", f"{CHECKPOINT}.tmp"):
            if (out / name).exists():
                shutil.rmtree(out / name)
    return step, data_pos


def _compile_micro_step(model, optimizer, args: TrainArgs, size: int):
    """(micro_step, state): one compiled forward/backward (and, on the last micro-batch, the update)."""

    def loss_fn(model, batch):
        return dpo_objective(
            model, batch, args.beta, args.loss_type, args.label_smoothing, args.rpo_alpha, args.logits_chunk
        )

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def micro_step(batch, prev_grad, do_update):
        (loss, metrics), grad = loss_and_grad(model, batch)
        if size > 1:  # each process's loss is its shard's part of the batch mean: sum them
            grad = tree_map(lambda g: g * size, nn.average_gradients(grad))
            loss = mx.distributed.all_sum(loss)
            metrics = {k: mx.distributed.all_sum(v) for k, v in metrics.items()}
        if prev_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, prev_grad)
        if do_update:
            if args.grad_accumulation_steps > 1:
                grad = tree_map(lambda g: g / args.grad_accumulation_steps, grad)
            optimizer.update(model, grad)
            grad = None
        return loss, metrics, grad

    return micro_step, state


def _train_loop(
    model,
    optimizer,
    args: TrainArgs,
    data: _Pairs,
    total: int,
    step: int,
    data_pos: dict,
    identity: dict,
    run,
    on_report,
    rank: int,
    size: int,
) -> dict:
    """Optimizer steps from ``step`` to the end (or ``--stop-after``): reports, validation, checkpoints."""
    micro_step, state = _compile_micro_step(model, optimizer, args, size)
    train, shared, pad_id = data.train, data.shared, data.pad_id
    metrics_path = Path(args.adapter_path) / "metrics.jsonl"
    model.train()
    bar = tqdm(total=total, initial=step, desc="dpo", unit="step", disable=not (args.progress and rank == 0))
    epoch, pos = data_pos["epoch"], data_pos["batch"]
    batches = bucketed_batches([p.length for p in train], args.batch_size, args.seed, epoch)
    sums, n_reports, tokens, t0, last = {}, 0, 0, time.perf_counter(), {}
    grad = None
    mx.reset_peak_memory()
    end = total if args.stop_after is None else min(total, step + args.stop_after)
    while step < end:
        # Dropout randomness is a function of (seed, step): a resumed run draws the same.
        mx.random.seed(args.seed * 1_000_003 + step)
        for micro in range(args.grad_accumulation_steps):
            if pos >= len(batches):
                epoch, pos = epoch + 1, 0
                batches = bucketed_batches([p.length for p in train], args.batch_size, args.seed, epoch)
            batch = make_batch(
                train, data.ref_train, batches[pos], args.batch_size, pad_id, shared, rank, size
            )
            pos += 1
            if data.on_the_fly:
                _add_reference(model, batch, args.logits_chunk)
            do_update = micro == args.grad_accumulation_steps - 1
            loss, metrics, grad = micro_step(batch, grad, do_update)
            mx.eval(state, loss, metrics, grad)
            tokens += response_tokens(batch) * size
            if not math.isfinite(loss.item()):
                bar.close()
                raise UserError(
                    f"step {step + 1}: the loss is {loss.item()}; training stopped, nothing written "
                    f"for this step (lower --learning-rate, check the pairs)"
                )
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            n_reports += 1
        step += 1
        bar.update(1)
        if step % args.steps_per_report == 0 or step == total:
            elapsed = time.perf_counter() - t0
            last = {
                "step": step,
                "epoch": epoch + pos / max(len(batches), 1),
                **{k: v / n_reports for k, v in sums.items()},
                "learning_rate": float(optimizer.learning_rate.item()),
                "tokens_per_second": tokens / max(elapsed, 1e-9),
                "peak_memory_gb": mx.get_peak_memory() / 1e9,
            }
            if rank == 0:
                _log(metrics_path, last, run)
            if on_report is not None:
                on_report(last)
            bar.set_postfix(
                loss=f"{last['loss']:.4f}",
                acc=f"{last['rewards/accuracies']:.2f}",
                margin=f"{last['rewards/margins']:.3f}",
            )
            sums, n_reports, tokens, t0 = {}, 0, 0, time.perf_counter()
        if data.valid and args.steps_per_eval and (step % args.steps_per_eval == 0 or step == total):
            model.eval()
            record = {
                "step": step,
                **evaluate(model, data.valid, data.ref_valid, args, pad_id, data.on_the_fly, shared),
            }
            model.train()
            if rank == 0:
                _log(metrics_path, record, run)
            last.update(record)
        if (step % args.save_every == 0 or step == end) and rank == 0:
            save_checkpoint(model, optimizer, args, step, {"epoch": epoch, "batch": pos}, identity)
    bar.close()
    if run is not None:
        run.finish()
    return last
