"""Dynamic sampling's extra generation cost in the dry run (rl/train/preflight/sampling_cost.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rl.train.preflight.sampling_cost import describe_dynamic_sampling, expected_generation_batches
from rl.train.signal_check import SignalReport


def recipe(**fields):
    base = dict(dynamic_sampling=True, dynamic_sampling_metric="reward_std", dynamic_sampling_max_batches=10,
                dynamic_sampling_start_step=0, num_generations=16)
    return SimpleNamespace(**{**base, **fields})


def seen(groups_with_signal: int, prompts: int) -> SignalReport:
    return SignalReport(prompts=prompts, generations=16, mean_reward=0.5, groups_with_signal=groups_with_signal)


@pytest.mark.parametrize("share, cap, batches", [
    (1.0, 10, 1.0),     # every group informative: no extra generation
    (0.5, 10, 2.0),
    (0.25, 10, 4.0),
    (0.05, 10, 10.0),   # 1/p = 20 is above the cap
    (0.0, 6, 6.0),      # nothing varies: every step runs to the cap
])
def test_expected_generation_batches_is_one_over_the_share_capped(share, cap, batches):
    assert expected_generation_batches(share, cap) == pytest.approx(batches)


@pytest.mark.parametrize("share, cap", [(-0.1, 10), (1.5, 10), (0.5, 0)])
def test_impossible_inputs_are_refused(share, cap):
    with pytest.raises(ValueError):
        expected_generation_batches(share, cap)


def test_off_says_nothing():
    assert describe_dynamic_sampling(recipe(dynamic_sampling=False)) is None


def test_before_training_it_states_the_formula_and_the_cap():
    line = describe_dynamic_sampling(recipe(dynamic_sampling_start_step=500))
    assert line.startswith("groups whose 16 completions all get the same total reward are dropped from step 500")
    assert "about 1/p generation batches per step" in line and "at most 10x" in line
    assert line.endswith("the signal check at the start of training measures p")


def test_the_signal_checks_share_gives_the_figure():
    line = describe_dynamic_sampling(recipe(), seen(2, 8))
    assert "the signal check saw p = 2/8: about 4 generation batches per step at the start (+300% generation time)" \
        in line


def test_a_named_metric_says_the_share_was_seen_on_the_total_reward():
    line = describe_dynamic_sampling(recipe(dynamic_sampling_metric="accuracy"), seen(8, 8))
    assert line.startswith("groups whose 16 completions all get the same `accuracy` reward")
    assert "p = 8/8 (on the total reward): about 1 generation batches per step at the start (+0% generation time)" \
        in line


def test_no_varying_group_runs_to_the_cap():
    assert describe_dynamic_sampling(recipe(dynamic_sampling_max_batches=3), seen(0, 8)).endswith(
        "the signal check saw p = 0/8: every step would run to the cap")


def test_a_cap_of_one_never_refills():
    line = describe_dynamic_sampling(recipe(dynamic_sampling_max_batches=1), seen(2, 8))
    assert line.endswith("at 1 it never refills: a step trains on fewer groups, generation costs nothing extra")
