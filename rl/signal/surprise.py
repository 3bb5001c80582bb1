"""Surprise, as in Titans (Google, arXiv 2501.00663, section 3.1): what actually surprised a model.

Entropy is what the model expects to be uncertain about; surprise is measured against the token
that came. Titans' memory keeps what surprises it: the momentary surprise is the gradient of the
loss, and past surprise carries it forward with momentum eta and decays memory by forgetting alpha:

    S_t = eta * S_{t-1} - theta * grad l_t        M_t = (1 - alpha) * M_{t-1} + S_t

For a language model's own cross-entropy l_t = -log softmax(z_t)[y_t], the gradient with respect
to the logits is softmax(z_t) - onehot(y_t), so its norm has a closed form and needs no backward
pass:  ||softmax(z_t) - onehot(y_t)||_2 = sqrt(sum_v p_v^2 - 2 p_y + 1), in [0, sqrt 2].

`past_surprise` applies the two recursions to these norms (scalars, sign dropped: a magnitude, not
a memory update), restarting at each sequence. There is no official Titans code; the community
reference is lucidrains/titans-pytorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["momentary_surprise", "past_surprise", "surprisal"]


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}: "
                         "targets must have the logits' shape without the vocab dimension")


def surprisal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(y_t) in nats under softmax(logits), per position (float32 or wider)."""
    _check(logits, targets)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return -torch.log_softmax(z, dim=-1).gather(-1, targets.unsqueeze(-1).long()).squeeze(-1)


def momentary_surprise(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """||softmax(z_t) - onehot(y_t)||_2 per position: the norm of the cross-entropy's gradient
    with respect to the logits (closed form; no backward pass)."""
    _check(logits, targets)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    p = torch.softmax(z, dim=-1)
    p_y = p.gather(-1, targets.unsqueeze(-1).long()).squeeze(-1)
    # sum_v (p_v - 1[v=y])^2 = sum p^2 - 2 p_y + 1; clamp the rounding error below zero.
    return ((p * p).sum(-1) - 2 * p_y + 1).clamp_min(0).sqrt()


def past_surprise(momentary: Sequence[float], eta: float = 0.9, alpha: float = 0.0,
                  theta: float = 1.0) -> tuple[list[float], list[float]]:
    """Titans' recursions on one sequence of momentary surprises u_t (S_0 = M_0 = 0):
    S_t = eta S_{t-1} + theta u_t (past surprise) and M_t = (1 - alpha) M_{t-1} + S_t (what the
    memory holds after forgetting). Returns (S, M)."""
    if not 0 <= eta <= 1:
        raise ValueError(f"eta (momentum) must be in [0, 1], got {eta}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (forgetting) must be in [0, 1], got {alpha}")
    s = m = 0.0
    past, memory = [], []
    for u in momentary:
        s = eta * s + theta * float(u)
        m = (1 - alpha) * m + s
        past.append(s)
        memory.append(m)
    return past, memory
