"""CAFT's loss pieces as plain functions (tensors in, tensors out; no trainer state).

Labels follow TRL's SFT convention: unshifted, `-100` where no loss is taken (prompt, padding).
Head k (1..K) at position t predicts `labels[t + 1 + k]`; head 0 is the model's own next token.
A position counts for head k only when that label exists and belongs to the same sequence: with
packing (position ids restart at each sequence) the target must be exactly 1 + k positions further
in the same sequence, so no head learns across a packing boundary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100


def head_targets(labels: torch.Tensor, k: int, position_ids: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid (B, T) bool, target (B, T) long) for head k (0 = next token): target[t] = labels[t + 1 + k]."""
    shift = 1 + k
    batch, length = labels.shape
    target = torch.full_like(labels, IGNORE)
    if shift < length:
        target[:, :-shift] = labels[:, shift:]
    valid = target != IGNORE
    if position_ids is not None and shift < length:
        pos = position_ids.expand(batch, length) if position_ids.shape[0] == 1 else position_ids
        same = torch.zeros_like(valid)
        same[:, :-shift] = (pos[:, shift:] - pos[:, :-shift]) == shift
        valid = valid & same
    return valid, torch.where(valid, target, torch.zeros_like(target))


def head_ce_sum(hidden: torch.Tensor, lm_head, valid: torch.Tensor, target: torch.Tensor,
                softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed CE, count, top-1 hits) of the LM head over the valid positions only (no full logits tensor);
    `softcap`: the model's final logit soft-cap c (c * tanh(z / c)), as its own next-token logits get."""
    rows = hidden[valid]
    logits = lm_head(rows).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    tgt = target[valid]
    ce = F.cross_entropy(logits, tgt, reduction="sum") if tgt.numel() else logits.sum() * 0.0
    hits = (logits.argmax(-1) == tgt).sum() if tgt.numel() else torch.zeros((), dtype=torch.long,
                                                                              device=hidden.device)
    return ce, valid.sum(), hits


def sine_down(step: int, max_steps: int) -> float:
    """c(s) = sin(pi/2 (S - s) / S): 1 at the first step, 0 at the last (the paper's schedule)."""
    if max_steps <= 0:
        return 1.0
    return math.sin(math.pi / 2 * max(0, max_steps - step) / max_steps)


def head_weights(num_heads: int, decay: float) -> list[float]:
    """decay^k for k = 1..K."""
    return [decay ** k for k in range(1, num_heads + 1)]


def combine(ce0: torch.Tensor, head_terms: list[torch.Tensor], weights: list[float], scale: float,
            include_ce0: bool) -> torch.Tensor:
    """CE_0 (when `include_ce0`) + scale * sum_k weights[k] * term_k; a zero scale adds nothing at all
    (so coefficient 0 is plain SFT bit for bit, even if a head's term were not finite)."""
    total = ce0 if include_ce0 else ce0.detach() * 0.0
    if scale == 0.0:
        return total
    aux = sum(w * t for w, t in zip(weights, head_terms))
    return total + scale * aux
