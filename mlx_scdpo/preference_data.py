"""Preference data for DPO: loading, tokenization in token space, masks, batches.

Tokenization (TRL's ``DPOTrainer`` conventions, done in token space so the prompt /
response boundary is exact):

* the prompt (question + any step-controlled prefix) and each response are tokenized
  separately and concatenated; pairs that carry ``prompt_ids`` / ``chosen_ids`` /
  ``rejected_ids`` (from ``mlx-scdpo sample``) use them as they are;
* conversational pairs (lists of messages) go through the chat template: the prompt with
  the generation prompt, each response as the rest of the rendered conversation;
* EOS is appended to a response once (not if it already ends with it);
* if prompt + the longer response exceeds ``max_length``, the prompt is cut from the left to
  ``max_prompt_length``, then responses are cut to fit (TRL's ``keep_end`` for prompts);
* only response tokens are scored: ``mask[t] = 1`` where ``targets[t]`` is a response token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.errors import UserError
from mlx_scdpo.jsonl import read_finished


@dataclass
class TokenizedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


def load_pairs(data: str) -> tuple[list[dict], list[dict]]:
    """(train, valid) pairs from a folder with train.jsonl [+ valid.jsonl] or one JSONL file."""
    path = Path(data)
    if path.is_dir():
        train_path, valid_path = path / "train.jsonl", path / "valid.jsonl"
        if not train_path.is_file():
            raise UserError(f"{path}: no train.jsonl in this folder")
        files = [train_path] + ([valid_path] if valid_path.is_file() else [])
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{data}: no such file or folder")
    splits = []
    for f in files:
        rows = read_finished(f, None)
        for i, row in enumerate(rows, 1):
            for field in ("prompt", "chosen", "rejected"):
                if field not in row:
                    raise UserError(f"{f}:{i}: field '{field}' is missing")
                if not isinstance(row[field], (str, list)):
                    raise UserError(f"{f}:{i}: field '{field}' must be text or a list of messages")
        splits.append(rows)
    if not splits[0]:
        raise UserError(f"{files[0]}: no pairs")
    return splits[0], (splits[1] if len(splits) > 1 else [])


def _with_eos(ids: list[int], eos: int) -> list[int]:
    return ids if ids and ids[-1] == eos else ids + [eos]


def _encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def tokenize_pair(tokenizer, pair: dict, max_length: int = 1024, max_prompt_length: int = 512) -> TokenizedPair:
    """Token ids of one pair (see module docstring)."""
    eos = tokenizer.eos_token_id
    if all(k in pair for k in ("prompt_ids", "chosen_ids", "rejected_ids")):
        prompt, chosen, rejected = list(pair["prompt_ids"]), list(pair["chosen_ids"]), list(pair["rejected_ids"])
    elif isinstance(pair["prompt"], list):
        prompt_text = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
        full = lambda side: tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)  # noqa: E731
        prompt = _encode_text(tokenizer, prompt_text)
        responses = []
        for side in ("chosen", "rejected"):
            text = full(side)
            if not text.startswith(prompt_text):
                raise UserError("the chat template renders the prompt differently inside the conversation")
            responses.append(_encode_text(tokenizer, text[len(prompt_text):].rstrip("\n")))
        chosen, rejected = responses
    else:
        prompt = tokenizer.encode(pair["prompt"])
        chosen, rejected = _encode_text(tokenizer, pair["chosen"]), _encode_text(tokenizer, pair["rejected"])
    chosen, rejected = _with_eos(chosen, eos), _with_eos(rejected, eos)
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest > max_length:
        prompt = prompt[-max_prompt_length:]
    room = max(max_length - len(prompt), 1)
    return TokenizedPair(prompt, chosen[:room], rejected[:room])


def sequence_arrays(pairs: list[TokenizedPair], pad_id: int = 0, pad_to_multiple: int = 8) -> dict:
    """Model inputs for a batch: (2B, L) ``inputs``, ``targets``, ``mask``; chosen rows first.

    ``inputs = seq[:-1]``, ``targets = seq[1:]``, ``mask`` is 1 on response targets only.
    """
    rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    length = max(len(a) + len(b) for a, b in rows) - 1
    length = -(-length // pad_to_multiple) * pad_to_multiple
    inputs = np.full((len(rows), length), pad_id, dtype=np.int32)
    targets = np.full((len(rows), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=np.float32)
    for i, (prompt, response) in enumerate(rows):
        seq = prompt + response
        n = len(seq) - 1
        inputs[i, :n] = seq[:-1]
        targets[i, :n] = seq[1:]
        mask[i, len(prompt) - 1 : n] = 1.0
    return {"inputs": inputs, "targets": targets, "mask": mask}


def bucketed_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Index batches of similar lengths; the batch order is shuffled per epoch with ``seed``.

    Sorting by length keeps padding small; shuffling the batches (and ties within a
    length) keeps the order random across epochs.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches
