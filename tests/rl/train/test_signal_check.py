"""The signal check: pure parts, sampling and scoring (the sampler itself: tests/rl/signal/test_sampling.py),
and `rl train` stopping on no signal."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from rl.errors import UserError
from rl.train.signal_check import (
    SignalReport,
    combine_rewards,
    format_hint,
    groups_with_signal,
    pick_rows,
    run_signal_check,
)


def test_combine_rewards_is_trls_weighted_nansum():
    assert combine_rewards([[1.0, None, 0.0], [0.5, 1.0, float("nan")]], [1.0, 0.1]) == [1.05, 0.1, 0.0]
    assert combine_rewards([[1.0, 0.0]], None) == [1.0, 0.0]
    assert combine_rewards([], None) == []


def test_groups_with_signal_counts_groups_with_unequal_rewards():
    assert groups_with_signal([0, 0, 1, 1, 0, 1], 2) == 1
    assert groups_with_signal([0, 0, 0, 0], 2) == 0
    assert groups_with_signal([0.0, 1e-12, 0.3, 0.3], 2) == 0  # float noise is not signal
    with pytest.raises(ValueError):
        groups_with_signal([0, 1, 0], 2)


def test_pick_rows_spreads_over_the_data_deterministically():
    assert pick_rows(100, 4) == [0, 25, 50, 75]
    assert pick_rows(3, 8) == [0, 1, 2]
    assert pick_rows(0, 8) == []


def test_no_signal_message_says_what_was_seen_and_what_to_change():
    from rewards.rpt import rpt_reward

    report = SignalReport(prompts=8, generations=8, mean_reward=0.0, groups_with_signal=0,
                          reward_means={"rpt_reward": 0.0}, boxed=0, example="\\n\\n\\text{The")
    message = report.no_signal_message(format_hint([rpt_reward]))
    assert "\n" not in message
    assert "all 64 samples of 8 training prompts got the same reward (0.000)" in message
    assert "complete \\boxed{} in 0 of 64" in message
    assert "rpt_format: completion" in message and "signal_check: warn" in message
    assert "0 of 8 groups" in report.format()


def _rows(n=4):
    return [{"prompt": f"Count: {i}, {i + 1},", "continuation": f" {i + 2}", "boundaries": [len(f" {i + 2}")],
             "doc_id": f"d{i}"} for i in range(n)]


def test_run_signal_check_scores_like_trl_and_leaves_the_rng_alone(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seen = {}

    def length_reward(completions, completion_ids, doc_id, **kwargs):
        seen["doc_id"] = doc_id
        return [float(len(c)) for c in completion_ids]

    def never(completions, **kwargs):
        return [None] * len(completions)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    report = run_signal_check(model, tok, _rows(), [length_reward, never], [1.0, 5.0], generations=3,
                              max_new_tokens=4, prompts=2, temperature=1.0)
    assert torch.equal(torch.get_rng_state(), state)  # training draws the same samples with the check on or off
    assert report.prompts == 2 and report.generations == 3 and report.samples == 6
    assert seen["doc_id"] == ["d0"] * 3 + ["d2"] * 3  # dataset columns arrive per completion, as TRL passes them
    assert 1.0 <= report.mean_reward <= 4.0
    assert math.isnan(report.reward_means["never"])
    again = run_signal_check(model, tok, _rows(), [length_reward], None, generations=3, max_new_tokens=4, prompts=2)
    assert again.mean_reward == report.mean_reward  # seeded: the same samples


def _recipe(tmp_path: Path, model_dir: Path, **overrides) -> Path:
    import json

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(8)), encoding="utf-8")
    recipe = {"model_name_or_path": str(model_dir), "dataset_path": str(data), "output_dir": str(tmp_path / "run"),
              "reward_funcs": ["rpt"], "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
              "max_completion_length": 4, "bf16": False, "gradient_checkpointing": False, "use_cpu": True,
              "report_to": ["none"], "save_strategy": "no", "seed": 0, "signal_check_prompts": 4}
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.mark.slow
def test_rl_train_stops_before_step_one_when_no_group_has_signal(tmp_path, tiny_model_dir, capsys):
    from rl.train.command import train

    # A random tiny model never writes \boxed{}: every rpt reward is 0, GRPO would learn nothing.
    recipe = _recipe(tmp_path, tiny_model_dir)
    with pytest.raises(UserError, match=r"signal check: no signal for GRPO: all 8 samples of 4 training prompts") as info:
        train(["--config", str(recipe)])
    assert "rpt_format: completion" in str(info.value) and "\n" not in str(info.value)
    assert "0 of 4 groups have unequal rewards" in capsys.readouterr().out
    assert not list((tmp_path / "run").glob("checkpoint-*"))

    # `warn` prints the same and trains anyway
    assert train(["--config", str(_recipe(tmp_path, tiny_model_dir, signal_check="warn"))]) == 0
    assert "signal check:" in capsys.readouterr().out


def test_signal_check_field_is_validated(tmp_path, tiny_model_dir):
    from rl.train.recipe import parse_recipe

    with pytest.raises(UserError, match="signal_check: expected `stop`, `warn` or `off`"):
        parse_recipe(["--config", str(_recipe(tmp_path, tiny_model_dir, signal_check="maybe"))])
    with pytest.raises(UserError, match="rpt_format: expected `reasoning`, `completion` or `rlp`"):
        parse_recipe(["--config", str(_recipe(tmp_path, tiny_model_dir, rpt_format="poem"))])
