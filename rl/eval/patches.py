"""Entropy patching, as in the Byte Latent Transformer (BLT, Meta, arXiv 2412.09871, section 2.3).

BLT groups bytes into variable-length patches and runs its large "global" transformer once per
patch, not once per byte: a patch starts where a small LM finds the next step hard to predict, so
compute goes where the information is. Here the units are a model's tokens (any entropy sequence
works: a byte-level entropy model can be plugged in where a user has one). Written from the
paper's formulas, not from BLT's code (which is CC-BY-NC).

`entropies[t]` is the entropy (nats) of the model's distribution when predicting unit t of one
sequence. Start rules:

* `global`: unit t starts a patch when H_t > theta (paper: the global constraint).
* `monotonic`: when H_t - H_{t-1} > theta (the approximate monotonic constraint; t >= 1).
* `threshold_add`: when both hold, H_t > theta and H_t - H_{t-1} > theta_add.
* `topk`: the k = ceil(n / target_patch_size) units of highest entropy start patches (ties to the
  earlier unit), for a chosen mean patch size instead of a threshold.

In every mode the first `first` units always start a patch (there is no earlier unit to continue),
and with `max_patch_length` L a longer patch is split every L units. `threshold_for_target` finds the
theta that gives a target mean patch size in bytes (`--target-bytes-per-patch`), and says when no
theta can (`bisect_threshold`: the theta alone).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

MODES = ("global", "monotonic", "threshold_add", "topk")
# BLT's default global entropy threshold (nats), used when the user gives none.
BLT_THRESHOLD = 1.3354


def _check(mode: str, first: int, max_patch_length: int | None) -> None:
    if mode not in MODES:
        raise ValueError(f"patching mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if first < 1:
        raise ValueError(f"first: at least the first unit starts a patch, got {first}")
    if max_patch_length is not None and max_patch_length < 1:
        raise ValueError(f"max_patch_length: must be at least 1, got {max_patch_length}")


def patch_starts(entropies: Sequence[float], mode: str = "global", threshold: float = BLT_THRESHOLD, *,
                 threshold_add: float = 0.0, target_patch_size: float | None = None, first: int = 1,
                 max_patch_length: int | None = None) -> list[int]:
    """Sorted indices of the units that start a patch (pure; see the module doc for the rules).

    An empty sequence has no patches. `threshold` is theta (global, monotonic, threshold_add);
    `threshold_add` the difference threshold of threshold_add; `target_patch_size` the mean patch
    size in units for topk.
    """
    _check(mode, first, max_patch_length)
    n = len(entropies)
    if n == 0:
        return []
    h = [float(x) for x in entropies]
    head = min(first, n)
    if mode == "topk":
        if target_patch_size is None or not target_patch_size > 0:
            raise ValueError(f"topk patching needs target_patch_size > 0, got {target_patch_size}")
        k = max(head, min(n, math.ceil(n / target_patch_size - 1e-9)))
        rest = sorted(range(head, n), key=lambda t: (-h[t], t))[: k - head]
        starts = sorted([*range(head), *rest])
    else:
        starts = list(range(head))
        for t in range(head, n):
            jump = h[t] - h[t - 1]
            if mode == "global":
                ok = h[t] > threshold
            elif mode == "monotonic":
                ok = jump > threshold
            else:
                ok = h[t] > threshold and jump > threshold_add
            if ok:
                starts.append(t)
    if max_patch_length is not None:
        starts = split_long(starts, n, max_patch_length)
    return starts


def split_long(starts: Sequence[int], n: int, max_patch_length: int) -> list[int]:
    """Add starts so that no patch is longer than `max_patch_length` units (each long patch is cut
    every max_patch_length units from its own start)."""
    out: list[int] = []
    bounds = list(starts) + [n]
    for a, b in itertools.pairwise(bounds):
        out.extend(range(a, b, max_patch_length))
    return out


def patch_lengths(starts: Sequence[int], n: int, unit_sizes: Sequence[int] | None = None) -> list[int]:
    """Length of each patch in units, or in `unit_sizes` (e.g. bytes per token) when given."""
    bounds = list(starts) + [n]
    if unit_sizes is None:
        return [b - a for a, b in itertools.pairwise(bounds)]
    return [sum(unit_sizes[a:b]) for a, b in itertools.pairwise(bounds)]


def count_patches(sequences: Sequence[Sequence[float]], mode: str, threshold: float, **kwargs) -> int:
    """Total patches over several sequences (each cut on its own)."""
    return sum(len(patch_starts(s, mode, threshold, **kwargs)) for s in sequences)


def bisect_threshold(sequences: Sequence[Sequence[float]], total_bytes: int, target_bytes_per_patch: float,
                     mode: str = "global", *, iterations: int = 60, **kwargs) -> float:
    """Theta whose patches average `target_bytes_per_patch` bytes (`total_bytes` / patches); see
    `threshold_for_target`, which also says whether the target was reached."""
    return threshold_for_target(sequences, total_bytes, target_bytes_per_patch, mode, iterations=iterations,
                                **kwargs)[0]


def threshold_for_target(sequences: Sequence[Sequence[float]], total_bytes: int, target_bytes_per_patch: float,
                         mode: str = "global", *, iterations: int = 60, **kwargs) -> tuple[float, float, bool]:
    """(theta, mean bytes per patch at theta, reached): theta whose patches average `target_bytes_per_patch`.

    The patch count never rises as theta rises (a start that passes a higher threshold passes a
    lower one, and the max-length split only refines), so bisection applies. The count is a step
    function: theta is the smallest found (to `iterations` halvings) whose mean patch size reaches
    the target, i.e. the lowest threshold that is coarse enough. When even the coarsest cut (only
    the forced starts and the `max_patch_length` splits) is finer than the target, the target cannot
    be reached: theta is that bound and `reached` is False.
    """
    if mode == "topk":
        raise ValueError("topk patching has no threshold; give the target patch size directly")
    if not (math.isfinite(target_bytes_per_patch) and target_bytes_per_patch > 0):
        raise ValueError(f"target bytes per patch must be a finite number > 0, got {target_bytes_per_patch}")
    values = [float(x) for s in sequences for x in s]
    if not values:
        raise ValueError("no entropies to choose a threshold from")
    span = max(values) - min(values)
    # Differences (monotonic) range over [-span, span]; below that every unit starts, above none.
    lo, hi = -span - 1.0, max(abs(v) for v in values) + span + 1.0

    def mean_bytes(theta: float) -> float:
        return total_bytes / max(1, count_patches(sequences, mode, theta, **kwargs))

    if mean_bytes(hi) < target_bytes_per_patch:
        return hi, mean_bytes(hi), False  # even the coarsest cut is finer than the target
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if mean_bytes(mid) >= target_bytes_per_patch:
            hi = mid
        else:
            lo = mid
    return hi, mean_bytes(hi), True
