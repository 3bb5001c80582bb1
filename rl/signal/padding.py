"""Left-padded model inputs for batched next-token reads (eval, profile, the signal check)."""

from __future__ import annotations

from typing import Any


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[Any, Any, Any]:
    """Left-padded (input_ids, attention_mask, position_ids); positions count real tokens only,
    so a padded row gives the same last-position logits as the row run alone."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids.to(device), mask.to(device), pos.to(device)
