"""The contract every registered reward keeps (rewards/registry.py), run over the whole registry.

A new reward joins these tests by being registered (with an `example_row` of the columns it reads):
TRL's keyword call, chat and text completions, None rows of a mixed dataset, and hostile model
output (huge, unbalanced braces, lone surrogates, empty, None content) never raise and always
give one finite score or None per completion.
"""

from __future__ import annotations

import math

import pytest

import rewards
from rewards.registry import NON_COLUMN_PARAMS, REGISTRY, column_params, required_columns, spec_of

pytest.importorskip("math_verify")  # math_reward needs it; the contract covers every registered reward

NAMES = sorted(REGISTRY)

HOSTILE_TEXTS = [
    "",
    "\\boxed{",
    "}}}}\\boxed{a}}}{{{",
    "\\boxed{" * 5_000 + "x",
    "{" * 20_000 + "\\boxed{1}" + "}" * 3,
    "x" * 1_000_000,
    "\\boxed{\ud800}",  # lone surrogate (valid in a Python str, not in UTF-8)
    "\udcff\udc80 \\boxed{ on}",
    "</think></think>\\boxed{}",
    "\x00\\boxed{\x00}",
    "Answer: " + "9" * 5_000,
]
HOSTILE_CHAT = [
    [{"role": "assistant", "content": None}],
    [{"role": "assistant"}],
    [{"role": "user", "content": "no assistant turn"}],
    [{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "\\boxed{ on}"}, 7, None]}],
    [],
    [None],
    {"role": "assistant", "content": "\\boxed{ on}"},
]


def _call(spec, completions, rows):
    """Call the reward exactly as TRL 1.16's `_calculate_rewards` does (keywords only)."""
    prompts = ["p"] * len(completions)
    columns = {key: [row.get(key) for row in rows] for key in spec.example_row}
    return spec.func(prompts=prompts, completions=completions, completion_ids=[[1, 2]] * len(completions),
                     trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
                     **columns)


def _assert_scores(out, n):
    assert isinstance(out, list) and len(out) == n
    for value in out:
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(float(value))), value


def test_every_listed_reward_is_registered_once_with_a_usable_spec():
    assert set(rewards.REWARD_FUNCS) == set(REGISTRY)
    for name, spec in REGISTRY.items():
        assert rewards.get_reward_func(name) is spec.func and spec_of(spec.func) is spec
        assert spec.rpt_format in (None, "reasoning", "completion")
        declared = set(required_columns([spec.func])[spec.func.__name__])
        assert declared <= set(spec.example_row), f"{name}: example_row lacks required columns"
        params = column_params(spec.func)
        assert params is not None and not (set(params[0] + params[1]) & NON_COLUMN_PARAMS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chat", [False, True], ids=["text", "chat"])
def test_example_row_scores_with_trls_keyword_call(name, chat):
    spec = REGISTRY[name]
    texts = ["\\boxed{ on}", " on", "nothing"]
    completions = [[{"role": "assistant", "content": t}] for t in texts] if chat else texts
    _assert_scores(_call(spec, completions, [spec.example_row] * len(texts)), len(texts))


@pytest.mark.parametrize("name", NAMES)
def test_none_rows_of_a_mixed_dataset_get_none_or_a_score(name):
    spec = REGISTRY[name]
    none_row = {key: None for key in spec.example_row}
    out = _call(spec, ["\\boxed{ on}", " on"], [none_row, spec.example_row])
    _assert_scores(out, 2)
    if spec.example_row:  # a row with none of the reward's columns is not its row: it must not score it 1
        assert out[0] is None or out[0] == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_hostile_model_output_never_raises(name):
    spec = REGISTRY[name]
    completions = HOSTILE_TEXTS + [[{"role": "assistant", "content": t}] for t in HOSTILE_TEXTS] + HOSTILE_CHAT
    completions.append(None)
    _assert_scores(_call(spec, completions, [spec.example_row] * len(completions)), len(completions))


@pytest.mark.parametrize("name", NAMES)
def test_the_guards_wrapper_keeps_the_registration(name):
    from rl.runtime.faults import wrap_reward

    spec = REGISTRY[name]
    wrapped = wrap_reward(spec.func)
    assert spec_of(wrapped) is spec and wrapped.__name__ == spec.func.__name__
