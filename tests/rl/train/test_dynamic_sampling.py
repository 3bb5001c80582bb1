"""Dynamic sampling's pure part (rl/train/dynamic_sampling.py): which groups vary, the batch plan over
ranks, fresh prompts, padded joins. The trainer tests are tests/rl/train/test_dynamic_sampling_trainer.py."""

from __future__ import annotations

import math

import pytest
import torch

from rl.train.dynamic_sampling import (
    group_varies,
    metric_problem,
    metric_values,
    pad_cat,
    plan_batch,
    refill_prompts,
    resolve_metric,
    trim_columns,
)

nan = math.nan


def test_group_varies_ignores_unscorable_and_tiny_differences():
    values = torch.tensor([1.0, 1.0, 1.0, 1.0,   # equal: drop
                           0.0, 1.0, 0.0, 0.0,   # varies
                           nan, 2.0, 2.0, nan,   # equal among the scorable: drop
                           nan, nan, nan, 3.0,   # one scorable value: drop
                           nan, nan, nan, nan,   # unscorable: drop
                           0.5, 0.5 + 1e-9, 0.5, 0.5])  # float noise: drop
    assert group_varies(values, 4).tolist() == [False, True, False, False, False, False]
    with pytest.raises(ValueError):
        group_varies(values[:5], 4)


def test_metric_values_total_or_one_reward():
    rewards = torch.tensor([[1.0, 0.0], [nan, 2.0], [nan, nan]])
    weights = torch.tensor([1.0, 0.5])
    total = metric_values(rewards, weights, None)
    assert total[:2].tolist() == [1.0, 1.0] and math.isnan(float(total[2]))  # TRL: NaN only when all are None
    one = metric_values(rewards, weights, 1)
    assert one[:2].tolist() == [0.0, 2.0] and math.isnan(float(one[2]))


def test_metric_names():
    names = [["rpt", "rpt_reward"], ["my.mod.fn", "fn"]]
    assert resolve_metric("reward_std", names) is None
    assert resolve_metric("rpt_reward", names) == 0 and resolve_metric("fn", names) == 1
    with pytest.raises(ValueError, match="dynamic_sampling_metric: 'nope'.*reward_std, rpt, my.mod.fn"):
        resolve_metric("nope", names)
    assert metric_problem(True, "rpt", ["rpt", "boxed_format"]) is None
    assert metric_problem(True, "fn", ["my.mod.fn"]) is None
    assert "dynamic_sampling_metric" in metric_problem(True, "math", ["rpt"])
    assert metric_problem(False, "math", ["rpt"]) is None  # off: not checked


def flags(*bits):
    return torch.tensor([bool(b) for b in bits])


def test_full_batch_takes_whole_informative_groups_in_round_order():
    # 2 ranks x 1 micro-batch, groups of 2, target 4 groups (8 samples, 4 per rank)
    rounds = [flags(1, 0, 1, 0), flags(0, 1, 1, 1)]
    plan = plan_batch(rounds, group_size=2, target_groups=4, ranks=2, micro_batches=1)
    assert plan.samples == [(0, 0), (0, 1), (0, 4), (0, 5), (1, 2), (1, 3), (1, 4), (1, 5)]
    assert plan.per_rank == 4 and plan.filler == 0 and not plan.short
    assert plan.rank_rows(1) == [(1, 2), (1, 3), (1, 4), (1, 5)]
    assert (plan.informative_groups, plan.generated_groups, plan.kept_groups) == (5, 8, 4)


def test_short_batch_is_cut_to_equal_ranks_and_micro_batches():
    # 3 informative groups of 4 = 12 samples; 2 ranks x 4 micro-batches -> multiples of 8: 8 samples
    plan = plan_batch([flags(1, 1, 0, 1)], group_size=4, target_groups=4, ranks=2, micro_batches=4)
    assert plan.short and plan.per_rank == 4 and len(plan.samples) == 8 and plan.filler == 0
    assert plan.samples == [(0, s) for s in range(8)]  # the first two whole groups


def test_tiny_short_batch_is_filled_with_dropped_samples():
    # one informative group of 2; 2 ranks x 2 micro-batches need 4 rows: 2 fillers from dropped groups
    plan = plan_batch([flags(0, 1, 0)], group_size=2, target_groups=3, ranks=2, micro_batches=2)
    assert plan.samples == [(0, 2), (0, 3), (0, 0), (0, 1)] and plan.filler == 2 and plan.per_rank == 2
    with pytest.raises(ValueError, match="no informative group"):
        plan_batch([flags(0, 0)], group_size=2, target_groups=2, ranks=1, micro_batches=1)
    empty = plan_batch([flags(0, 0)], group_size=2, target_groups=2, ranks=2, micro_batches=1, allow_empty=True)
    assert empty.samples == [(0, 0), (0, 1)] and empty.filler == 2 and empty.kept_groups == 0 and empty.short


def test_refill_prompts_are_a_function_of_seed_step_and_round():
    a = refill_prompts(10, 4, seed=0, step=3, round_index=1)
    assert a == refill_prompts(10, 4, seed=0, step=3, round_index=1)  # every rank, and a resumed run
    assert len(set(a)) == 4 and all(0 <= i < 10 for i in a)
    others = {tuple(refill_prompts(10, 4, seed=s, step=t, round_index=r)) for s, t, r in ((1, 3, 1), (0, 4, 1), (0, 3, 2))}
    assert tuple(a) not in others
    assert len(refill_prompts(3, 7, 0, 0, 1)) == 7  # fewer rows than asked: permutations repeat


def test_pad_cat_and_trim_follow_trl_padding_sides():
    a = torch.tensor([[1, 2, 3]])
    b = torch.tensor([[4], [5]])
    assert pad_cat([a, b], "right", 0).tolist() == [[1, 2, 3], [4, 0, 0], [5, 0, 0]]
    assert pad_cat([a, b], "left", 9).tolist() == [[1, 2, 3], [9, 9, 4], [9, 9, 5]]
    assert pad_cat([torch.ones(2), torch.zeros(1)]).tolist() == [1, 1, 0]
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
    assert trim_columns(mask, "right") == slice(0, 3)
    assert trim_columns(mask, "left") == slice(1, 4)
