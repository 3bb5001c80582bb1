"""Entropy patching (rl/eval/patches.py) against an independent loop written from BLT's formulas."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rl.eval.patches import (
    bisect_threshold,
    count_patches,
    patch_lengths,
    patch_starts,
    split_long,
)


def reference(h, mode, theta, add=0.0, size=None, first=1, max_len=None):
    """Boundary flags built position by position, then the max-length rule by walking the patch."""
    n = len(h)
    flag = [False] * n
    for t in range(n):
        if t < first:
            flag[t] = True
        elif mode == "global":
            flag[t] = h[t] > theta
        elif mode == "monotonic":
            flag[t] = h[t] - h[t - 1] > theta
        elif mode == "threshold_add":
            flag[t] = h[t] > theta and h[t] - h[t - 1] > add
    if mode == "topk":
        k = max(min(first, n), min(n, math.ceil(n / size))) if n else 0
        chosen = set(range(min(first, n)))
        while len(chosen) < k:  # repeatedly add the highest remaining entropy, earliest on ties
            best = None
            for t in range(n):
                if t not in chosen and (best is None or h[t] > h[best]):
                    best = t
            chosen.add(best)
        flag = [t in chosen for t in range(n)]
    if max_len:
        run = 0
        for t in range(n):
            run = 1 if flag[t] else run + 1
            if run > max_len:
                flag[t], run = True, 1
    return [t for t in range(n) if flag[t]]


CASES = [
    ("global", {}), ("monotonic", {}), ("threshold_add", {"threshold_add": 0.3}),
    ("topk", {"target_patch_size": 3.0}), ("global", {"max_patch_length": 2}), ("monotonic", {"first": 2}),
    ("topk", {"target_patch_size": 1.5, "max_patch_length": 3}), ("threshold_add", {"max_patch_length": 4}),
]


def _ref_kwargs(kw):
    return {"add": kw.get("threshold_add", 0.0), "size": kw.get("target_patch_size"), "first": kw.get("first", 1),
            "max_len": kw.get("max_patch_length")}


@pytest.mark.parametrize("mode, kw", CASES)
def test_every_mode_matches_the_reference_loop(mode, kw):
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randint(0, 30)
        h = [round(rng.uniform(0, 3), 1) for _ in range(n)]  # rounding makes ties and equal neighbours
        theta = rng.choice([0.0, 0.5, 1.3354, 2.0, 5.0])
        assert patch_starts(h, mode, theta, **kw) == reference(h, mode, theta, **_ref_kwargs(kw)), (trial, h, theta)


@pytest.mark.parametrize("mode, kw", CASES)
def test_edge_cases(mode, kw):
    assert patch_starts([], mode, 1.0, **kw) == []
    assert patch_starts([2.5], mode, 1.0, **kw) == [0]
    if mode != "topk":  # all below theta: only the forced first starts, then the length cap
        starts = patch_starts([0.1] * 7, mode, 1.0, **kw)
        assert starts == reference([0.1] * 7, mode, 1.0, **_ref_kwargs(kw))
        assert starts[: kw.get("first", 1)] == list(range(kw.get("first", 1)))
        assert starts == (list(range(0, 7, kw["max_patch_length"])) if "max_patch_length" in kw
                          else list(range(kw.get("first", 1))))


def test_hand_computed():
    h = [0.2, 1.5, 0.4, 2.0, 2.1, 0.1]
    assert patch_starts(h, "global", 1.3354) == [0, 1, 3, 4]
    assert patch_starts(h, "monotonic", 1.0) == [0, 1, 3]
    assert patch_starts(h, "threshold_add", 1.3354, threshold_add=0.05) == [0, 1, 3, 4]
    assert patch_starts(h, "threshold_add", 1.3354, threshold_add=0.5) == [0, 1, 3]
    assert patch_starts(h, "topk", target_patch_size=2) == [0, 3, 4]
    assert patch_lengths([0, 1, 3, 4], 6) == [1, 2, 1, 2]
    assert patch_lengths([0, 3], 6, [1, 2, 3, 1, 1, 4]) == [6, 6]
    assert split_long([0, 5], 7, 2) == [0, 2, 4, 5]


@pytest.mark.parametrize("mode, kw", [c for c in CASES if c[0] != "topk"])
def test_patch_count_never_rises_with_theta(mode, kw):
    rng = random.Random(1)
    seqs = [[rng.expovariate(1.0) for _ in range(rng.randint(0, 40))] for _ in range(10)]
    counts = [count_patches(seqs, mode, theta / 10, **kw) for theta in range(-40, 60)]
    assert all(a >= b for a, b in itertools.pairwise(counts)) and counts[0] > counts[-1]


@pytest.mark.parametrize("mode", ["global", "monotonic", "threshold_add"])
def test_bisection_reaches_the_byte_target(mode):
    rng = random.Random(2)
    seqs = [[rng.expovariate(1.0) for _ in range(50)] for _ in range(8)]
    total = 4 * 400  # four bytes per token
    theta = bisect_threshold(seqs, total, 10.0, mode)
    assert total / count_patches(seqs, mode, theta) >= 10.0
    assert total / count_patches(seqs, mode, theta - 1e-6) < 10.0  # the lowest such theta
    huge = bisect_threshold(seqs, total, 1e9, mode)  # unreachable: forced starts only
    assert count_patches(seqs, mode, huge) == len(seqs)


def test_bad_arguments():
    for kwargs, match in [({"mode": "bytes"}, "patching mode"), ({"first": 0}, "first"),
                          ({"max_patch_length": 0}, "max_patch_length"), ({"mode": "topk"}, "target_patch_size")]:
        with pytest.raises(ValueError, match=match):
            patch_starts([1.0, 2.0], **kwargs)
    with pytest.raises(ValueError, match="no threshold"):
        bisect_threshold([[1.0]], 4, 2.0, "topk")
