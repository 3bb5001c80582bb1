"""Paired confidence intervals for before/after comparisons (pure numpy).

Why a paired bootstrap over groups (documents): the two models are scored on the same positions,
so the per-position differences carry the comparison, and positions of one document are not
independent (a model that learned a document's notation gains at all of its positions). Resampling
whole documents keeps that correlation inside each resample, so the interval is honest about it;
treating positions as independent would make it too narrow. The statistic is a ratio of sums
(mean over all positions of the resampled documents), the same estimator as the point value, and
the interval is the percentile interval of `n_boot` resamples (2.5th and 97.5th for 95%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class PairedDiff:
    """before, after and after - before (means over all units), with the 95% CI of the difference."""

    before: float
    after: float
    diff: float
    low: float
    high: float
    groups: int
    units: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "diff": self.diff, "ci95": [self.low, self.high],
                "groups": self.groups, "units": self.units}


def group_sums(values: Sequence[float], groups: Sequence) -> tuple[list, list[float], list[int]]:
    """(group keys in first-seen order, sum per group, count per group) of per-unit values."""
    order: dict = {}
    sums: list[float] = []
    counts: list[int] = []
    for value, key in zip(values, groups):
        if key not in order:
            order[key] = len(sums)
            sums.append(0.0)
            counts.append(0)
        sums[order[key]] += float(value)
        counts[order[key]] += 1
    return list(order), sums, counts


def paired_bootstrap(before: Sequence[float], after: Sequence[float], groups: Sequence | None = None, *,
                     n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> PairedDiff:
    """Paired bootstrap CI of mean(after) - mean(before) over units (positions, samples), resampling
    whole `groups` (documents; default: each unit its own group). See the module doc."""
    if len(before) != len(after):
        raise ValueError(f"paired values differ in length: {len(before)} vs {len(after)}")
    if not before:
        raise ValueError("no values to compare")
    groups = list(range(len(before))) if groups is None else list(groups)
    if len(groups) != len(before):
        raise ValueError("one group key per value is needed")
    _, before_sums, counts = group_sums(before, groups)
    _, after_sums, _ = group_sums(after, groups)
    return paired_bootstrap_sums(before_sums, after_sums, counts, n_boot=n_boot, seed=seed, level=level)


def paired_bootstrap_sums(before_sums: Sequence[float], after_sums: Sequence[float], counts: Sequence[int], *,
                          n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> PairedDiff:
    """The same from per-group sums (each group a document with `counts` units): the statistic is
    sum(after - before) / sum(counts) over the resampled groups."""
    import numpy as np

    b = np.asarray(before_sums, dtype=float)
    a = np.asarray(after_sums, dtype=float)
    n = np.asarray(counts, dtype=float)
    if not len(n) or n.sum() <= 0:
        raise ValueError("no values to compare")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(n), size=(n_boot, len(n)))
    stats = (a - b)[picks].sum(axis=1) / n[picks].sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    total = n.sum()
    return PairedDiff(float(b.sum() / total), float(a.sum() / total), float((a - b).sum() / total), float(low),
                      float(high), groups=len(n), units=int(total))
