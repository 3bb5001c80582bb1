"""DAPO's overlong shaping (rewards/overlong.py): TRL's soft punishment, its lengths from the recipe."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rewards import get_reward_func, get_reward_funcs
from rewards.overlong import overlong_summary, soft_overlong_punishment_reward
from rewards.registry import spec_of
from rl.errors import UserError


def _settings(**fields):
    return SimpleNamespace(**{"max_completion_length": 100, "overlong_buffer_length": 20, **fields})


def test_recipe_lengths_give_dapo_eq13():
    func = get_reward_func("soft_overlong_punishment", settings=_settings())
    lengths = [0, 80, 90, 100]
    assert func(completion_ids=[[1] * n for n in lengths]) == [0.0, 0.0, -0.5, -1.0]
    assert func.__name__ == "soft_overlong_punishment_reward"  # TRL's metric key rewards/<name>/mean
    assert spec_of(func).name == "soft_overlong_punishment"


def test_the_guards_wrapper_keeps_the_configured_registration():
    from rl.runtime.faults import wrap_reward_funcs

    (wrapped,) = wrap_reward_funcs(get_reward_funcs(["soft_overlong_punishment"], settings=_settings()), "raise")
    assert spec_of(wrapped).name == "soft_overlong_punishment"
    assert wrapped(prompts=["p"], completions=["x"], completion_ids=[[1] * 95]) == [-0.75]


def test_registered_form_uses_dapo_lengths():
    out = soft_overlong_punishment_reward(completion_ids=[[1] * 16_384, [1] * 18_432, [1] * 20_480])
    assert out == [0.0, -0.5, -1.0]
    assert get_reward_func("soft_overlong_punishment") is soft_overlong_punishment_reward


def test_other_rewards_ignore_settings():
    from rewards.math import math_reward

    assert get_reward_func("math", settings=_settings()) is math_reward


@pytest.mark.parametrize("fields, match", [
    ({"overlong_buffer_length": None}, "overlong_buffer_length: reward `soft_overlong_punishment` needs it"),
    ({"overlong_buffer_length": 0}, "overlong_buffer_length: must be a whole number of tokens >= 1"),
    ({"overlong_buffer_length": 100}, "overlong_buffer_length: 100 must be below max_completion_length"),
])
def test_bad_lengths_are_one_line_naming_the_field(fields, match):
    with pytest.raises(UserError, match=match):
        get_reward_funcs(["math", "soft_overlong_punishment"], settings=_settings(**fields))


def test_dry_run_line_states_the_shaping_and_the_truncation_mask():
    line = overlong_summary(_settings(max_completion_length=20_480, overlong_buffer_length=4_096,
                                      mask_truncated_completions=False), ["math", "soft_overlong_punishment"])
    assert "0 up to 16,384 tokens, linear to -1 at 20,480" in line and "stay in the loss" in line
    line = overlong_summary(_settings(mask_truncated_completions=True), ["math"])
    assert line.startswith("no `soft_overlong_punishment`") and "left out of the loss" in line
