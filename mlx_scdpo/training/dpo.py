"""DPO losses with TRL's semantics, and per-sequence log-probabilities.

``logits = (log pi(y_c) - log pi(y_r)) - (log ref(y_c) - log ref(y_r))``

* ``sigmoid`` (DPO, Rafailov et al. 2023): ``-(1-ls) log s(beta*logits) - ls log s(-beta*logits)``
  with label smoothing ``ls`` (cDPO);
* ``ipo`` (Azar et al. 2023): ``(logits - 1/(2 beta))^2`` on length-averaged log-probs (as TRL);
* ``hinge`` (SLiC): ``relu(1 - beta*logits)``.

Implicit rewards are ``beta * (log pi - log ref)`` (TRL's ``rewards/chosen`` etc.). An
optional NLL term (TRL's ``rpo_alpha``) adds ``alpha`` times the mean per-token negative
log-likelihood of the chosen responses.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_scdpo.training.logps import DEFAULT_CHUNK, token_logps
from mlx_scdpo.training.shared_prompt import shared_pair_logps

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(
    policy_chosen: mx.array,
    policy_rejected: mx.array,
    ref_chosen: mx.array,
    ref_rejected: mx.array,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
):
    """Per-pair losses and implicit rewards (chosen, rejected); inputs are per-pair log-probs."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        losses = (
            -nn.log_sigmoid(beta * logits) * (1 - label_smoothing)
            - nn.log_sigmoid(-beta * logits) * label_smoothing
        )
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = nn.relu(1 - beta * logits)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r} (choose from {', '.join(LOSS_TYPES)})")
    chosen_rewards = mx.stop_gradient(beta * (policy_chosen - ref_chosen))
    rejected_rewards = mx.stop_gradient(beta * (policy_rejected - ref_rejected))
    return losses, chosen_rewards, rejected_rewards


def pair_logps(model, batch: dict, chunk: int = DEFAULT_CHUNK):
    """Summed response log-probs and response token counts of chosen and rejected rows.

    ``batch`` holds either the shared-prompt arrays (``prompts`` ...; see
    ``mlx_scdpo.training.shared_prompt``) or ``inputs``, ``targets``, ``mask`` of shape (2B, L):
    chosen rows first, then rejected rows, so both sides go through one forward pass.
    ``chunk``: logits computed at once by the LM head (``mlx_scdpo.training.logps``; 0: all).
    """
    if "prompts" in batch:
        return shared_pair_logps(model, batch, chunk)
    lp = token_logps(model, batch["inputs"], batch["targets"], chunk) * batch["mask"]
    sums = lp.sum(axis=-1)
    counts = batch["mask"].sum(axis=-1)
    b = sums.shape[0] // 2
    return sums[:b], sums[b:], counts[:b], counts[b:]


def dpo_objective(
    model,
    batch: dict,
    beta: float,
    loss_type: str,
    label_smoothing: float,
    rpo_alpha: float,
    chunk: int = DEFAULT_CHUNK,
):
    """Mean loss over the batch's pairs and the metrics TRL logs (as MLX scalars)."""
    pc, pr, nc, nr = pair_logps(model, batch, chunk)
    rc, rr = batch["ref_chosen"], batch["ref_rejected"]
    if loss_type == "ipo":  # TRL averages log-probs over response tokens for IPO
        pc_l, pr_l, rc_l, rr_l = pc / nc, pr / nr, rc / nc, rr / nr
    else:
        pc_l, pr_l, rc_l, rr_l = pc, pr, rc, rr
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        pc_l, pr_l, rc_l, rr_l, beta, loss_type, label_smoothing
    )
    w = batch["weight"]  # 0 for padding pairs of an incomplete batch
    # With data parallelism each process holds a shard; ``norm`` is the whole batch's pair count,
    # so summing the processes' losses (and gradients) gives the whole batch's mean.
    n = batch["norm"] if "norm" in batch else mx.maximum(w.sum(), 1.0)
    loss = (losses * w).sum() / n
    if rpo_alpha:
        loss = loss + rpo_alpha * ((-pc / nc) * w).sum() / n
    metrics = {
        "rewards/chosen": (chosen_rewards * w).sum() / n,
        "rewards/rejected": (rejected_rewards * w).sum() / n,
        "rewards/accuracies": ((chosen_rewards > rejected_rewards) * w).sum() / n,
        "rewards/margins": ((chosen_rewards - rejected_rewards) * w).sum() / n,
        "logps/chosen": mx.stop_gradient((pc * w).sum() / n),
        "logps/rejected": mx.stop_gradient((pr * w).sum() / n),
    }
    return loss, metrics
