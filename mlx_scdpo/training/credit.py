"""Credit assignment: per-token implicit rewards ``beta * (log pi_theta - log pi_ref)``.

The paper (SCDPO, Sec. 5) shows these as token background colours; here they are also
measured. ``pi_ref`` is the same model with its LoRA adapters switched off (scale 0), so
one model in memory serves both. On toy pairs, where the first wrong step of a rejected
solution is known, ``negative_share_after_error`` is the share of the rejected side's
negative reward mass that falls on the first wrong step and after it: a model that
assigns credit precisely puts its negative reward there rather than on the correct
steps before it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from eval.errors import UserError
from mlx_scdpo.training.logps import check_output_head, token_logps


@dataclass
class TokenRewards:
    tokens: list[str]
    rewards: list[float]


def response_rewards(
    model, prompt_ids: list[int], response_ids: list[int], beta: float, decode
) -> TokenRewards:
    """Implicit reward of every response token (policy vs adapters-off reference)."""
    from mlx_scdpo.models import set_adapter_scale

    seq = prompt_ids + response_ids
    inputs, targets = mx.array([seq[:-1]]), mx.array([seq[1:]])
    policy = token_logps(model, inputs, targets)
    saved = set_adapter_scale(model, 0.0)
    ref = token_logps(model, inputs, targets)
    set_adapter_scale(model, None, saved)
    r = (beta * (policy - ref))[0, len(prompt_ids) - 1 :]
    mx.eval(r)
    return TokenRewards([decode([t]) for t in response_ids], np.array(r).tolist())


def negative_share_after(rewards: TokenRewards, start_char: int) -> float | None:
    """Share of negative reward mass on tokens starting at or after character ``start_char``."""
    pos, total, after = 0, 0.0, 0.0
    for tok, r in zip(rewards.tokens, rewards.rewards):
        if r < 0:
            total += -r
            if pos >= start_char:
                after += -r
        pos += len(tok)
    return after / total if total > 0 else None


def _colour(r: float, scale: float) -> tuple[int, int, int]:
    x = max(-1.0, min(1.0, r / scale)) if scale > 0 else 0.0
    if x < 0:
        return 255, int(255 * (1 + x)), int(255 * (1 + x))
    return int(255 * (1 - x)), 255, int(255 * (1 - x))


def to_html(rows: list[tuple[str, TokenRewards]], title: str = "Per-token implicit reward") -> str:
    """A heatmap: red = negative reward, green = positive (scaled to the largest magnitude)."""
    scale = max((abs(r) for _, tr in rows for r in tr.rewards), default=1.0) or 1.0
    parts = [f"<h3>{html.escape(title)}</h3>"]
    for label, tr in rows:
        spans = []
        for tok, r in zip(tr.tokens, tr.rewards):
            rgb = "rgb(%d,%d,%d)" % _colour(r, scale)
            text = html.escape(tok).replace("\n", "&#8629;<br>")
            spans.append(f'<span title="{r:+.4f}" style="background:{rgb}">{text}</span>')
        parts.append(f"<p><b>{html.escape(label)}</b><br><code>{''.join(spans)}</code></p>")
    return "\n".join(parts)


def to_terminal(tr: TokenRewards) -> str:
    scale = max((abs(r) for r in tr.rewards), default=1.0) or 1.0
    out = []
    for tok, r in zip(tr.tokens, tr.rewards):
        red, green, blue = _colour(r, scale)
        out.append(f"\x1b[48;2;{red};{green};{blue}m\x1b[30m{tok}\x1b[0m")
    return "".join(out)


def toy_error_start(pair: dict) -> int | None:
    """Character offset in the rejected response where its first wrong toy step begins."""
    from mlx_scdpo.toy.world import first_wrong_step, parse_question

    problem = parse_question(pair.get("question", ""))
    if problem is None:
        return None
    prefix = pair.get("prefix", "")
    full = prefix + pair["rejected"]
    step = first_wrong_step(problem, full)
    if step is None:
        return None
    lines = full.split("\n")
    start = sum(len(line) + 1 for line in lines[: step - 1]) - len(prefix)
    return max(start, 0)


def read_credit_pairs(path: str) -> list[dict]:
    """Pairs with token ids, read strictly (an empty or bad file is one ``UserError``)."""
    from mlx_scdpo.jsonl import PAIR_IDS_SCHEMA, PAIR_OPTIONAL, read_records

    pairs = read_records(
        path, PAIR_IDS_SCHEMA, {**PAIR_OPTIONAL, "rejected": str, "question": str, "prefix": str}
    )
    for i, p in enumerate(pairs, 1):
        for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
            if not p[k]:
                raise UserError(f"{path}:{i}: field '{k}' is empty")
    return pairs


def credit_report(model, tokenizer, pairs: list[dict], beta: float) -> dict:
    """Per-pair token rewards and, where the first wrong step is known, the share after it."""
    check_output_head(model)
    shares, rendered = [], []
    for pair in pairs:
        chosen = response_rewards(model, pair["prompt_ids"], pair["chosen_ids"], beta, tokenizer.decode)
        rejected = response_rewards(model, pair["prompt_ids"], pair["rejected_ids"], beta, tokenizer.decode)
        start = toy_error_start(pair)
        share = negative_share_after(rejected, start) if start is not None else None
        if share is not None:
            shares.append(share)
        rendered.append((pair, chosen, rejected, share))
    return {
        "pairs": rendered,
        "mean_negative_share_after_error": float(np.mean(shares)) if shares else None,
        "n_measured": len(shares),
    }
