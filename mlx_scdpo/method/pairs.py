"""Preference pairs in TRL's standard format, and ``build-pairs`` (mix, shuffle, split).

A pair is one JSON object with TRL's columns ``prompt``, ``chosen``, ``rejected`` (plain
text; ``prompt`` ends where the two responses start to differ in origin: the question
prompt, plus the kept steps for step-controlled pairs) and metadata:

* ``problem_id``, ``source`` (``"naive"`` or ``"step_control"``), ``k`` (kept steps),
  ``temperatures`` (one per generated step of the rejected side), ``round``;
* ``prompt_ids``, ``chosen_ids``, ``rejected_ids``: token ids as sampled, so training
  masks line up exactly (``prompt_ids + chosen_ids`` is the chosen sequence);
* ``chosen_finish_reason``, ``rejected_finish_reason``: how each side's generation ended
  ("stop", or a truncation: "length", "max_rounds"). Training appends EOS only to a side
  that stopped (``mlx_scdpo.training.preference_data``): a cut-off response never learns to end there.

``--conversational`` writes TRL's conversational form instead: ``prompt`` is the user
message, ``chosen`` / ``rejected`` are one assistant message each holding the kept steps
followed by the response (TRL cannot continue a partial assistant turn, so the shared
prefix moves into both responses; token ids are left out because they no longer match).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from mlx_scdpo.errors import UserError
from mlx_scdpo.jsonl import (
    PAIR_OPTIONAL,
    PAIR_SCHEMA,
    fsync_dir,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)
from mlx_scdpo.run_state import file_digest, folder_lock, kill_point

#: Finish reasons of a response cut off before its end (token budget, code-execution budget).
TRUNCATED = ("length", "max_rounds")


def is_truncated(sample: dict) -> bool:
    return sample.get("finish_reason") in TRUNCATED


def make_pair(
    record: dict,
    *,
    prefix_text: str,
    prefix_ids: list[int],
    chosen: dict,
    rejected: dict,
    source: str,
    k: int,
    temperatures: list[float],
    round: int,
) -> dict:
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
        "chosen_finish_reason": chosen.get("finish_reason"),
        "rejected_finish_reason": rejected.get("finish_reason"),
    }


def to_conversational(pair: dict) -> dict:
    prefix = pair.get("prefix", "")
    out = {k: v for k, v in pair.items() if not k.endswith("_ids")}
    out["prompt"] = [{"role": "user", "content": pair["question"]}]
    out["chosen"] = [{"role": "assistant", "content": prefix + pair["chosen"]}]
    out["rejected"] = [{"role": "assistant", "content": prefix + pair["rejected"]}]
    return out


SPLITS = ("train.jsonl", "valid.jsonl")
SWAP_NAME = ".pairs-swap.json"  # present while train.jsonl and valid.jsonl are being replaced
MANIFEST_NAME = "pairs_manifest.json"


def _staged(out: Path, name: str) -> Path:
    return out / f".{name}.new"


def finish_swap(out: Path) -> None:
    """Complete (roll forward) a replacement of train/valid that was committed but cut short."""
    marker = out / SWAP_NAME
    if marker.is_file():
        for name in SPLITS:
            if _staged(out, name).exists():
                os.replace(_staged(out, name), out / name)
        os.replace(marker, out / MANIFEST_NAME)
        fsync_dir(out)
    for name in SPLITS:  # staged but never committed: discard
        _staged(out, name).unlink(missing_ok=True)


def check_not_mid_swap(folder: Path) -> None:
    """Readers refuse a folder whose train/valid replacement was cut short (they never repair inputs)."""
    if (folder / SWAP_NAME).is_file():
        raise UserError(f"{folder}: build-pairs was interrupted while replacing train/valid; run it again")


def _write_splits(out: Path, splits: dict[str, list], manifest: dict) -> None:
    """Replace train.jsonl and valid.jsonl together: both staged, then one commit marker, then the renames."""
    for name, rows in splits.items():
        write_jsonl_atomic(_staged(out, name), rows)
    fsync_dir(out)
    marker = out / SWAP_NAME
    write_json_atomic(marker, manifest)  # the commit point: from here a rerun rolls forward
    fsync_dir(out)
    for i, name in enumerate(SPLITS):
        if i:
            kill_point("build-pairs-swap")
        os.replace(_staged(out, name), out / name)
    os.replace(marker, out / MANIFEST_NAME)
    fsync_dir(out)


def refuse_overwriting_inputs(inputs, outputs) -> None:
    """Inputs are never written: an output that is one of them (the same file, by any path or link)
    is one line."""
    for o in outputs:
        for i in inputs:
            if Path(o).exists() and Path(i).exists() and os.path.samefile(i, o):
                raise UserError(
                    f"{i}: is also an output ({o}); write to another folder (inputs are never changed)"
                )


def build_pairs(
    inputs: list[str],
    output_dir: str,
    valid_fraction: float = 0.01,
    seed: int = 0,
    conversational: bool = False,
    max_naive: int | None = None,
) -> dict:
    """Mix pair files, shuffle with ``seed``, hold out ``valid_fraction``; write train/valid JSONL.

    ``max_naive`` keeps at most that many naive pairs (the paper's "data-equal" control
    uses as many naive pairs as SCDPO has pairs in total). train.jsonl and valid.jsonl
    are replaced together (a kill never leaves one new beside one old).
    """
    if not 0 <= valid_fraction < 1:
        raise UserError(f"--valid-fraction {valid_fraction}: must be at least 0 and below 1")
    if max_naive is not None and max_naive < 0:
        raise UserError(f"--max-naive {max_naive}: must be 0 or more")
    schema = {**PAIR_SCHEMA, "question": str} if conversational else PAIR_SCHEMA
    for i, a in enumerate(inputs):  # one file twice would put the same pairs in train and in valid
        for b in inputs[:i]:
            if Path(a).exists() and Path(b).exists() and os.path.samefile(a, b):
                raise UserError(f"{a}: given twice (also as {b}); its pairs would be in train and valid")
    pairs = []
    for path in inputs:
        pairs.extend(read_records(path, schema, PAIR_OPTIONAL))
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
    if not pairs:
        raise UserError(f"{', '.join(inputs)}: no pairs left (--max-naive {max_naive})")
    if conversational:
        pairs = [to_conversational(p) for p in pairs]
    n_valid = max(1, round(len(pairs) * valid_fraction)) if len(pairs) > 1 and valid_fraction > 0 else 0
    n_valid = min(n_valid, len(pairs) - 1)
    out = Path(output_dir)
    refuse_overwriting_inputs(inputs, [out / name for name in SPLITS])
    with folder_lock(out, "build-pairs"):
        finish_swap(out)
        manifest = {
            "inputs": {str(p): file_digest(p) for p in inputs},
            "valid_fraction": valid_fraction,
            "seed": seed,
            "conversational": conversational,
            "max_naive": max_naive,
        }
        _write_splits(out, {"valid.jsonl": pairs[:n_valid], "train.jsonl": pairs[n_valid:]}, manifest)
    by_source = {}
    for p in pairs:
        by_source[p.get("source", "unknown")] = by_source.get(p.get("source", "unknown"), 0) + 1
    return {"train": len(pairs) - n_valid, "valid": n_valid, "by_source": by_source}
