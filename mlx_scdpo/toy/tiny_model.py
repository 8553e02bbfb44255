"""Tiny random models that ``mlx_lm.load`` opens: for tests and benchmarks, no downloads.

A Qwen2-shaped model (``mlx_lm.models.qwen2``) with random weights and a byte-level BPE
tokenizer trained locally with ``tokenizers`` on a built-in math corpus, saved as an
ordinary model folder (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json`` with a ChatML chat template). MLX, mlx-lm and ``tokenizers`` are
imported inside the functions: they are heavy, and most importers only want a path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SIZES = {
    # ~4.8M parameters: fast enough for every test.
    "5m": dict(
        hidden_size=256,
        num_hidden_layers=6,
        intermediate_size=688,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
    ),
    # ~48M parameters: the benchmark size.
    "50m": dict(
        hidden_size=512,
        num_hidden_layers=12,
        intermediate_size=2048,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=1024,
    ),
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus(seed: int, n: int = 3000) -> list[str]:
    """Arithmetic word problems, LaTeX answers and code: covers the symbols benchmarks use."""
    rng = random.Random(seed)
    words = [
        "apples",
        "students",
        "dollars",
        "minutes",
        "eggs",
        "books",
        "cookies",
        "miles",
        "each",
        "total",
        "How",
        "many",
        "much",
        "does",
        "she",
        "he",
        "they",
        "have",
        "left",
        "after",
        "buys",
        "sells",
    ]
    lines = []
    for _ in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 99)
        op = rng.choice("+-*/")
        w = " ".join(rng.choice(words) for _ in range(4))
        lines.append(
            f"Question: {w} {a} {op} {b}?\nAnswer: {a} {op} {b} = {a + b}. The answer is \\boxed{{{a + b}}}."
        )
        lines.append(f"$\\frac{{{a}}}{{{b}}}$, $\\sqrt{{{b}}}$, $x^{{{b % 5}}} + \\pi$, (1, 2], #### {a}")
        lines.append(f"```python\nx = {a} {op} {b}\nprint(x)\n```\n```output\n{a}\n```")
    return lines


def train_tokenizer(out_dir: Path, vocab_size: int, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def make_tiny_model(out_dir: str | Path, size: str = "5m", seed: int = 0) -> Path:
    """Write a random Qwen2-shaped model folder to ``out_dir`` and return its path."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = SIZES[size]
    train_tokenizer(out, shape["vocab_size"], seed)
    from tokenizers import Tokenizer

    eos_id = Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id("<|im_end|>")
    config = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        **shape,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }
    mx.random.seed(seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    # Larger embeddings make the random model less degenerate (varied greedy outputs).
    params = [
        (k, v * 2.0 if k.endswith("embed_tokens.weight") else v) for k, v in tree_flatten(model.parameters())
    ]
    mx.save_safetensors(str(out / "model.safetensors"), dict(params), metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def count_parameters(path: str | Path) -> int:
    import mlx.core as mx

    return sum(v.size for v in mx.load(str(Path(path) / "model.safetensors")).values())
