"""Paired bootstrap CIs (rl/eval/stats.py)."""

from __future__ import annotations

import random

import pytest

from rl.eval.stats import group_sums, paired_bootstrap


def test_a_constant_shift_has_a_point_interval():
    before = [0.1, 0.5, 0.9, 0.3]
    after = [b + 0.2 for b in before]
    d = paired_bootstrap(before, after)
    assert d.diff == pytest.approx(0.2)
    assert d.low == pytest.approx(0.2) and d.high == pytest.approx(0.2)
    assert d.excludes_zero and d.units == 4 and d.groups == 4


def test_pure_noise_interval_covers_zero_and_a_real_gain_excludes_it():
    rng = random.Random(0)
    before = [rng.random() for _ in range(400)]
    noise = [b + rng.gauss(0, 0.1) for b in before]
    gain = [b + 0.05 + rng.gauss(0, 0.1) for b in before]
    assert not paired_bootstrap(before, noise).excludes_zero
    d = paired_bootstrap(before, gain)
    assert d.excludes_zero and d.low > 0.02


def test_grouping_by_document_widens_the_interval_of_clustered_gains():
    # 10 documents x 20 positions; the gain is a per-document effect (some documents gain, some lose)
    rng = random.Random(1)
    before, after, groups = [], [], []
    for doc in range(10):
        effect = rng.gauss(0.02, 0.1)
        for _ in range(20):
            b = rng.random()
            before.append(b)
            after.append(b + effect + rng.gauss(0, 0.01))
            groups.append(f"doc{doc}")
    per_position = paired_bootstrap(before, after)
    per_document = paired_bootstrap(before, after, groups)
    assert per_document.diff == pytest.approx(per_position.diff)
    assert (per_document.high - per_document.low) > 3 * (per_position.high - per_position.low)
    assert per_document.groups == 10


def test_group_sums_keep_first_seen_order():
    assert group_sums([1, 2, 3, 4], ["b", "a", "b", "c"]) == (["b", "a", "c"], [4.0, 2.0, 4.0], [2, 1, 1])


def test_bad_input():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_bootstrap([], [])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], ["a"])
