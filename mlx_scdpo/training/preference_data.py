"""Preference data for DPO: loading, tokenization in token space, masks, batches.

Tokenization (TRL's ``DPOTrainer`` conventions, done in token space so the prompt /
response boundary is exact):

* the prompt (question + any step-controlled prefix) and each response are tokenized
  separately and concatenated; pairs that carry ``prompt_ids`` / ``chosen_ids`` /
  ``rejected_ids`` (from ``mlx-scdpo sample``) use them as they are;
* conversational pairs (lists of messages) go through the chat template: the prompt with
  the generation prompt, each response as the rest of the rendered conversation;
* EOS is appended to a response once (not if it already ends with it), unless the pair
  marks that side as truncated (``chosen_finish_reason`` / ``rejected_finish_reason`` is
  "length" or "max_rounds"): a response cut off by the token budget did not end, and an EOS
  would teach that stopping mid-sentence is how such answers end;
* if prompt + the longer response exceeds ``max_length``, the prompt is cut from the left to
  ``max_prompt_length``, then responses are cut to fit (TRL's ``keep_end`` for prompts);
* only response tokens are scored: ``mask[t] = 1`` where ``targets[t]`` is a response token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlx_scdpo.errors import UserError
from mlx_scdpo.jsonl import PAIR_OPTIONAL, PAIR_SCHEMA, read_records
from mlx_scdpo.method.pairs import TRUNCATED, check_not_mid_swap

PAIR_IDS = ("prompt_ids", "chosen_ids", "rejected_ids")


@dataclass
class TokenizedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


def pair_files(data: str) -> list[Path]:
    """train.jsonl [+ valid.jsonl] of a pairs folder, or the one pairs file."""
    path = Path(data)
    if path.is_dir():
        check_not_mid_swap(path)
        train_path, valid_path = path / "train.jsonl", path / "valid.jsonl"
        if not train_path.is_file():
            raise UserError(f"{path}: no train.jsonl in this folder")
        files = [train_path] + ([valid_path] if valid_path.is_file() else [])
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{data}: no such file or folder")
    return files


def load_pairs(data: str) -> tuple[list[dict], list[dict]]:
    """(train, valid) pairs from a folder with train.jsonl [+ valid.jsonl] or one JSONL file.

    Read strictly (one ``UserError`` naming file, line and field for any bad line); the
    files are never written.
    """
    files = pair_files(data)
    splits = [
        read_records(f, PAIR_SCHEMA, PAIR_OPTIONAL, numbered=True, allow_empty=i > 0)
        for i, f in enumerate(files)
    ]
    for f, rows in zip(files, splits):
        for lineno, row in rows:
            if any(k in row for k in PAIR_IDS) and not all(isinstance(row.get(k), list) for k in PAIR_IDS):
                raise UserError(f"{f}:{lineno}: pairs with token ids need all of {', '.join(PAIR_IDS)}")
            if len({isinstance(row[k], list) for k in ("prompt", "chosen", "rejected")}) > 1:
                raise UserError(
                    f"{f}:{lineno}: fields 'prompt', 'chosen', 'rejected' must all be text or all be "
                    f"lists of messages"
                )
            for k in ("chosen", "rejected"):  # TRL's conversational form: responses are assistant turns
                if isinstance(row[k], list) and any(m["role"] != "assistant" for m in row[k]):
                    raise UserError(f"{f}:{lineno}: field '{k}' must hold assistant messages only")
            if "prompt_ids" in row and not row["prompt_ids"]:
                raise UserError(f"{f}:{lineno}: field 'prompt_ids' is empty")
    return [r for _, r in splits[0]], ([r for _, r in splits[1]] if len(splits) > 1 else [])


def check_token_ids(pairs: list[dict], vocab_size: int, source) -> None:
    """Token ids must exist in the model's vocabulary (ids from another tokenizer train to NaN).

    Inputs have no blank lines, so pair i is line i of ``source``.
    """
    for i, row in enumerate(pairs, 1):
        for k in PAIR_IDS:
            ids = row.get(k)
            if ids and max(ids) >= vocab_size:
                raise UserError(
                    f"{source}:{i}: field '{k}' has token id {max(ids)}, beyond the model's "
                    f"vocabulary of {vocab_size} (pairs from another tokenizer?)"
                )


def check_solution_ids(records: list[dict], vocab_size: int | None, source) -> None:
    """Token ids of ``solutions.jsonl`` records (prompt and samples) must exist in the model's vocabulary."""
    if vocab_size is None:
        return
    for i, rec in enumerate(records, 1):
        top = max([*rec["prompt_ids"], *(t for s in rec["samples"] for t in s["ids"])], default=-1)
        if top >= vocab_size:
            raise UserError(
                f"{source}:{i}: token id {top} is beyond the model's vocabulary of {vocab_size} "
                f"(solutions from another tokenizer?)"
            )


def vocab_size(model) -> int:
    """Rows of the model's embedding (token ids must be below it)."""
    args = getattr(model, "args", None)
    if getattr(args, "vocab_size", None):
        return int(args.vocab_size)
    return int(model.model.embed_tokens.weight.shape[0])


def _with_eos(ids: list[int], eos: int) -> list[int]:
    return ids if ids and ids[-1] == eos else ids + [eos]


def _encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _truncated(pair: dict, side: str) -> bool:
    return pair.get(f"{side}_finish_reason") in TRUNCATED


def tokenize_pair(
    tokenizer, pair: dict, max_length: int = 1024, max_prompt_length: int = 512
) -> TokenizedPair:
    """Token ids of one pair (see module docstring)."""
    eos = tokenizer.eos_token_id
    if all(k in pair for k in ("prompt_ids", "chosen_ids", "rejected_ids")):
        prompt, chosen, rejected = (
            list(pair["prompt_ids"]),
            list(pair["chosen_ids"]),
            list(pair["rejected_ids"]),
        )
    elif isinstance(pair["prompt"], list):
        prompt_text = tokenizer.apply_chat_template(
            pair["prompt"], add_generation_prompt=True, tokenize=False
        )
        full = lambda side: tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)  # noqa: E731
        prompt = _encode_text(tokenizer, prompt_text)
        responses = []
        for side in ("chosen", "rejected"):
            text = full(side)
            if not text.startswith(prompt_text):
                raise UserError("the chat template renders the prompt differently inside the conversation")
            response = text[len(prompt_text) :].rstrip("\n")
            content = pair[side][-1].get("content") if pair[side] else None
            if _truncated(pair, side) and isinstance(content, str) and response.startswith(content):
                response = content  # no end-of-turn marker after a cut-off response
            responses.append(_encode_text(tokenizer, response))
        chosen, rejected = responses
    else:
        prompt = tokenizer.encode(pair["prompt"])
        chosen, rejected = _encode_text(tokenizer, pair["chosen"]), _encode_text(tokenizer, pair["rejected"])
    if not _truncated(pair, "chosen"):
        chosen = _with_eos(chosen, eos)
    if not _truncated(pair, "rejected"):
        rejected = _with_eos(rejected, eos)
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
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches
