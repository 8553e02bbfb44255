"""Train the toy world's SFT model from scratch (the embedded default model of ``quickstart``).

A Qwen2-shaped model (hidden 128, 4 layers, MLP 384, 4 heads, tied embeddings: ~0.8M
parameters) with a character-level tokenizer, trained on toy solutions with the loss on
solution tokens only, AdamW with warmup + cosine decay, one schedule (re-warming on
resume cost accuracy in the feasibility trial). Greedy accuracy is measured during
training on the validation split of the step range trained on (2-3 or 4-6 steps) and the best
checkpoint by validation accuracy is kept; the test splits are never read here. Rebuild with
``python scripts/train_toy_model.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from mlx_scdpo.toy.world import CHARSET, CHAT_TEMPLATE, SPECIAL, toy_splits

ASSET_DIR = Path(__file__).parent / "assets" / "toy_model"
#: The 4-6-step model: ``ASSET_DIR``'s model trained further on 4-6-step problems.
LONG_ASSET_DIR = Path(__file__).parent / "assets" / "toy_model_long"


@dataclass
class ToySFTArgs:
    out_dir: str = str(ASSET_DIR)
    minutes: float = 60.0
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 200
    steps: int = 4000  # schedule length; training stops at ``minutes`` or ``steps``
    n_train: int = 50000
    n_eval: int = 512  # validation problems per setting (short and long) for checkpoint selection
    min_steps: int = 2
    max_steps: int = 3
    eval_every: int = 400  # the shipped 2-3-step model: these defaults, stopped after step 2400
    seed: int = 0
    init_from: str = ""  # continue from these weights (use warmup_steps=0: re-warming hurt accuracy)


MODEL_CONFIG = dict(
    model_type="qwen2",
    hidden_size=128,
    num_hidden_layers=4,
    intermediate_size=384,
    num_attention_heads=4,
    num_key_value_heads=4,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    torch_dtype="float32",
)


def _byte_symbol() -> dict[int, str]:
    """GPT-2's byte -> printable-unicode map, used by byte-level BPE (space is ``Ġ``, newline ``Ċ``)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def write_tokenizer(out: Path) -> dict:
    """A character-level tokenizer (every digit its own token) as a normal byte-level tokenizer.json.

    It is a byte-level BPE with no merges, so any loader that rebuilds a byte-level
    pipeline around the vocabulary (transformers picks ``Qwen2Tokenizer`` for qwen2 models)
    still yields one token per character. Returns ``{character: id}``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    sym = _byte_symbol()
    chars = {c: i for i, c in enumerate(CHARSET, len(SPECIAL))}
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    vocab.update({sym[ord(c)]: i for c, i in chars.items()})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return {**{t: i for i, t in enumerate(SPECIAL)}, **chars}


def encode_example(vocab: dict, question: str, solution: str) -> tuple[list[int], int]:
    """Token ids of ``Q: question\\n`` + solution + EOS, and the prompt length."""
    prompt = [vocab[c] for c in f"Q: {question}\n"]
    body = [vocab[c] for c in solution] + [vocab["<|im_end|>"]]
    return prompt + body, len(prompt)


def greedy_accuracy(model, tokenizer, problems) -> float:
    """Greedy final-answer accuracy on toy problems (``mlx_scdpo.toy.evaluate``)."""
    from mlx_scdpo.toy.evaluate import evaluate_toy

    return evaluate_toy(model, tokenizer, problems)["accuracy"]


def selection_problems(n_per_setting: int, min_steps: int, max_steps: int) -> dict[str, list]:
    """The validation problems checkpoints are chosen on: the first ``n`` of the validation split
    of every setting inside ``min_steps..max_steps`` (of the range itself if none is). The test
    splits are never read here (``held_out`` returns both; only the validation half is used)."""
    from mlx_scdpo.toy.world import SETTINGS, held_out

    ranges = {name: r for name, r in SETTINGS.items() if min_steps <= r[0] and r[1] <= max_steps}
    ranges = ranges or {f"{min_steps}-{max_steps}": (min_steps, max_steps)}
    return {name: list(held_out(lo, hi)[1][:n_per_setting]) for name, (lo, hi) in ranges.items()}


def train_toy_sft(args: ToySFTArgs, log=print) -> dict:
    from mlx_lm import load
    from mlx_lm.models import qwen2

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out)
    config = {**MODEL_CONFIG, "vocab_size": len(vocab), "eos_token_id": vocab["<|im_end|>"]}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(args.seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    if args.init_from:
        model.load_weights(str(Path(args.init_from) / "model.safetensors"))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    _, tokenizer = load(str(out))
    # Training problems never come from any setting's validation or test split; checkpoints
    # are chosen on validation only, so the test split stays untouched until the final table.
    train = toy_splits(
        args.n_train, 0, 0, min_steps=args.min_steps, max_steps=args.max_steps, seed=args.seed
    ).train
    valid = selection_problems(args.n_eval, args.min_steps, args.max_steps)
    examples = [encode_example(vocab, p.question, p.solution()) for p in train]

    cos = optim.cosine_decay(args.learning_rate, args.steps - args.warmup_steps, args.learning_rate * 0.05)
    if args.warmup_steps:
        warm = optim.linear_schedule(0.0, args.learning_rate, args.warmup_steps)
        cos = optim.join_schedules([warm, cos], [args.warmup_steps])
    optimizer = optim.AdamW(learning_rate=cos, weight_decay=0.01)

    def loss_fn(model, inputs, targets, mask):
        logits = model(inputs)
        ce = nn.losses.cross_entropy(logits, targets, reduction="none") * mask
        return ce.sum() / mask.sum()

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs, targets, mask):
        loss, grads = loss_and_grad(model, inputs, targets, mask)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    best, history, it = -1.0, [], 0
    while it < args.steps and time.perf_counter() - t0 < args.minutes * 60:
        idx = rng.integers(0, len(examples), args.batch_size)
        batch = [examples[i] for i in idx]
        length = max(len(s) for s, _ in batch) - 1
        inputs = np.zeros((len(batch), length), np.int32)
        targets = np.zeros((len(batch), length), np.int32)
        mask = np.zeros((len(batch), length), np.float32)
        for r, (seq, plen) in enumerate(batch):
            inputs[r, : len(seq) - 1] = seq[:-1]
            targets[r, : len(seq) - 1] = seq[1:]
            mask[r, plen - 1 : len(seq) - 1] = 1
        loss = step(mx.array(inputs), mx.array(targets), mx.array(mask))
        mx.eval(state, loss)
        it += 1
        if it % args.eval_every == 0:
            accs = {name: greedy_accuracy(model, tokenizer, probs) for name, probs in valid.items()}
            acc = sum(accs.values()) / len(accs)
            minutes = (time.perf_counter() - t0) / 60
            history.append(
                {
                    "step": it,
                    "minutes": round(minutes, 2),
                    "loss": loss.item(),
                    **{f"valid_accuracy/{k}": v for k, v in accs.items()},
                    "valid_accuracy": acc,
                }
            )
            log(json.dumps(history[-1]))
            if acc > best:
                best = acc
                mx.save_safetensors(
                    str(out / "model.safetensors"),
                    dict(tree_flatten(model.parameters())),
                    metadata={"format": "mlx"},
                )
    (out / "training_log.json").write_text(json.dumps({"args": vars(args), "history": history}, indent=2))
    return {"best_valid_accuracy": best, "steps": it, "history": history}
