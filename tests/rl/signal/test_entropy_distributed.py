"""select_forking_tokens / masked_stats over real gloo ranks (2, and 4 with an empty rank) holding different
numbers of tokens.

Each case is a global population; rank 0 and rank 1 take consecutive slices of it (different
sizes and shapes). The union of the ranks' masks must equal the single-process selection on the
whole population, and both ranks must report the single-process threshold and statistics.
All ranks run all cases in one spawn (process start-up dominates the cost); the parent asserts.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist

from rl.signal.entropy import masked_stats, select_forking_tokens
from tests.ranks import init_gloo, spawn_ranks

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

WORLD = 2


def _cases() -> dict[str, dict]:
    """name -> global population (1-D), valid mask, keys or None, ratio, per-rank shapes."""
    g = torch.Generator().manual_seed(1234)
    cases = {}

    def add(name, e, ratio, shapes, valid=None, keys=None):
        n = e.numel()
        if valid is None:
            valid = torch.rand(n, generator=g) < 0.8
        assert sum(math.prod(s) for s in shapes) == n
        cases[name] = dict(e=e, valid=valid, keys=keys, ratio=ratio, shapes=shapes)

    shapes = [(3, 37), (5, 11)]  # 111 and 55 tokens
    add("random", torch.rand(166, generator=g) * 3, 0.2, shapes)
    ties = torch.randint(0, 3, (166,), generator=g).float() * 0.5
    ties[ties == 0] = -0.0
    add("ties_default_keys", ties, 0.3, shapes)
    add("ties_global_keys", ties.clone(), 0.3, shapes, keys=torch.randperm(166, generator=g))
    add("float64", torch.rand(166, generator=g, dtype=torch.float64), 0.25, shapes)
    add("bfloat16", (torch.rand(166, generator=g) * 4).bfloat16(), 0.2, shapes)
    add("ratio_one", torch.rand(166, generator=g), 1.0, shapes)
    add("rank1_empty", torch.rand(40, generator=g), 0.2, [(4, 10), (0,)])
    add("no_valid", torch.rand(166, generator=g), 0.2, shapes, valid=torch.zeros(166, dtype=torch.bool))
    nan = torch.rand(166, generator=g)
    valid = torch.ones(166, dtype=torch.bool)
    nan[150] = math.nan  # on rank 1
    add("nan_on_rank1", nan, 0.2, shapes, valid=valid)
    big = torch.randint(0, 1000, (200_000,), generator=g).float() / 100  # many ties, bigger counts
    add("big_ties", big, 0.2, [(137_000,), (63, 1000)])
    return cases


def _cases_4() -> dict[str, dict]:
    """Populations split over 4 ranks: an empty rank, a 1-token rank, different shapes, many ties."""
    g = torch.Generator().manual_seed(10)
    n = 3000
    e = torch.randint(0, 6, (n,), generator=g).float() * 0.25  # many ties across ranks
    valid = torch.rand(n, generator=g) < 0.85
    keys = torch.randperm(n, generator=g)
    cases = {}
    for suffix, k in (("", None), ("_keys", keys)):
        cases["uneven" + suffix] = dict(e=e, valid=valid, keys=k, ratio=0.3, shapes=[(0,), (700,), (1,), (11, 209)])
        cases["even" + suffix] = dict(e=e, valid=valid, keys=k, ratio=0.3, shapes=[(750,), (750,), (750,), (25, 30)])
    return cases


CASES_BY_WORLD = {2: _cases, 4: _cases_4}


def _local(case: dict, rank: int):
    sizes = [math.prod(s) for s in case["shapes"]]
    start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
    shape = case["shapes"][rank]
    keys = None if case["keys"] is None else case["keys"][start:stop].reshape(shape)
    return case["e"][start:stop].reshape(shape), case["valid"][start:stop].reshape(shape), keys


def _worker(rank: int, world: int, init_method: str, outdir: str) -> None:
    """One rank: run every case through the real gloo group, save results for the parent."""
    init_gloo(rank, world, init_method)
    try:
        results = {}
        for name, case in CASES_BY_WORLD[world]().items():
            e, valid, keys = _local(case, rank)
            try:
                mask, thr = select_forking_tokens(e, valid, case["ratio"], dist.group.WORLD, order_key=keys)
            except ValueError as exc:
                results[name] = f"ValueError: {exc}"
                continue
            stats = masked_stats(e, valid, mask, dist.group.WORLD, threshold=thr)
            results[name] = (mask, thr, stats)
        torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path_factory, world: int) -> list[dict]:
    outdir = tmp_path_factory.mktemp(f"entropy-dist{world}")
    spawn_ranks(_worker, world, str(outdir))
    return [torch.load(outdir / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    return _spawn(tmp_path_factory, WORLD)


@pytest.fixture(scope="module")
def rank_results_4(tmp_path_factory):
    return _spawn(tmp_path_factory, 4)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _check_union(case: dict, per_rank: list) -> None:
    """The ranks' masks, concatenated, equal the single-process selection; every rank has its threshold/stats."""
    want_mask, want_thr = select_forking_tokens(case["e"], case["valid"], case["ratio"], order_key=case["keys"])
    want_stats = masked_stats(case["e"], case["valid"], want_mask, threshold=want_thr)
    assert all(not isinstance(p, str) for p in per_rank), per_rank
    for rank, (mask, thr, _) in enumerate(per_rank):
        assert mask.shape == case["shapes"][rank] and thr.dtype == case["e"].dtype
    union = torch.cat([mask.reshape(-1) for mask, _, _ in per_rank])
    assert torch.equal(union, want_mask)
    n_valid = int(case["valid"].sum())
    assert int(union.sum()) == math.ceil(round(case["ratio"] * n_valid, 9))
    for _, thr, stats in per_rank:
        assert _same(thr.item(), want_thr.item())
        assert stats.keys() == want_stats.keys()
        assert all(_same(stats[k], want_stats[k]) or math.isclose(stats[k], want_stats[k], rel_tol=1e-12)
                   for k in stats), (stats, want_stats)


@pytest.mark.parametrize("name", [n for n in _cases() if n != "nan_on_rank1"])
def test_union_equals_single_process(rank_results, name):
    _check_union(_cases()[name], [rank_results[r][name] for r in range(WORLD)])


@pytest.mark.parametrize("name", list(_cases_4()))
def test_four_ranks_union_equals_single_process(rank_results_4, name):
    _check_union(_cases_4()[name], [rank_results_4[r][name] for r in range(4)])


def test_nan_on_one_rank_raises_on_every_rank(rank_results):
    for r in range(WORLD):
        msg = rank_results[r]["nan_on_rank1"]
        assert isinstance(msg, str) and msg.startswith("ValueError") and "NaN" in msg and "[1]" in msg
