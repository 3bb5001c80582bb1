"""Dynamic sampling (DAPO, arXiv 2503.14476), the pure part: which groups to keep, how to lay the kept
samples out over the ranks, where fresh prompts come from, and how padded batches are joined.

A group (the `num_generations` completions of one prompt) whose rewards are all equal has advantage 0
everywhere: it moves nothing but still costs a training forward and dilutes the loss denominators.
DAPO drops such groups and generates again with fresh prompts until the batch holds its full number
of informative groups (verl: `algorithm.filter_groups`, `max_num_gen_batches`). The trainer side is
rl/train/dynamic_sampling_trainer.py; everything here is plain functions over tensors and lists, so
it is tested directly (tests/rl/train/test_dynamic_sampling.py).

* `group_varies`: per group, whether its values differ (NaN = unscorable, ignored; a group with fewer
  than two finite values does not vary).
* `plan_batch`: from the informative-group flags of every generation round (global, identical on
  every rank), the samples the training batch holds, in order: whole informative groups, round by
  round, up to the target number of groups; then cut to the same count on every rank, a multiple of
  `steps_per_generation` (TRL splits each rank's batch into that many micro-batches). Only a short
  batch (the cap was reached) is cut; when it holds fewer samples than one per micro-batch on each
  rank, samples of dropped groups fill it with advantage 0 (`Plan.filler`), so no micro-batch is empty
  (with `allow_empty`, a step without any informative group is all filler: one sample per micro-batch).
* `refill_prompts`: the dataset rows of an extra round, a pure function of (seed, optimizer step,
  round): every rank draws the same rows, and a resumed run draws them again bit for bit without any
  saved state. TRL's own sampler order is not touched, so its epochs, HF's step accounting and the
  checkpoint's data-order replay (rl/runtime/checkpoint.py) stay as they are.
* `pad_cat`, `trim_columns`: join (B, T) tensors of different widths (prompts left-padded, completions
  right-padded, as TRL pads them) and drop columns that are padding in every row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

__all__ = ["METRIC_REWARD_STD", "Plan", "group_varies", "metric_problem", "metric_values", "pad_cat", "plan_batch",
           "refill_prompts", "resolve_metric", "trim_columns"]

METRIC_REWARD_STD = "reward_std"
_ATOL = 1e-6  # values closer than this count as equal (TRL sums float32 rewards)


def group_varies(values: torch.Tensor, group_size: int, atol: float = _ATOL) -> torch.Tensor:
    """(N / group_size,) bool: whether the finite values of each consecutive group differ by more than atol."""
    if values.dim() != 1 or values.numel() % group_size:
        raise ValueError(f"{tuple(values.shape)} values do not split into groups of {group_size}")
    grouped = values.detach().double().view(-1, group_size)
    finite = torch.isfinite(grouped)
    high = torch.where(finite, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1)
    low = torch.where(finite, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1)
    return (finite.sum(dim=1) >= 2) & ((high - low) > atol)


def metric_values(rewards_per_func: torch.Tensor, weights: torch.Tensor, index: int | None) -> torch.Tensor:
    """(N,) the values a group must vary in: one reward's column (`index`), or TRL's weighted total reward
    (NaN where every reward is None, as TRL marks unscorable completions)."""
    if index is not None:
        return rewards_per_func[:, index]
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    return total.masked_fill(torch.isnan(rewards_per_func).all(dim=1), float("nan"))


def resolve_metric(metric: str, names: list[list[str]]) -> int | None:
    """The reward index `metric` names (None for `reward_std`). `names[i]`: every name reward i answers to
    (recipe name, registered name, function name); raises ValueError naming the choices."""
    if metric == METRIC_REWARD_STD:
        return None
    for i, aliases in enumerate(names):
        if metric in aliases:
            return i
    choices = [METRIC_REWARD_STD] + [a[0] for a in names if a]
    raise ValueError(f"dynamic_sampling_metric: {metric!r} is not `reward_std` or a reward of this run "
                     f"(choices: {', '.join(choices)})")


def metric_problem(dynamic_sampling: bool, metric: str, reward_funcs) -> str | None:
    """Before any model loads: why `dynamic_sampling_metric` cannot be used with these `reward_funcs` (the
    recipe's names or dotted paths; a dotted path also answers to its last part), else None."""
    if not dynamic_sampling or metric == METRIC_REWARD_STD:
        return None
    names = [[str(n), str(n).rsplit(".", 1)[-1]] for n in (reward_funcs or [])]
    try:
        resolve_metric(metric, names)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Plan:
    """The samples one training batch holds, as (round, global sample index), `per_rank` per rank in rank
    order; the last `filler` of them come from dropped groups (trained with advantage 0)."""

    samples: list[tuple[int, int]]
    per_rank: int
    filler: int
    kept_groups: int  # informative groups with at least one sample in the batch
    informative_groups: int  # informative groups generated over all rounds
    generated_groups: int
    target_groups: int

    @property
    def short(self) -> bool:
        """Fewer informative groups than the target (the round cap was reached)."""
        return self.informative_groups < self.target_groups

    def rank_rows(self, rank: int) -> list[tuple[int, int]]:
        return self.samples[rank * self.per_rank:(rank + 1) * self.per_rank]


def enough(informative: list[torch.Tensor], target_groups: int) -> bool:
    """Whether the rounds so far hold `target_groups` informative groups."""
    return sum(int(f.sum()) for f in informative) >= target_groups


def plan_batch(informative: list[torch.Tensor], group_size: int, target_groups: int, ranks: int,
               micro_batches: int, allow_empty: bool = False) -> Plan:
    """Lay out the training batch (see the module docstring). `informative[r]`: round r's flags, one per
    group, global (the same on every rank). Raises ValueError when no group is informative, unless
    `allow_empty` (then the batch is one filler sample per micro-batch)."""
    kept = [(r, g) for r, flags in enumerate(informative) for g in flags.nonzero().flatten().tolist()]
    generated = sum(int(f.numel()) for f in informative)
    if not kept and not allow_empty:
        raise ValueError("no informative group")
    used = kept[:target_groups]
    samples = [(r, g * group_size + j) for r, g in used for j in range(group_size)]
    unit = ranks * micro_batches
    per_rank = (len(samples) // unit) * micro_batches
    filler = 0
    if per_rank == 0:  # fewer samples than one per micro-batch on every rank: fill from dropped groups
        dropped = [(r, g) for r, flags in enumerate(informative) for g in (~flags).nonzero().flatten().tolist()]
        pool = [(r, g * group_size + j) for r, g in dropped for j in range(group_size)]
        filler = unit - len(samples)
        if len(pool) < filler:
            raise ValueError(f"{len(samples) + len(pool)} samples cannot fill {unit} micro-batch rows")
        samples, per_rank = samples + pool[:filler], micro_batches
    else:
        samples = samples[:per_rank * ranks]
    whole = len({(r, s // group_size) for r, s in samples[:len(samples) - filler]})
    return Plan(samples, per_rank, filler, whole, len(kept), generated, target_groups)


def refill_prompts(num_rows: int, num_prompts: int, seed: int, step: int, round_index: int) -> list[int]:
    """`num_prompts` dataset row indices for extra round `round_index` of optimizer step `step`: a fresh
    permutation from (seed, step, round), repeated when the dataset has fewer rows than asked."""
    if num_rows < 1:
        raise ValueError("the dataset has no rows")
    key = hashlib.sha256(f"dynamic-sampling|{seed}|{step}|{round_index}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))
    out: list[int] = []
    while len(out) < num_prompts:
        out.extend(torch.randperm(num_rows, generator=gen).tolist())
    return out[:num_prompts]


def pad_cat(tensors: list[torch.Tensor], side: str = "right", value=0) -> torch.Tensor:
    """Concatenate along dim 0, padding dim 1 (on `side`) to the widest; 1-D tensors are joined as they are."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    if tensors[0].dim() < 2:
        return torch.cat(tensors, dim=0)
    width = max(t.shape[1] for t in tensors)
    parts = []
    for t in tensors:
        missing = width - t.shape[1]
        if missing:
            pad = torch.full((t.shape[0], missing, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
            t = torch.cat([pad, t] if side == "left" else [t, pad], dim=1)
        parts.append(t)
    return torch.cat(parts, dim=0)


def trim_columns(mask: torch.Tensor, side: str) -> slice:
    """The column slice of a (B, T) mask that keeps every column some row uses (left- or right-padded)."""
    used = mask.bool().any(dim=0).nonzero().flatten()
    if used.numel() == 0:
        return slice(0, min(1, mask.shape[1]))
    return slice(int(used[0]), mask.shape[1]) if side == "left" else slice(0, int(used[-1]) + 1)
