from rewards import get_reward_func
from rewards.format import boxed_format_reward


def test_boxed_format_reward():
    completions = [
        r"so \boxed{ para}",
        "no box here",
        r"\boxed{}",  # empty box: no answer
        r"\boxed{ unfinished",
        [{"role": "assistant", "content": r"I think \boxed{=}"}],
        r"\boxed{x}</think> then nothing",
    ]
    assert boxed_format_reward(completions) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_registered():
    assert get_reward_func("boxed_format") is boxed_format_reward
