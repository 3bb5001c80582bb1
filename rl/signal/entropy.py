"""Token entropies and forking-token selection: pure tensor functions, no TRL.

"Beyond the 80/20 Rule" (arXiv 2506.01939) trains only on the top-rho highest-entropy completion
tokens ("forking tokens"); the RPT data builder filters positions by the entropy of a proxy model's
next-token distribution, in the paper's top-k (k=16) variant. This module holds the three pieces:

* `token_entropy`: H(softmax(logits / T)) per position, float32 (or wider) accumulation, chunked so
  the extra memory is O(chunk x vocab) whatever the input size or dtype.
* `topk_entropy`: the entropy of the top-k probabilities renormalised to sum to one.
* `select_forking_tokens`: keeps exactly ceil(ratio x N_valid) tokens of a population that may be
  spread over the ranks of a process group, with a deterministic tie-break; `masked_stats` gives
  the numbers worth logging about it.

Why not TRL's `get_high_entropy_mask`: it takes `torch.quantile` of one micro-batch (refused above
2^24 elements), keeps every token tied at the threshold (so the kept count is not exact) and, on
a tie-free population, keeps floor(rho*N + 1 - rho) tokens, i.e. one fewer than ceil(rho*N) when
0 < frac(rho*N) < rho (e.g. rho=0.3, N=4: TRL keeps 1, we keep 2). Both keep the highest entropies.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["token_entropy", "topk_entropy", "select_forking_tokens", "masked_stats"]

# Default chunk: about 4M logits (16 MiB per float32 temporary) per step, whatever the vocab.
_CHUNK_ELEMENTS = 1 << 22
# Radix select: 16-bit digits, so one histogram is 65,536 int64 counts (512 KiB).
_RADIX_BITS = 16
_RADIX = 1 << _RADIX_BITS
_DIGIT_MASK = _RADIX - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


# ----------------------------------------------------------------------------------------------
# Entropies
# ----------------------------------------------------------------------------------------------


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__}"
                        f"{'' if not isinstance(logits, torch.Tensor) else ' of ' + str(logits.dtype)}")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits need a non-empty last (vocab) dimension, got shape {tuple(logits.shape)}")


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _rows_per_chunk(chunk_size: int | None, vocab: int) -> int:
    """Rows per chunk: `chunk_size` if given, else enough rows for about _CHUNK_ELEMENTS logits."""
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // vocab)
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


def _row_blocks(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield 2-D views (rows, vocab) covering x's positions in row-major order, never copying.

    `x.reshape(-1, V)` would copy a non-viewable tensor such as `logits[:, :-1]` whole (the usual
    LM shift); instead we split along the leading dimension until the pieces flatten as views.
    """
    try:
        flat = x.view(-1, x.shape[-1])
    except RuntimeError:
        for sub in x.unbind(0):
            yield from _row_blocks(sub)
    else:
        yield flat


def _entropy_rows(z: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(z) for each row of a 2-D float32/float64 tensor.

    H = logsumexp(z) - sum(softmax(z) * z), after shifting each row by its max (entropy is shift
    invariant; the shift keeps logsumexp in [0, log V] so nothing cancels catastrophically).
    -inf entries have probability 0 and contribute 0 (their 0 * -inf is replaced by 0, also in the
    backward pass). A row with no finite logit has no distribution and gives NaN. The result is
    clamped at 0 so rounding never yields a negative entropy.
    """
    z = z - z.amax(dim=-1, keepdim=True).detach()  # the max only shifts; H has zero gradient along it
    lse = torch.logsumexp(z, dim=-1)
    p = torch.exp(z - lse.unsqueeze(-1))
    z_finite = z.masked_fill(torch.isneginf(z), 0.0)
    return (lse - (p * z_finite).sum(dim=-1)).clamp_min(0.0)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # bf16/fp16 -> float32, float64 stays


def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) over the last dim, for every position.

    Args:
        logits: (..., V) floating tensor of any dtype; entries may be -inf (masked vocabulary).
            Finite or -inf only: a row with no finite entry (or with +inf) gives NaN.
        temperature: > 0; the distribution is softmax(logits / temperature).
        chunk_size: rows (flattened leading positions) per chunk; None picks about 4M logits per
            chunk. bf16/fp16 chunks are upcast one at a time, so without autograd the extra memory
            is O(chunk x V). Non-contiguous inputs such as `logits[:, :-1]` are not copied whole.

    Returns:
        Tensor of shape logits.shape[:-1], float32 (float64 for float64 input), on logits' device.
        Differentiable when logits require grad (autograd then keeps each chunk's intermediates,
        as any differentiable entropy must); wrap in `torch.no_grad()` when only values are needed.
    """
    _check_logits(logits)
    t = _check_temperature(temperature)
    vocab = logits.shape[-1]
    rows = _rows_per_chunk(chunk_size, vocab)
    acc = _accumulation_dtype(logits.dtype)
    parts = []
    for block in _row_blocks(logits):
        for chunk in block.split(rows):
            z = chunk.to(acc)
            if t != 1.0:
                z = z / t
            parts.append(_entropy_rows(z))
    out = torch.cat(parts) if parts else logits.new_empty(0, dtype=acc)
    return out.reshape(logits.shape[:-1])


def topk_entropy(
    logits: torch.Tensor, k: int = 16, temperature: float = 1.0, chunk_size: int | None = None
) -> torch.Tensor:
    """Entropy of the top-k next-token probabilities RENORMALISED to sum to one (RPT's "top-16 entropy").

    With S = the k largest entries of z = logits / temperature at a position,
    p_i = exp(z_i) / sum_{j in S} exp(z_j) for i in S, and H_k = -sum_{i in S} p_i log p_i,
    i.e. the entropy of softmax over the top-k logits only, so 0 <= H_k <= log k. This is not the
    truncated sum -sum_{i in S} q_i log q_i with q the full-vocabulary softmax. Which of several
    tied k-th logits is taken does not matter (same values). k >= V gives `token_entropy` exactly.

    Same dtype, chunking, -inf and gradient behaviour as `token_entropy` (top-k values carry
    gradient to the logits they came from; the others get zero).
    """
    _check_logits(logits)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    vocab = logits.shape[-1]
    if k >= vocab:
        return token_entropy(logits, temperature, chunk_size)
    t = _check_temperature(temperature)
    rows = _rows_per_chunk(chunk_size, vocab)
    acc = _accumulation_dtype(logits.dtype)
    parts = []
    for block in _row_blocks(logits):
        for chunk in block.split(rows):
            # topk before upcasting/scaling: both are monotone, so the same entries are selected.
            z = chunk.topk(int(k), dim=-1, sorted=False).values.to(acc)
            if t != 1.0:
                z = z / t
            parts.append(_entropy_rows(z))
    out = torch.cat(parts) if parts else logits.new_empty(0, dtype=acc)
    return out.reshape(logits.shape[:-1])


# ----------------------------------------------------------------------------------------------
# Forking-token selection
# ----------------------------------------------------------------------------------------------


class _Comm:
    """The few collectives selection needs; a local no-op when group is None or has one rank."""

    def __init__(self, group) -> None:
        self.group = group
        self.world, self.rank = 1, 0
        if group is not None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("a process group was given but torch.distributed is not initialized; "
                                 "pass group=None for a local selection")
            self.world = dist.get_world_size(group)
            self.rank = dist.get_rank(group)
            if self.rank < 0:
                raise ValueError("this process is not a member of the given process group")

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """(world, *t.shape): every rank's t, in rank order (t must have the same shape everywhere)."""
        if self.world == 1:
            return t.unsqueeze(0)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t.contiguous(), group=self.group)
        return torch.stack(out)

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=self.group)
        return t


def _keep_count(ratio: float, n: int) -> int:
    """ceil(ratio * n) in exact arithmetic, reading ratio as its shortest decimal (0.2 -> 1/5).

    Plain float arithmetic turns 0.07 * 100 into 7.000000000000001 and would keep 8 tokens, not 7.
    """
    return min(n, math.ceil(Fraction(repr(ratio)) * n))


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool):
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")
    r = float(ratio)
    if not (0.0 < r <= 1.0):  # also rejects NaN
        raise ValueError(f"ratio must be in (0, 1] (fraction of valid tokens kept), got {ratio!r}")
    return r


def _ordered_bits(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map floats to int64 codes whose UNSIGNED order (read 16 bits at a time) is the float order.

    Returns (codes, number of significant bits: 32 for float32, 64 for float64). -0.0 is first
    made +0.0 so that the codes are equal exactly when the floats compare equal. NaN must be gone.
    """
    values = values + 0.0  # -0.0 + 0.0 == +0.0
    if values.dtype == torch.float64:
        b = values.view(torch.int64)
        # positive: set the top bit (unsigned 2^63 + bits); negative: ~bits reverses their order
        return torch.where(b >= 0, b ^ _INT64_MIN, ~b), 64
    b = values.view(torch.int32).to(torch.int64)
    return torch.where(b >= 0, b + (1 << 31), -b - 1), 32


def select_forking_tokens(
    entropy: torch.Tensor,
    valid_mask: torch.Tensor,
    ratio: float,
    group=None,
    *,
    order_key: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep exactly ceil(ratio x N_valid) highest-entropy tokens of a (possibly distributed) population.

    Args:
        entropy: floating tensor of any shape (e.g. (batch, completion_len)).
        valid_mask: same shape, bool or 0/1; False marks padding, which is never kept nor counted.
        ratio: fraction kept, in (0, 1]; otherwise ValueError. 1.0 keeps every valid token.
            The count is ceil(ratio x N_valid) computed exactly (ratio read as its shortest
            decimal, so 0.2 x 10 keeps 2), hence at least one token when N_valid >= 1.
        group: None selects over this call's tokens only. A torch.distributed process group
            (`torch.distributed.group.WORLD` for all ranks) selects over the union of every
            member rank's tokens; ranks may hold different numbers and shapes of tokens, and
            every member must call with the same ratio and group.
        order_key: optional int64 tensor, same shape, a globally unique id per token used only
            to break ties. Default: global position = (number of entropy elements, padding
            included, on lower ranks of `group`) + row-major flat index in the local tensor.

    Order and tie-break: higher entropy first; among entropies that compare equal as floats
    (so -0.0 == +0.0), the LOWER key wins. With the default key the kept set equals that of a
    single call on the rank-ordered concatenation of the flattened local tensors; with a
    caller-supplied global key the kept set does not depend at all on how the population is split
    into ranks, micro-batches or shapes. Keys need only be unique among valid tokens; a duplicate
    that decides the cut raises ValueError (on every rank).

    NaN entropy on a valid token raises ValueError on every rank (detected after the first
    collective, so no rank is left waiting); +-inf are ordinary values.

    Returns:
        (mask, threshold): bool mask of entropy's shape (True = kept, always within valid_mask),
        and the smallest kept entropy over the whole group as a 0-dim tensor of entropy's dtype.
        If N_valid == 0 over the group nothing is kept and threshold is NaN. `entropy >= threshold`
        can keep more than the mask when tokens tie at the threshold; the mask is the exact set.

    Algorithm and communication: no sort, no quantile, no gather of the population. An exact
    radix select over the order (entropy bits, then key bits) in 16-bit digits: each pass builds a
    65,536-bin histogram of the still-undecided tokens' next digit, all-reduces it (SUM, 512 KiB
    int64), and decides every token above/below the boundary bin. It stops as soon as the boundary
    bin holds exactly the count still needed: typically 2 passes for float32 (4 for float64), up to
    4 more only when more tokens tie at the threshold value than remain to be taken. Plus one
    all_gather of 3 int64 per rank (counts, NaN check, key offset) and one scalar all_reduce (MIN)
    for the threshold. Per-rank traffic is thus about 1 MiB (at most 4 MiB: float64 and a
    decisive tie), independent of N and world size; each pass costs one host sync. Local work
    is O(N_local) (a few elementwise ops and a bincount), so populations far above
    torch.quantile's 2^24 limit are fine. Argument errors (shapes, ratio) are raised before any
    communication, on the rank that has them.
    """
    r = _check_ratio(ratio)
    if not isinstance(entropy, torch.Tensor) or not entropy.is_floating_point():
        raise TypeError("entropy must be a floating-point tensor")
    if not isinstance(valid_mask, torch.Tensor) or valid_mask.shape != entropy.shape:
        raise ValueError(f"valid_mask must be a tensor of entropy's shape {tuple(entropy.shape)}, got "
                         f"{tuple(valid_mask.shape) if isinstance(valid_mask, torch.Tensor) else type(valid_mask)}")
    if order_key is not None:
        if not isinstance(order_key, torch.Tensor) or order_key.shape != entropy.shape:
            raise ValueError(f"order_key must be a tensor of entropy's shape {tuple(entropy.shape)}")
        if order_key.is_floating_point() or order_key.is_complex() or order_key.dtype == torch.bool:
            raise ValueError(f"order_key must be an integer tensor, got {order_key.dtype}")
    comm = _Comm(group)
    device = entropy.device

    flat_e = entropy.detach().reshape(-1)
    flat_valid = valid_mask.detach().reshape(-1).to(device=device, dtype=torch.bool)
    n_local = flat_e.numel()
    valid_idx = None if bool(flat_valid.all()) else flat_valid.nonzero().squeeze(1)
    values = flat_e if valid_idx is None else flat_e[valid_idx]
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()  # bf16/fp16 -> float32 is exact and order-preserving

    counts = torch.tensor([n_local, values.numel(), 0], dtype=torch.int64, device=device)
    counts[2] = torch.isnan(values).sum()
    all_counts = comm.all_gather(counts).tolist()  # (world, 3)
    n_valid = sum(c[1] for c in all_counts)
    nan_ranks = [rank for rank, c in enumerate(all_counts) if c[2]]
    if nan_ranks:
        raise ValueError(f"select_forking_tokens: NaN entropy on valid tokens (ranks {nan_ranks}); "
                         "mask those positions out or fix the logits (a row of all -inf gives NaN)")
    offset = sum(c[0] for c in all_counts[: comm.rank])

    out_dtype = entropy.dtype
    if n_valid == 0:
        nothing = torch.zeros_like(flat_valid).reshape(entropy.shape)
        return nothing, torch.tensor(math.nan, dtype=out_dtype, device=device)

    n_keep = _keep_count(r, n_valid)
    if n_keep == n_valid:
        kept = torch.ones(values.numel(), dtype=torch.bool, device=device)
    else:
        kept = _radix_select(values, n_keep, comm,
                             lambda idx: _tie_keys(idx, valid_idx, order_key, offset, device))

    if bool(kept.any()):
        local_min = values[kept].min()
    else:
        local_min = torch.tensor(math.inf, dtype=values.dtype, device=device)
    threshold = comm.all_reduce(local_min.reshape(1).clone(), dist.ReduceOp.MIN)[0]

    if valid_idx is None:
        mask = kept
    else:
        mask = torch.zeros(n_local, dtype=torch.bool, device=device)
        mask[valid_idx] = kept
    return mask.reshape(entropy.shape), threshold.to(out_dtype)


def _tie_keys(idx: torch.Tensor, valid_idx, order_key, offset: int, device) -> torch.Tensor:
    """Tie-break codes for the compact valid tokens at idx: larger code = LOWER key = kept first."""
    pos = idx if valid_idx is None else valid_idx[idx]
    key = (order_key.reshape(-1).to(device=device)[pos].to(torch.int64) if order_key is not None
           else pos + offset)
    return key ^ _INT64_MAX  # flip the sign bit (signed -> unsigned order), then reverse the order


def _radix_select(values: torch.Tensor, n_keep: int, comm: _Comm, tie_keys) -> torch.Tensor:
    """Bool mask over `values` of this rank's share of the global top-n_keep in (value desc, key asc).

    Composite order = value code digits (most significant first), then tie-key digits. At each
    pass the undecided candidates' digit histogram is summed over the group; the boundary bin b is
    where the running count from the top first reaches `need`. Candidates above b are kept,
    below are dropped, in b stay undecided. Every rank sees the same global histogram, so all ranks
    take the same branches and make the same number of collectives.
    """
    device = values.device
    codes, nbits = _ordered_bits(values)
    stages = [("value", s) for s in range(nbits - _RADIX_BITS, -1, -_RADIX_BITS)]
    stages += [("key", s) for s in range(64 - _RADIX_BITS, -1, -_RADIX_BITS)]
    kept = torch.zeros(values.numel(), dtype=torch.bool, device=device)
    cand = None  # indices of undecided tokens; None = all
    need = n_keep
    for kind, shift in stages:
        if kind == "value":
            src = codes if cand is None else codes[cand]
        else:
            src = tie_keys(torch.arange(values.numel(), device=device) if cand is None else cand)
        digit = (src >> shift) & _DIGIT_MASK
        hist = comm.all_reduce(torch.bincount(digit, minlength=_RADIX))
        from_top = hist.flip(0).cumsum(0).flip(0)  # from_top[i] = tokens with digit >= i
        b_t = (from_top >= need).sum() - 1
        b, at_or_above, in_bin = torch.stack([b_t, from_top[b_t], hist[b_t]]).tolist()
        above = digit > b
        at = (digit == b).nonzero().squeeze(1)
        if cand is None:
            kept |= above
        else:
            kept[cand[above]] = True
            at = cand[at]
        cand = at
        need -= at_or_above - in_bin
        if in_bin == need:
            kept[cand] = True
            return kept
    raise ValueError("select_forking_tokens: order_key has duplicate ids among tokens tied at the "
                     "threshold; keys must be unique")


def masked_stats(
    entropy: torch.Tensor,
    valid_mask: torch.Tensor,
    kept_mask: torch.Tensor,
    group=None,
    *,
    threshold: float | torch.Tensor | None = None,
) -> dict[str, float]:
    """Numbers worth logging about a forking-token mask, summed over `group` (None = local).

    Returns floats: threshold (as passed, NaN if None), kept_fraction (kept / valid),
    kept_entropy_mean, valid_entropy_mean, kept_tokens, valid_tokens. Kept tokens outside
    valid_mask are ignored. Empty sets give NaN means/fraction. One all_reduce of 4 float64.
    Every member of `group` must call it (it is collective).
    """
    comm = _Comm(group)
    valid = valid_mask.detach().to(device=entropy.device, dtype=torch.bool)
    kept = kept_mask.detach().to(device=entropy.device, dtype=torch.bool) & valid
    acc = torch.float32 if entropy.device.type == "mps" else torch.float64
    e = entropy.detach().to(acc)
    zero = torch.zeros((), dtype=acc, device=entropy.device)
    totals = torch.stack([valid.sum().to(acc), kept.sum().to(acc),
                          torch.where(valid, e, zero).sum(), torch.where(kept, e, zero).sum()])
    n_valid, n_kept, sum_valid, sum_kept = comm.all_reduce(totals).tolist()
    nan = math.nan
    return {
        "threshold": nan if threshold is None else float(threshold),
        "kept_fraction": n_kept / n_valid if n_valid else nan,
        "kept_entropy_mean": sum_kept / n_kept if n_kept else nan,
        "valid_entropy_mean": sum_valid / n_valid if n_valid else nan,
        "kept_tokens": n_kept,
        "valid_tokens": n_valid,
    }
