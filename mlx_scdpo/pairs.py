"""Preference pairs in TRL's standard format, and ``build-pairs`` (mix, shuffle, split).

A pair is one JSON object with TRL's columns ``prompt``, ``chosen``, ``rejected`` (plain
text; ``prompt`` ends where the two responses start to differ in origin: the question
prompt, plus the kept steps for step-controlled pairs) and metadata:

* ``problem_id``, ``source`` (``"naive"`` or ``"step_control"``), ``k`` (kept steps),
  ``temperatures`` (one per generated step of the rejected side), ``round``;
* ``prompt_ids``, ``chosen_ids``, ``rejected_ids``: token ids as sampled, so training
  masks line up exactly (``prompt_ids + chosen_ids`` is the chosen sequence).

``--conversational`` writes TRL's conversational form instead: ``prompt`` is the user
message, ``chosen`` / ``rejected`` are one assistant message each holding the kept steps
followed by the response (TRL cannot continue a partial assistant turn, so the shared
prefix moves into both responses; token ids are left out because they no longer match).
"""

from __future__ import annotations

import random
from pathlib import Path

from eval.errors import UserError
from mlx_scdpo.jsonl import read_finished, write_jsonl_atomic

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def make_pair(record: dict, *, prefix_text: str, prefix_ids: list[int], chosen: dict, rejected: dict, source: str,
              k: int, temperatures: list[float], round: int) -> dict:
    """A pair from a problem record, the kept prefix and the two responses (``text`` + ``ids``)."""
    return {
        "prompt": record["prompt"] + prefix_text,
        "chosen": chosen["text"],
        "rejected": rejected["text"],
        "problem_id": record["problem_id"],
        "source": source,
        "k": k,
        "temperatures": temperatures,
        "round": round,
        "question": record["question"],
        "prefix": prefix_text,
        "gold": record["gold"],
        "prompt_ids": record["prompt_ids"] + prefix_ids,
        "chosen_ids": chosen["ids"],
        "rejected_ids": rejected["ids"],
    }


def to_conversational(pair: dict) -> dict:
    prefix = pair.get("prefix", "")
    out = {k: v for k, v in pair.items() if not k.endswith("_ids")}
    out["prompt"] = [{"role": "user", "content": pair["question"]}]
    out["chosen"] = [{"role": "assistant", "content": prefix + pair["chosen"]}]
    out["rejected"] = [{"role": "assistant", "content": prefix + pair["rejected"]}]
    return out


def build_pairs(inputs: list[str], output_dir: str, valid_fraction: float = 0.01, seed: int = 0,
                conversational: bool = False, max_naive: int | None = None) -> dict:
    """Mix pair files, shuffle with ``seed``, hold out ``valid_fraction``; write train/valid JSONL.

    ``max_naive`` keeps at most that many naive pairs (the paper's "data-equal" control
    uses as many naive pairs as SCDPO has pairs in total).
    """
    pairs = []
    for path in inputs:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
        rows = read_finished(path, None)
        for i, row in enumerate(rows, 1):
            for f in PAIR_FIELDS:
                if f not in row:
                    raise UserError(f"{path}:{i}: field '{f}' is missing")
        pairs.extend(rows)
    if not pairs:
        raise UserError(f"{', '.join(inputs)}: no pairs")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    if max_naive is not None:
        kept, n = [], 0
        for p in pairs:
            if p.get("source") == "naive":
                if n >= max_naive:
                    continue
                n += 1
            kept.append(p)
        pairs = kept
    if conversational:
        pairs = [to_conversational(p) for p in pairs]
    n_valid = max(1, round(len(pairs) * valid_fraction)) if len(pairs) > 1 and valid_fraction > 0 else 0
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "valid.jsonl", pairs[:n_valid])
    write_jsonl_atomic(out / "train.jsonl", pairs[n_valid:])
    by_source = {}
    for p in pairs:
        by_source[p.get("source", "unknown")] = by_source.get(p.get("source", "unknown"), 0) + 1
    return {"train": len(pairs) - n_valid, "valid": n_valid, "by_source": by_source}
