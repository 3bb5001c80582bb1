"""Loss variants: how each of TRL's loss types normalises, and what the forking mask may do with it.

One registry entry per TRL `loss_type` (modelled on verl's `agg_loss` / `@register_policy_loss`):
the kind of denominator TRL 1.16's `GRPOTrainer._compute_loss` divides sum(per_token_loss x mask)
by, the loss weights that turn that into an average over the kept (forking) tokens
(`entropy_mask_normalize: kept`, paper Eq. 6), and whether the selective LM head may run (it may
not when the loss reads every token's log-ratio). `rl.train.forking.loss_weights` and
`EntropyGRPOTrainer` read only this table; tests/test_trl_contract.py fails by name when TRL's
loss types and this table differ.

To add a variant TRL gained: `register_loss("name", denominator=..., selective_head=...)` below,
with the denominator TRL uses for it; tests/rl/train/test_forking.py checks the weights against a
reference aggregation for every registered name.

Pure tensor functions, no TRL import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DENOMINATORS", "LOSS_VARIANTS", "LossVariant", "kept_token_weights", "register_loss"]

#: denominator kind -> what TRL divides by (T_i: valid tokens of row i).
DENOMINATORS = {
    "global": "num_items_in_batch: the valid tokens of the whole generation batch (all ranks)",
    "local": "the valid tokens of this micro-batch on this rank",
    "row": "per sequence (mean over T_i, or sum for luspo), then the mean over rows",
    "constant": "rows x max_completion_length, independent of the data",
}


@dataclass(frozen=True)
class LossVariant:
    """One TRL loss type: its denominator kind (`DENOMINATORS`) and whether the selective LM head
    may replace the full one (`why_not_selective` says why not, for the log)."""

    name: str
    denominator: str
    selective_head: bool = True
    why_not_selective: str | None = None


LOSS_VARIANTS: dict[str, LossVariant] = {}


def register_loss(name: str, *, denominator: str, selective_head: bool = True,
                  why_not_selective: str | None = None) -> LossVariant:
    """Add a loss variant (ValueError on an unknown denominator kind or a name registered twice)."""
    if denominator not in DENOMINATORS:
        raise ValueError(f"loss {name!r}: denominator must be one of {sorted(DENOMINATORS)}, got {denominator!r}")
    if name in LOSS_VARIANTS:
        raise ValueError(f"loss {name!r} is registered twice")
    if not selective_head and not why_not_selective:
        raise ValueError(f"loss {name!r}: say why the selective head may not run (why_not_selective)")
    LOSS_VARIANTS[name] = LossVariant(name, denominator, selective_head, why_not_selective)
    return LOSS_VARIANTS[name]


# TRL 1.16 GRPOTrainer._compute_loss, branch by branch.
register_loss("dapo", denominator="global")
register_loss("cispo", denominator="global")
register_loss("vespo", denominator="global", selective_head=False,
              why_not_selective="vespo's sequence weights read every token's log-ratio")
register_loss("bnpo", denominator="local")
register_loss("grpo", denominator="row")
register_loss("sapo", denominator="row")
register_loss("luspo", denominator="row")
register_loss("dr_grpo", denominator="constant")


def kept_token_weights(variant: LossVariant, kept: torch.Tensor, valid: torch.Tensor,
                       population_valid, population_kept) -> torch.Tensor:
    """Weights (dtype of `kept`) on the kept tokens that make `variant`'s loss an average over them.

    kept: (B, T) float 0/1, already restricted to `valid` (bool, (B, T)). Rules (K: kept counts):
        global: TRL divides by the population's valid count N, so N / K makes the step's loss sum_kept / K.
        constant: the same N / K keeps TRL's constant scaled to the kept fraction (about 1 / ratio).
        local: local valid / local kept: the micro-batch loss becomes the mean over its kept tokens.
        row: T_i / K_i per row: each sequence's term is over its kept tokens; a row with K_i = 0
            gets weight 0 (a zero in the mean over rows rather than dropped from it).
    Never NaN/inf (empty sets give zeros).
    """
    if variant.denominator in ("global", "constant"):
        if population_valid is None or population_kept is None:
            raise ValueError(f"loss_type {variant.name!r} with normalize='kept' needs population_valid/population_kept")
        n_valid, n_kept = float(population_valid), float(population_kept)
        return kept * (n_valid / n_kept) if n_kept > 0 else kept
    if variant.denominator == "local":
        return kept * (valid.sum().to(kept.dtype) / kept.sum().clamp(min=1.0))
    if variant.denominator == "row":
        return kept * (valid.sum(-1, keepdim=True).to(kept.dtype) / kept.sum(-1, keepdim=True).clamp(min=1.0))
    raise ValueError(f"unknown denominator {variant.denominator!r}")
