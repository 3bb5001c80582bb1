"""Forking-token mask plumbing for TRL's GRPO loss: loss weights, token keys, a selective LM head.

Pure tensor functions (plus one model-forward wrapper) used by `EntropyGRPOTrainer`; the selection
itself (`select_forking_tokens`) and the entropies live in rl/train/entropy.py.

* `loss_weights`: the float mask handed to TRL's `_compute_loss` in place of its boolean
  high-entropy mask. TRL multiplies the per-token policy loss by it and then divides by the loss
  type's own denominator; the weights are scaled so that, with `normalize="kept"`, that
  denominator effectively counts the kept tokens (paper Eq. 6) instead of all tokens.
* `token_order_key`: a layout-independent id per completion token (global sample index, position),
  so that ties at the threshold break the same way whatever the ranks/micro-batches are.
* `head_logps_and_entropy` / `selected_logps`: the LM head applied to chosen hidden states only,
  in row chunks, calling the head MODULE (so DeepSpeed ZeRO-3 gathers its parameters, a LoRA
  adapter on the head is applied, TRL's fp32-head cast is honoured). The differentiable version
  recomputes each chunk's logits in the backward pass, so memory is one chunk of logits, not
  kept_tokens x vocab.
* `install_forking_forward`: wraps the model's (TRL-fused) forward so that
  `model(input_ids=..., attention_mask=..., forking=ForkingRequest(...))` runs the backbone on every
  position and the head only where asked. Going through the model's own forward keeps DDP's
  gradient-sync bookkeeping, PEFT's forward hooks and ZeRO-3's module hooks intact.
"""

from __future__ import annotations

import contextlib
import functools
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.utils.checkpoint
from transformers.generation.logits_process import LogitsProcessor
from transformers.utils import ModelOutput

from rl.train.entropy import token_entropy
from rl.train.losses import LOSS_VARIANTS, kept_token_weights

__all__ = [
    "ForkingStep", "loss_weights", "token_order_key", "head_chunk_rows", "head_logps_and_entropy", "selected_logps",
    "has_plain_logits", "ForkingRequest", "ForkingOutput", "install_forking_forward", "forking_forward",
    "top_forking_tokens", "GenerationEntropy", "record_generation_entropy", "entropy_table",
]

# Bits reserved for the position inside a completion in `token_order_key`.
_POSITION_BITS = 20
# Logits per head chunk. CPU: about 2M (8 MiB float32) but at least 32 rows: small enough to stay
# in cache across the few elementwise passes, tall enough for an efficient GEMM (bench/forking_mask.py,
# hidden 64: 50k vocab ~1.3x faster than 4M-element and ~2x faster than 8M-element chunks; at
# 151,936, 13-row chunks were ~1.3x slower than 32-row ones). Accelerators: 32M (128 MiB), big
# GEMMs and negligible launch overhead.
_HEAD_CHUNK_ELEMENTS = {"cpu": 1 << 21}
_HEAD_CHUNK_ELEMENTS_DEFAULT = 1 << 25
_HEAD_CHUNK_MIN_ROWS = 32


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
# LM head on selected rows
# ----------------------------------------------------------------------------------------------


def head_chunk_rows(vocab: int, device: torch.device | str = "cpu", budget: int | None = None) -> int:
    """Rows per head chunk: about `budget` logits per chunk (default: per device type, >= 32 rows)."""
    if budget is None:
        budget = _HEAD_CHUNK_ELEMENTS.get(torch.device(device).type, _HEAD_CHUNK_ELEMENTS_DEFAULT)
        return max(_HEAD_CHUNK_MIN_ROWS, budget // max(1, vocab))
    return max(1, budget // max(1, vocab))


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()  # bf16/fp16/fp32 -> fp32; fp64 stays


def _call_head(head: torch.nn.Module, hidden: torch.Tensor, fp32_head: bool) -> torch.Tensor:
    """head(hidden) as float32 (float64 for a float64 model) logits. fp32_head: project in float32
    outside autocast (TRL's `cast_lm_head_to_fp32`), otherwise in the active autocast/dtype."""
    if fp32_head:
        with torch.autocast(hidden.device.type, enabled=False):
            return _upcast(head(_upcast(hidden)))
    return _upcast(head(hidden))


def _chunk_logps(head, hidden, targets, inv_temperature: float, fp32_head: bool) -> torch.Tensor:
    z = _call_head(head, hidden, fp32_head)
    if inv_temperature != 1.0:
        z = z * inv_temperature
    return z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


@torch.no_grad()
def head_logps_and_entropy(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    fp32_head: bool = False,
    num_chunks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and entropy (nats) of softmax(head(hidden) / temperature), no gradient.

    hidden: (N, H), targets: (N,). Returns two (N,) tensors, float32 (float64 for a float64 head).
    Logits are built `chunk_rows` rows at a time (default: see `head_chunk_rows`), so memory is O(chunk x vocab).
    `num_chunks` instead calls the head exactly that many times (some chunks may be empty): under
    DeepSpeed ZeRO-3 every head call is a collective, so all ranks must make the same number.
    """
    n = hidden.shape[0]
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logps = torch.empty(n, dtype=dtype, device=hidden.device)
    ents = torch.empty(n, dtype=dtype, device=hidden.device)
    inv_t = 1.0 / float(temperature)
    for sl in _chunk_slices(n, chunk_rows, num_chunks, head, hidden, fp32_head):
        z = _call_head(head, hidden[sl], fp32_head)
        # Few passes over the chunk: shift by the row max in place, exp once; then
        # log Z = log sum e and H = log Z - sum(p * z) = log Z - (e . z) / sum e (as in rl.train.entropy).
        z.sub_(z.amax(dim=-1, keepdim=True))
        if inv_t != 1.0:
            z.mul_(inv_t)
        e = torch.exp(z)
        s = e.sum(-1)
        log_z = torch.log(s)
        ez = torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).reshape(-1)
        del e
        logps[sl] = z.gather(-1, targets[sl, None]).squeeze(-1) - log_z
        ents[sl] = (log_z - ez / s).clamp_min(0.0)
        if not torch.isfinite(ents[sl]).all():  # -inf logits (masked vocabulary): 0 * -inf above
            z = _call_head(head, hidden[sl], fp32_head) * inv_t
            logps[sl] = z.gather(-1, targets[sl, None]).squeeze(-1) - z.logsumexp(-1)
            ents[sl] = token_entropy(z)
        del z
    return logps, ents


def selected_logps(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    fp32_head: bool = False,
    recompute: bool = True,
    num_chunks: int | None = None,
) -> torch.Tensor:
    """Differentiable log p(target) under softmax(head(hidden) / temperature), for (N, H) rows.

    Gradients reach `hidden` (hence the backbone) and the head's parameters exactly as through
    full logits followed by log_softmax and gather. With `recompute` (default) each chunk runs
    under non-reentrant activation checkpointing: the forward keeps only the chunk's hidden rows
    and the backward recomputes its logits (one extra head forward on the selected rows), so the
    extra memory is a few chunks of logits instead of N x vocab. N == 0 returns an empty tensor
    that is still connected to `hidden` (a micro-batch may hold no kept token). `num_chunks`: as
    in `head_logps_and_entropy` (the same count again in the backward recomputation).
    """
    inv_t = 1.0 / float(temperature)
    n = hidden.shape[0]
    if recompute and num_chunks is None and torch.is_grad_enabled() and _plain_linear(head):
        slices = _chunk_slices(n, chunk_rows, None, head, hidden, fp32_head) or [slice(0, 0)]
        return _LinearHeadLogps.apply(hidden, head.weight, head.bias, targets, inv_t, fp32_head, slices)
    parts = []
    for sl in _chunk_slices(n, chunk_rows, num_chunks, head, hidden, fp32_head) or [slice(0, 0)]:
        h, t = hidden[sl], targets[sl]
        if recompute and torch.is_grad_enabled():
            parts.append(torch.utils.checkpoint.checkpoint(
                _chunk_logps, head, h, t, inv_t, fp32_head, use_reentrant=False))
        else:
            parts.append(_chunk_logps(head, h, t, inv_t, fp32_head))
    return torch.cat(parts)


def _plain_linear(head: torch.nn.Module) -> bool:
    """A bare nn.Linear with a materialised weight and no hooks: the fused backward may read its weight
    directly (anything else, e.g. a LoRA-wrapped head or a ZeRO-3 partitioned weight, is called as a module)."""
    weight = getattr(head, "weight", None)
    return (type(head) is torch.nn.Linear and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and weight.numel() > 0 and not hasattr(weight, "ds_id")
            and not (head._forward_hooks or head._forward_pre_hooks or head._backward_hooks))


def _head_dtype(weight: torch.Tensor, fp32_head: bool) -> torch.dtype:
    """The dtype `head(hidden)` computes in: float32 for TRL's fp32 head, else autocast's or the weight's."""
    if fp32_head:
        return torch.float64 if weight.dtype == torch.float64 else torch.float32
    device = weight.device.type
    if torch.is_autocast_enabled(device) and weight.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _LinearHeadLogps(torch.autograd.Function):
    """log p(target) under softmax((hidden @ W^T + b) / T), chunk by chunk, for a plain Linear head.

    Same values and gradients as `_chunk_logps` per chunk under activation checkpointing, but the
    backward accumulates the weight gradient of every chunk into ONE (V, H) float32 buffer in place.
    Through autograd, each chunk's weight gradient is a separate (V, H) tensor summed into the
    engine's buffer: two full-size weight gradients live at once, while the whole backbone's
    activations are still held (the head's backward runs first). At vocab 151,936 x hidden 576 that
    is +350 MB of peak memory, the regression bench/forking_mask.py showed against TRL's fused
    kernel (which accumulates in place, as here). Nothing of size V is saved for the backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, inv_t, fp32_head, slices):
        dtype = _head_dtype(weight, fp32_head)
        out = torch.empty(hidden.shape[0], dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                          device=hidden.device)
        with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
            for sl in slices:
                z = _LinearHeadLogps._logits(hidden[sl], weight, bias, dtype, inv_t, out.dtype)
                out[sl] = z.gather(-1, targets[sl, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(hidden, targets)
        ctx.weight, ctx.bias = weight, bias  # parameters: held by reference, not as saved activations
        ctx.inv_t, ctx.dtype, ctx.slices = inv_t, dtype, slices
        return out

    @staticmethod
    def _logits(h, weight, bias, dtype, inv_t, acc):
        z = h.to(dtype) @ weight.to(dtype).t()
        if bias is not None:
            z = z + bias.to(dtype)
        z = z.to(acc)
        return z * inv_t if inv_t != 1.0 else z

    @staticmethod
    def backward(ctx, grad_out):
        hidden, targets = ctx.saved_tensors
        weight, bias, inv_t, dtype = ctx.weight, ctx.bias, ctx.inv_t, ctx.dtype
        acc = grad_out.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
        with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
            for sl in ctx.slices:
                if sl.stop <= sl.start:
                    continue
                h = hidden[sl]
                z = _LinearHeadLogps._logits(h, weight, bias, dtype, inv_t, acc)
                # d logp(t) / d logits = inv_t * (onehot(t) - softmax(z)), times the incoming gradient
                g = grad_out[sl].unsqueeze(-1) * inv_t
                dz = torch.softmax(z, dim=-1).mul_(-g)
                del z
                dz.scatter_add_(-1, targets[sl, None], g)
                if grad_h is not None:
                    grad_h[sl] = dz @ weight.to(acc)
                if grad_w is not None:
                    grad_w.addmm_(dz.t(), h.to(acc))
                if grad_b is not None:
                    grad_b += dz.sum(0)
        grad_h = grad_h.to(hidden.dtype) if grad_h is not None else None
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None


def _chunk_slices(n: int, chunk_rows, num_chunks, head, hidden, fp32_head) -> list[slice]:
    """Row ranges of the head calls: exactly `num_chunks` (possibly empty) or ceil(n / chunk_rows)."""
    if num_chunks is not None:
        bounds = torch.linspace(0, n, int(num_chunks) + 1).round().long().tolist()
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if n == 0:
        return []
    rows = chunk_rows or head_chunk_rows(_vocab_size(head, hidden, fp32_head), hidden.device)
    return [slice(start, start + rows) for start in range(0, n, rows)]


def _vocab_size(head: torch.nn.Module, hidden: torch.Tensor, fp32_head: bool) -> int:
    out = getattr(head, "out_features", None)
    if isinstance(out, int) and out > 0:
        return out
    with torch.no_grad():  # unknown head type (or ZeRO-3 partitioned weight): ask the module itself
        return _call_head(head, hidden[:1], fp32_head).shape[-1] if hidden.shape[0] else 1


def has_plain_logits(config) -> bool:
    """True when the model's logits are exactly lm_head(hidden): no softcapping or logit scaling.

    The selective head calls the head module only; models that transform its output in their
    forward (Gemma-2 softcapping, Cohere `logit_scale`, Granite `logits_scaling`, ...) use TRL's
    full fused path instead.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "final_logit_softcapping", None) is not None:
        return False
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        value = getattr(text, name, None)
        if value is not None and value != 1.0:
            return False
    return True


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
                               num_chunks=request.num_chunks)
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


# ----------------------------------------------------------------------------------------------
# Entropies at sampling time (transformers `generate`)
# ----------------------------------------------------------------------------------------------


class GenerationEntropy(LogitsProcessor):
    """A logits processor that records, at every decoding step, the entropy of each row's RAW
    next-token distribution softmax(logits / temperature), and changes nothing.

    `record_generation_entropy` puts it FIRST in `generate`'s processor list, so it sees the model's
    logits before repetition penalties, top-k/top-p/min-p and the temperature warper: the same
    distribution the policy loss uses (TRL divides the logits by its temperature). It keeps one
    (B,) float32 vector per step, never the (B, V) scores, so the cost is one pass over each
    step's logits. Step s is completion token s of every row (transformers appends one token per
    row per step; rows that finished keep being padded), so `per_row(lengths)` gives each row's
    first `lengths[i]` values.
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # Few passes over (B, V), as in `head_logps_and_entropy`: shift by the max, scale, exp once;
            # H = log S - (e . z) / S. Non-finite logits (masked vocabulary) take the careful path.
            z = scores.detach().float()
            z = z - z.amax(dim=-1, keepdim=True)
            if self.temperature != 1.0:
                z.mul_(1.0 / self.temperature)
            e = torch.exp(z)
            s = e.sum(-1)
            h = (torch.log(s) - torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).reshape(-1) / s).clamp_min(0.0)
            if not torch.isfinite(h).all():
                h = token_entropy(scores.detach(), self.temperature).float()
            self.steps.append(h)
        return scores

    def per_row(self, lengths: list[int]) -> list[torch.Tensor]:
        """Entropies of each row's first `lengths[i]` completion tokens (lengths in generate's row order)."""
        if not self.steps:
            return [torch.zeros(0) for _ in lengths]
        table = torch.stack(self.steps, dim=1)  # (B, steps)
        if table.shape[0] != len(lengths) or max(lengths, default=0) > table.shape[1]:
            raise ValueError(f"recorded {tuple(table.shape)} entropies for {len(lengths)} rows of lengths up to "
                             f"{max(lengths, default=0)}")
        return [table[i, :n] for i, n in enumerate(lengths)]


@contextlib.contextmanager
def record_generation_entropy(model, temperature: float):
    """Within the block, every `model.generate` call runs a `GenerationEntropy` first in its
    processor list; yields the list of recorders, one per generate call.

    `model` is the transformers model whose `generate` does the decoding (the base model under
    PEFT). Patches the instance's `_get_logits_processor` (the method `generate` builds its list
    with) and removes the patch on exit.
    """
    recorders: list[GenerationEntropy] = []
    original = model._get_logits_processor

    def with_entropy_first(*args, **kwargs):
        processors = original(*args, **kwargs)
        recorder = GenerationEntropy(temperature)
        recorders.append(recorder)
        processors.insert(0, recorder)
        return processors

    model._get_logits_processor = with_entropy_first
    try:
        yield recorders
    finally:
        del model._get_logits_processor


def entropy_table(rows: list[torch.Tensor], num_cols: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(len(rows), num_cols) tensor: row i's values left-aligned, zero after (TRL pads completions right)."""
    out = torch.zeros(len(rows), num_cols, dtype=dtype, device=device)
    for i, r in enumerate(rows):
        n = min(int(r.numel()), num_cols)
        out[i, :n] = r[:n].to(device=device, dtype=dtype)
    return out
