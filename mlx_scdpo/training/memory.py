"""Peak-memory estimate of a DPO training run, checked before the reference pass.

A run killed by the kernel's OOM killer after a long reference pass loses everything; the
estimate lets ``train`` refuse at once, naming settings that would fit. It is a sum over
what MLX holds at the peak of a training step (``estimate_peak``):

* the weights (their real size once loaded: quantized weights count as such), the
  adapters, their gradients and AdamW's two moments;
* the activations kept for the backward pass, per layer the gradient passes through
  (from the first adapted layer to the last): with gradient checkpointing only each
  layer's input (and the prompt's keys and values), otherwise its MLP activations
  (intermediate size) and a few hidden-sized arrays per token;
* the transient arrays of one layer's backward pass (and, with checkpointing, its
  recomputation), the largest of which are the attention probabilities;
* the logits: one chunk (``--logits-chunk``), or all [positions x vocabulary] without
  chunking;
* the process's fixed share (Python, MLX, tokenizer) and the allocator's slack.

The per-token coefficients are calibrated against peak RSS measured with a random model of
Qwen2.5-0.5B's shape at 512 + 512 tokens (``scripts/bench/memory.py``; docs/performance.md, "Memory at
real lengths"); the estimate is within 25% of those measurements.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, replace

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_scdpo.errors import UserError
from mlx_scdpo.training.logps import DEFAULT_CHUNK
from mlx_scdpo.training.preference_data import bucketed_batches

GB = 1e9

# Per token per layer the gradient passes through, without checkpointing: arrays kept for the
# backward pass (LoRA inputs, norm inputs, the MLP's gate and up). Attention probabilities are
# not kept: MLX's attention recomputes them in its backward pass.
KEEP_HIDDEN = 8  # hidden-sized arrays
KEEP_INTERMEDIATE = 4  # intermediate-sized arrays
# The backward pass of one layer (the larger of the prompt and response passes), transient:
TRANSIENT_SCORES = 3  # attention scores, probabilities, their gradient (heads x queries x keys)
TRANSIENT_INTERMEDIATE = 2  # MLP gradients
LOGITS_ARRAYS = 2  # float32 logits and their gradient (measured: 2.0 at batch 1 without chunks)
PROCESS_GB = 0.30  # Python, MLX, tokenizer, data (measured: a 16 + 16 token run peaks at weights + 0.31 GB)
SLACK = 1.46  # MLX's buffer cache and fragmentation on top of the arrays above (calibrated)


@dataclass
class TrainShape:
    """What the estimate needs of a model: its shape and the bytes of its weights."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    weight_bytes: int
    dtype_bytes: int = 4

    @classmethod
    def from_config(cls, config: dict, dtype_bytes: int = 4, weight_bytes: int | None = None) -> "TrainShape":
        config = {**config.get("text_config", {}), **config}
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or hidden // heads
        inter, vocab = config["intermediate_size"], config["vocab_size"]
        if weight_bytes is None:
            per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * inter + 2 * hidden
            embed = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
            weight_bytes = (layers * per_layer + embed) * dtype_bytes
        return cls(hidden, layers, heads, kv_heads, head_dim, inter, vocab, weight_bytes, dtype_bytes)

    @classmethod
    def from_model(cls, model) -> "TrainShape":
        """From a loaded mlx-lm model: its args for the shape, its arrays for the bytes."""
        args = getattr(model, "args", None)
        config = {
            k: getattr(args, k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "intermediate_size",
                "vocab_size",
                "tie_word_embeddings",
            )
            if hasattr(args, k)
        }
        params = tree_flatten(model.parameters())
        floats = [v for _, v in params if v.dtype.size > 1 and "float" in str(v.dtype)]
        dtype_bytes = max((v.dtype.size for v in floats), default=4)
        if (
            not {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"}
            <= config.keys()
        ):
            return None
        return cls.from_config(config, dtype_bytes, sum(v.nbytes for _, v in params))


@dataclass
class Estimate:
    weights: float
    adapters: float
    activations: float
    transient: float
    logits: float
    process: float

    @property
    def total(self) -> float:
        return (
            self.process
            + self.weights
            + SLACK * (self.adapters + self.activations + self.transient + self.logits)
        )

    def summary(self) -> str:
        """The parts in GB, adding up to the total (the allocator's slack spread over what it applies to)."""
        parts = [
            ("weights", self.weights),
            ("activations", SLACK * (self.activations + self.transient)),
            ("logits", SLACK * self.logits),
            ("adapters+optimizer", SLACK * self.adapters),
            ("process", self.process),
        ]
        return ", ".join(f"{name} {value / GB:.2f}" for name, value in parts)


def _round8(n: int) -> int:
    return -(-n // 8) * 8


def estimate_peak(
    shape: TrainShape, args, prompt_len: int, response_len: int, shared: bool = True
) -> Estimate:
    """Peak bytes of a training step whose longest batch has these prompt and response lengths."""
    b = shape.dtype_bytes
    batch = args.batch_size
    p, r = _round8(prompt_len), _round8(max(response_len - 1, 1)) + 1
    if shared:  # prompts once (B rows), responses twice (2B rows) on top of the prompt's keys and values
        rows = [(batch, p, p), (2 * batch, r, p + r)]
        logit_positions = 2 * batch * r
    else:  # chosen and rejected rows of prompt + response
        rows = [(2 * batch, p + r, p + r)]
        logit_positions = 2 * batch * (p + r)
    tokens = sum(n * q for n, q, _ in rows)
    kv = shape.kv_heads * shape.head_dim
    keep = KEEP_HIDDEN * shape.hidden + KEEP_INTERMEDIATE * shape.intermediate  # per token
    layer_keeps = tokens * keep * b
    n_adapted = shape.layers if args.num_layers == -1 else min(args.num_layers, shape.layers)
    checkpointed = shape.layers if args.grad_checkpoint else min(args.grad_checkpoint_layers, shape.layers)
    # Layers the gradient passes through: the adapted ones (the last ``n_adapted``).
    # Checkpointing covers the first ``checkpointed`` layers of the model.
    n_ckpt = max(0, checkpointed - (shape.layers - n_adapted))
    n_full = n_adapted - n_ckpt
    # A checkpointed layer keeps its input, and (shared prompt) the prompt's keys and values
    # with their chosen + rejected copy.
    ckpt_keeps = (tokens * shape.hidden + (3 * batch * p * 2 * kv if shared else 0)) * b
    activations = n_full * layer_keeps + n_ckpt * ckpt_keeps
    # One layer's backward pass, for its larger pass (prompt or responses); a checkpointed
    # layer first recomputes what an unchecked one keeps.
    transient = 0
    for n, q, k in rows:
        one = (
            TRANSIENT_SCORES * n * shape.heads * q * k + TRANSIENT_INTERMEDIATE * n * q * shape.intermediate
        ) * b
        if n_ckpt:
            one += n * q * keep * b
        transient = max(transient, one)
    chunk = getattr(args, "logits_chunk", 0)
    if chunk and chunk < logit_positions * shape.vocab:
        logits = LOGITS_ARRAYS * chunk * 4  # one chunk at a time
    else:
        logits = LOGITS_ARRAYS * logit_positions * shape.vocab * 4
    if args.fine_tune_type == "full":
        per_layer = (shape.weight_bytes - shape.vocab * shape.hidden * b) / shape.layers
        adapters = n_adapted * per_layer * (1 + 3 * 4 / b)  # gradients and two float32 moments
    else:
        rank = args.lora_rank
        per_layer = rank * (
            2 * (2 * shape.hidden) + 2 * (shape.hidden + kv) + 3 * (shape.hidden + shape.intermediate)
        )
        adapters = n_adapted * per_layer * 4 * 4  # weights, gradients, two moments (float32)
    return Estimate(shape.weight_bytes, adapters, activations, transient, logits, PROCESS_GB * GB)


def machine_memory() -> tuple[float, str]:
    """(bytes, where from): what this process can use, on macOS and Linux."""
    try:
        info = mx.device_info() if hasattr(mx, "device_info") else {}
        working_set = info.get("max_recommended_working_set_size")
        if working_set:  # Apple GPU: beyond this, macOS swaps the model's buffers
            return float(working_set), "the GPU's recommended working set"
    except Exception:  # no Metal device: fall through to the machine's memory
        pass
    if platform.system() == "Darwin":
        out = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().isdigit():
            return float(out.stdout.strip()), "hw.memsize"
    total, source = None, "/proc/meminfo"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit.isdigit() and (total is None or float(limit) < total):
            total, source = float(limit), "the cgroup's memory.max"
    except OSError:
        pass
    if total is None:
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        source = "sysconf"
    return total, source


def fitting_settings(
    shape: TrainShape, args, prompt_len: int, response_len: int, shared: bool, limit: float
) -> tuple[str, float] | None:
    """The first of smaller-batch settings (same pairs per optimizer step) whose estimate fits."""
    pairs_per_step = args.batch_size * args.grad_accumulation_steps
    tried = []
    batch = args.batch_size
    while True:
        for checkpoint in (False, True) if not args.grad_checkpoint else (True,):
            trial = replace(
                args,
                batch_size=batch,
                grad_accumulation_steps=max(1, pairs_per_step // batch),
                grad_checkpoint=checkpoint,
                logits_chunk=args.logits_chunk or DEFAULT_CHUNK,
            )
            tried.append(trial)
        if batch == 1:
            break
        batch = max(1, batch // 2)
    for trial in tried:
        est = estimate_peak(shape, trial, prompt_len, response_len, shared).total
        if est <= limit:
            flags = [f"--batch-size {trial.batch_size}"]
            if trial.grad_accumulation_steps != 1:
                flags.append(f"--grad-accumulation-steps {trial.grad_accumulation_steps}")
            if trial.grad_checkpoint:
                flags.append("--grad-checkpoint")
            if not args.logits_chunk:
                flags.append(f"--logits-chunk {trial.logits_chunk}")
            return " ".join(flags), est
    return None


def batch_lengths(pairs, batch_size: int, seed: int) -> set[tuple[int, int]]:
    """(longest prompt, longest response) of each batch of the first epoch (batches group similar lengths)."""
    out = set()
    for idx in bucketed_batches([p.length for p in pairs], batch_size, seed, 0):
        out.add(
            (
                max(len(pairs[i].prompt) for i in idx),
                max(max(len(pairs[i].chosen), len(pairs[i].rejected)) for i in idx),
            )
        )
    return out


def preflight(model, args, lengths: set[tuple[int, int]], shared: bool, echo=print) -> Estimate | None:
    """Print the estimated peak of the costliest batch; refuse (one line, settings that fit) above the limit."""
    shape = TrainShape.from_model(model)
    if shape is None:
        echo("memory: no estimate for this architecture (its shape is not in model.args)")
        return None
    prompt_len, response_len = max(lengths, key=lambda pr: estimate_peak(shape, args, *pr, shared).total)
    est = estimate_peak(shape, args, prompt_len, response_len, shared)
    limit, source = (
        (args.memory_limit_gb * GB, "--memory-limit-gb")
        if args.memory_limit_gb is not None
        else machine_memory()
    )
    shown = f"{limit / GB:.1f} GB ({source})" if limit else "no limit (--memory-limit-gb 0)"
    if limit and est.total > limit:  # the error line alone (it holds the estimate): one line on stderr
        fit = fitting_settings(shape, args, prompt_len, response_len, shared, limit)
        advice = (
            f"settings that fit: {fit[0]} (estimated {fit[1] / GB:.1f} GB)"
            if fit
            else "even batch 1 with --grad-checkpoint does not fit: lower --max-length or use a smaller or "
            "quantized model"
        )
        raise UserError(
            f"estimated peak memory {est.total / GB:.1f} GB exceeds {limit / GB:.1f} GB ({source}); "
            f"{advice}; --memory-limit-gb overrides"
        )
    echo(
        f"memory: estimated peak memory {est.total / GB:.2f} GB ({est.summary()}) at batch {args.batch_size}, "
        f"prompt {prompt_len} + response {response_len} tokens; limit {shown}"
    )
    return est
