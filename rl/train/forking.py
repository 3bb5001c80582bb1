"""Forking-token mask plumbing for TRL's GRPO loss: the step's selection, loss weights, token keys, the
forward that runs the LM head only where asked (the head itself: rl/train/selective_head.py; entropies
recorded at sampling time: rl/train/sampling_entropy.py).

Pure tensor functions (plus one model-forward wrapper) used by `EntropyGRPOTrainer`; the selection
itself (`select_forking_tokens`) and the entropies live in rl/signal/entropy.py.

* `loss_weights`: the float mask handed to TRL's `_compute_loss` in place of its boolean
  high-entropy mask. TRL multiplies the per-token policy loss by it and then divides by the loss
  type's own denominator; the weights are scaled so that, with `normalize="kept"`, that
  denominator effectively counts the kept tokens (paper Eq. 6) instead of all tokens.
* `token_order_key`: a layout-independent id per completion token (global sample index, position),
  so that ties at the threshold break the same way whatever the ranks/micro-batches are.
* `install_forking_forward`: wraps the model's (TRL-fused) forward so that
  `model(input_ids=..., attention_mask=..., forking=ForkingRequest(...))` runs the backbone on every
  position and the head only where asked. Going through the model's own forward keeps DDP's
  gradient-sync bookkeeping, PEFT's forward hooks and ZeRO-3's module hooks intact.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.utils.checkpoint
from transformers.utils import ModelOutput

from rl.train.losses import LOSS_VARIANTS, kept_token_weights
from rl.train.selective_head import head_logps_and_entropy, selected_logps

__all__ = [
    "ForkingStep", "loss_weights", "token_order_key", "ForkingRequest", "ForkingOutput", "install_forking_forward",
    "forking_forward", "top_forking_tokens",
]

# Bits reserved for the position inside a completion in `token_order_key`.
_POSITION_BITS = 20


# ----------------------------------------------------------------------------------------------
# The step's selection, carried with the batch
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForkingStep:
    """The forking selection of one generation batch (scope `step`).

    It travels inside TRL's batch dict, which TRL shuffles and splits into micro-batches
    (`shuffle_sequence_dict`, `split_tensor_dict`): so it is stored as tensors under `KEYS`,
    per-token ones with the batch on dim 0 and the population counts as 0-dim tensors (TRL copies
    those to every micro-batch). `from_batch` reads it back from one micro-batch.
    """

    mask: torch.Tensor  # (B, T) bool: the kept tokens
    entropy: torch.Tensor  # (B, T): generation-time entropies under the policy (temperature applied)
    valid_total: torch.Tensor  # 0-dim int64: valid tokens of the whole population (all ranks)
    kept_total: torch.Tensor  # 0-dim int64: kept tokens of the whole population

    KEYS = ("forking_mask", "forking_entropy", "forking_valid_total", "forking_kept_total")

    def to_batch(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.KEYS, (self.mask, self.entropy, self.valid_total, self.kept_total)))

    @classmethod
    def from_batch(cls, batch) -> ForkingStep | None:
        """The step's selection in this (micro-)batch, or None when the batch carries none."""
        if batch is None or cls.KEYS[0] not in batch:
            return None
        return cls(*(batch[key] for key in cls.KEYS))


# ----------------------------------------------------------------------------------------------
# Loss weights (normalisation over kept tokens)
# ----------------------------------------------------------------------------------------------


def loss_weights(
    kept: torch.Tensor,
    valid: torch.Tensor,
    loss_type: str,
    normalize: str,
    *,
    population_valid: float | torch.Tensor | None = None,
    population_kept: float | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Float weights (B, T) to multiply TRL's per-token policy loss by, zero off the kept tokens.

    Args:
        kept: (B, T) bool, the forking tokens of this micro-batch (only those inside `valid` count).
        valid: (B, T) TRL's loss mask (completion_mask x tool_mask).
        loss_type: TRL's `loss_type`.
        normalize: "all" keeps TRL's denominators (weights are the 0/1 mask: the update shrinks by
            about the kept ratio); "kept" rescales so the loss is an average over kept tokens.
        population_valid / population_kept: valid and kept token counts of the whole selection
            population (all ranks; the generation batch for scope `step`, the micro-batch for scope
            `micro_batch`). Needed by "kept" for the global- and constant-denominator losses.

    How "kept" rescales each loss type: its entry in rl/train/losses.py (`kept_token_weights`).
    The result (of `dtype`) has no gradient and never contains NaN/inf (empty sets give zeros).
    """
    if normalize not in ("kept", "all"):
        raise ValueError(f"normalize must be 'kept' or 'all', got {normalize!r}")
    if kept.shape != valid.shape:
        raise ValueError(f"kept {tuple(kept.shape)} and valid {tuple(valid.shape)} must have the same shape")
    valid_b = valid.detach().bool()
    kept_f = (kept.detach().bool() & valid_b).to(dtype)
    if normalize == "all":
        return kept_f
    variant = LOSS_VARIANTS.get(loss_type)
    if variant is None:
        raise ValueError(f"unknown loss_type {loss_type!r} (known: {sorted(LOSS_VARIANTS)})")
    return kept_token_weights(variant, kept_f, valid_b, population_valid, population_kept)


def token_order_key(num_rows: int, num_cols: int, row_offset: int, device=None) -> torch.Tensor:
    """(num_rows, num_cols) int64 ids: (row_offset + row) * 2^20 + column.

    With row_offset = the global index of this rank's first sample in the generation batch, a
    token's id depends only on (sample, position), not on how samples are spread over ranks or
    padded, so `select_forking_tokens(..., order_key=...)` breaks ties identically in every layout.
    """
    if num_cols >= 1 << _POSITION_BITS:
        raise ValueError(f"completions longer than {1 << _POSITION_BITS} tokens are not supported")
    rows = torch.arange(num_rows, dtype=torch.int64, device=device).add_(row_offset)
    cols = torch.arange(num_cols, dtype=torch.int64, device=device)
    return (rows.unsqueeze(1) << _POSITION_BITS) | cols.unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# Model forward: backbone on everything, head where asked
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForkingRequest:
    """What `forking_forward` computes, for completions occupying the last `completion_len` columns.

    mode "select": differentiable log-probs of the completion tokens at (rows, cols) (completion
        coordinates), returned flat in that order.
    mode "scan": no-grad log-probs and entropies at every (rows, cols), same layout.
    """

    mode: str
    rows: torch.Tensor
    cols: torch.Tensor
    completion_len: int
    temperature: float = 1.0
    fp32_head: bool = False
    chunk_rows: int | None = None
    num_chunks: int | None = None  # exact number of head calls (DeepSpeed ZeRO-3: same on every rank)
    grad_into_param: bool = False  # one process, no gradient hooks: the head's weight gradient goes into .grad


@dataclass
class ForkingOutput(ModelOutput):
    """Flat per-position results of `forking_forward` (entropy only for mode "scan")."""

    log_probs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


_NOT_FOR_BACKBONE = ("labels", "shift_labels", "fused_lm_head", "num_items_in_batch", "logits_to_keep")


def forking_forward(model, request: ForkingRequest, input_ids=None, attention_mask=None, **kwargs) -> ForkingOutput:
    """Backbone over all positions, then the LM head only at the requested completion positions.

    The hidden state at sequence position P + t - 1 predicts completion token t (P = prompt
    columns = input_ids.shape[1] - completion_len), the same shift TRL's fused head uses.
    `model` is the transformers CausalLM (what TRL patched); the backbone is `model.base_model`
    and the head `model.get_output_embeddings()`, both looked up per call as TRL does (PEFT and
    FSDP replace them after patching).
    """
    for key in _NOT_FOR_BACKBONE:
        kwargs.pop(key, None)
    kwargs["use_cache"] = False
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
    prompt_len = input_ids.shape[1] - request.completion_len
    rows, cols = request.rows, request.cols
    h = hidden[rows, prompt_len - 1 + cols]
    targets = input_ids[rows, prompt_len + cols]
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device != h.device:
        h, targets = h.to(weight.device), targets.to(weight.device)
    if request.mode == "select":
        logps = selected_logps(head, h, targets, request.temperature, request.chunk_rows, request.fp32_head,
                               num_chunks=request.num_chunks, grad_into_param=request.grad_into_param)
        return ForkingOutput(log_probs=logps)
    if request.mode == "scan":
        logps, ents = head_logps_and_entropy(head, h, targets, request.temperature, request.chunk_rows,
                                             request.fp32_head, num_chunks=request.num_chunks)
        return ForkingOutput(log_probs=logps, entropy=ents)
    raise ValueError(f"unknown ForkingRequest mode {request.mode!r}")


def install_forking_forward(model) -> None:
    """Let `model(..., forking=ForkingRequest(...))` run `forking_forward`; anything else is unchanged.

    Install on the object TRL gave its fused head (`model.get_base_model()` for PEFT, else the
    model), after TRL did. The wrapper keeps the class forward's signature (generation validates
    its kwargs against it). Idempotent.
    """
    if getattr(model, "_forking_forward_installed", False):
        return
    inner = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, forking: ForkingRequest | None = None, **kwargs):
        if forking is None:
            return inner(*args, **kwargs)
        if args:
            raise TypeError("forking forward takes keyword arguments only (input_ids=..., attention_mask=...)")
        return forking_forward(self, forking, **kwargs)

    model.forward = types.MethodType(forward, model)
    model._forking_forward_installed = True


# ----------------------------------------------------------------------------------------------
# Logging helpers
# ----------------------------------------------------------------------------------------------


def top_forking_tokens(
    kept_counts: dict[int, int],
    valid_counts: dict[int, int],
    kept_entropy_sums: dict[int, float],
    decode: Callable[[int], str],
    top: int = 50,
) -> list[list]:
    """Rows [token, token_id, count, occurrences, kept_rate, mean_entropy] of the most kept tokens.

    count: times the token was a kept (forking) token; occurrences: times it appeared as a valid
    completion token; kept_rate = count / occurrences; mean_entropy over its kept occurrences.
    Ordered by count (desc), then token id, so the table is deterministic.
    """
    order = sorted(kept_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    rows = []
    for tok, count in order:
        occ = valid_counts.get(tok, 0)
        rows.append([decode(tok), int(tok), int(count), int(occ), count / occ if occ else float("nan"),
                     kept_entropy_sums.get(tok, 0.0) / count])
    return rows
