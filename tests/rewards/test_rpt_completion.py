"""Completion-format RPT: the shared Eq. 3 core, the completion rules, and format mismatches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rewards import get_reward_funcs
from rewards.format import boxed_format_reward
from rewards.registry import spec_of
from rewards.rpt import (
    completion_prefix_reward,
    prefix_match_reward,
    rewarded_prefix_bytes,
    rpt_completion_exact_reward,
    rpt_completion_reward,
    rpt_reward,
)
from rl.errors import UserError

CONT = " paragraph is"  # tokens " para" | "graph" | " is"
BOUNDS = [5, 10, 13]


@pytest.mark.parametrize(
    "completion, prefix_rule, exact_rule",
    [
        (" para", 1.0, 1.0),  # exactly the first token
        (" paragraph", 1.0, 1.0),  # two whole tokens
        (" paragraph was", 1.0, 0.0),  # right for two tokens, then wrong: the rules differ
        (" parag", 1.0, 0.0),  # one whole token, then stops inside the second
        (" par", 0.0, 0.0),  # stops inside the first token
        ("para", 0.0, 0.0),  # the leading space is part of the token
        (" pare", 0.0, 0.0),  # first token wrong
        ("", 0.0, 0.0),
    ],
)
def test_completion_rules(completion, prefix_rule, exact_rule):
    assert completion_prefix_reward(completion, CONT, BOUNDS) == prefix_rule
    assert rpt_completion_reward([completion], continuation=[CONT], boundaries=[BOUNDS]) == [prefix_rule]
    assert rpt_completion_exact_reward([completion], continuation=[CONT], boundaries=[BOUNDS]) == [exact_rule]
    # the exact rule is Eq. 3 itself, the same function the boxed answer is scored with
    assert prefix_match_reward(completion, CONT, BOUNDS) == exact_rule


@given(st.text(max_size=12), st.text(min_size=1, max_size=12))
def test_shared_core_agrees_with_a_direct_reading_of_eq3(prediction, continuation):
    data = continuation.encode("utf-8")
    bounds = sorted({len(continuation[: i + 1].encode("utf-8")) for i in range(len(continuation))})
    got = rewarded_prefix_bytes(prediction, continuation, bounds)
    pred = prediction.encode("utf-8")
    expected = max([b for b in bounds if b <= len(pred) and pred[:b] == data[:b]], default=0)
    assert got == expected
    # Eq. 3 (the box rule) = the whole prediction is such a prefix
    eq3 = 1.0 if pred and len(pred) in bounds and data.startswith(pred) else 0.0
    assert prefix_match_reward(prediction, continuation, bounds) == eq3


def test_multibyte_completion_must_cover_whole_tokens():
    cont, bounds = "日本語", [3, 6, 9]
    assert completion_prefix_reward("日本x", cont, bounds) == 1.0
    assert completion_prefix_reward("日", cont, bounds) == 1.0
    assert completion_prefix_reward("x日", cont, bounds) == 0.0


def test_registry_names_and_none_rows():
    funcs = get_reward_funcs(["rpt_completion", "rpt_completion_exact"])
    assert funcs == [rpt_completion_reward, rpt_completion_exact_reward]
    out = rpt_completion_reward([" para", "x"], continuation=[CONT, None], boundaries=[BOUNDS, None],
                                rpt_format=["completion", None])
    assert out == [1.0, None]


def test_chat_completion_is_read_like_the_boxed_reward():
    msg = [{"role": "assistant", "content": " para"}]
    assert rpt_completion_reward([msg], continuation=[CONT], boundaries=[BOUNDS]) == [1.0]


@pytest.mark.parametrize(
    "func, fmt, hint",
    [
        (rpt_reward, "completion", "use reward `rpt_completion`"),
        (rpt_completion_reward, "reasoning", "use reward `rpt`"),
        (rpt_completion_exact_reward, "reasoning", "use reward `rpt`"),
    ],
)
def test_reward_on_rows_of_the_other_format_is_a_one_line_error(func, fmt, hint):
    with pytest.raises(UserError, match=f"row 1 is {fmt}-format.*{hint}") as info:
        func(["a", "b"], continuation=[CONT, CONT], boundaries=[BOUNDS, BOUNDS],
             rpt_format=[spec_of(func).rpt_format, fmt])
    assert "\n" not in str(info.value)


def test_rows_without_a_format_say_nothing_and_either_reward_applies():
    assert rpt_reward(["\\boxed{ para}"], continuation=[CONT], boundaries=[BOUNDS]) == [1.0]
    assert rpt_completion_reward([" para"], continuation=[CONT], boundaries=[BOUNDS], rpt_format=[None]) == [1.0]


def test_unknown_format_value_is_named():
    with pytest.raises(UserError, match="unknown `rpt_format` 'poetry'"):
        rpt_reward(["x"], continuation=[CONT], boundaries=[BOUNDS], rpt_format=["poetry"])


def test_boxed_format_reward_refuses_completion_rows():
    assert boxed_format_reward(["\\boxed{a}"], rpt_format=["reasoning"]) == [1.0]
    with pytest.raises(UserError, match="boxed_format_reward: row 0 is completion-format"):
        boxed_format_reward(["\\boxed{a}"], rpt_format=["completion"])


def test_check_dataset_names_the_dataset_row_across_batches():
    from datasets import Dataset

    from rewards.rpt import check_rpt_dataset

    rows = [{"continuation": CONT, "boundaries": BOUNDS, "rpt_format": "completion"} for _ in range(5)]
    rows[3]["rpt_format"] = "reasoning"
    data = Dataset.from_list(rows)
    with pytest.raises(UserError, match=r"^d.jsonl: rpt_completion_reward: row 3 is reasoning-format"):
        check_rpt_dataset(data, "d.jsonl", batch_size=2, expected="completion", source="rpt_completion_reward")
    with pytest.raises(UserError, match=r"row 0 is completion-format.*use reward `rpt_completion`"):
        spec_of(rpt_reward).check_dataset(data, "d.jsonl")
