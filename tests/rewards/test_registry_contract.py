"""The contract every registered reward keeps (rewards/registry.py), run over the whole registry.

A new reward joins these tests by being registered (with an `example_row` of the columns it reads):
TRL's keyword call, chat and text completions, None rows of a mixed dataset, and hostile model
output (huge, unbalanced braces, lone surrogates, empty, None content) never raise and always
give one finite score or None per completion.
"""

from __future__ import annotations

import contextlib
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


class StubScorer:
    """Stands in for the trainer's policy scorer (rl/train/rlp_trainer.py `RLPScorer`), so a reward
    registered `needs_policy` runs its own text handling here instead of returning None unbound.
    It checks what the reward hands over (one entry per completion in every list; a thought is a
    (str, bool) pair or None) and scores each row that has all its fields with a finite number."""

    def __init__(self):
        self.calls = 0

    def information_gain(self, thoughts, completion_ids, *columns):
        self.calls += 1
        n = len(thoughts)
        assert len(completion_ids) == n and all(len(c) == n for c in columns)
        out = []
        for thought, *fields in zip(thoughts, *columns):
            assert thought is None or (isinstance(thought[0], str) and isinstance(thought[1], bool))
            out.append(None if thought is None or any(f is None for f in fields) else -float(len(thought[0]) % 7))
        return out


def _call(spec, completions, rows):
    """Call the reward exactly as TRL 1.16's `_calculate_rewards` does (keywords only); a reward that
    scores with the policy gets a stub scorer bound through its registration, as the trainer binds its own."""
    prompts = ["p"] * len(completions)
    columns = {key: [row.get(key) for row in rows] for key in spec.example_row}
    stub = StubScorer()
    with spec.bind_scorer(stub) if spec.needs_policy else contextlib.nullcontext():
        out = spec.func(prompts=prompts, completions=completions, completion_ids=[[1, 2]] * len(completions),
                        trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
                        **columns)
    if spec.needs_policy:
        assert stub.calls == 1, f"{spec.name}: bound scorer not used"
    return out


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
    if spec.needs_policy:  # the example row is a whole row: the stub scores every completion of it
        assert None not in _call(spec, completions, [spec.example_row] * len(texts))


def test_policy_scored_rewards_register_how_to_bind_their_scorer():
    from rewards.registry import register_reward

    assert all(spec.bind_scorer is not None for spec in REGISTRY.values() if spec.needs_policy)
    with pytest.raises(ValueError, match="registers no bind_scorer"):
        register_reward("contract-test-unbound", needs_policy=True)(lambda prompts, completions, **kw: [])
    assert "contract-test-unbound" not in REGISTRY


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
