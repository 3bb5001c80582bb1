"""The dry run's `overlong` line (rl/train/preflight/reward_checks.py, rewards/overlong.py): DAPO's soft punishment
built from the recipe's lengths and `mask_truncated_completions`, and a buffer that cannot shape as a problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.train.preflight.dryrun import dry_run

ROOT = Path(__file__).resolve().parents[4]
RECIPE = "recipes/forking/qwen3-8b-dapo.yaml"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their accelerate configs relative to the repository root


def test_the_dapo_recipe_states_its_overlong_shaping():
    report = dry_run(["--config", RECIPE])
    summary = dict(report.summary)
    assert summary["overlong"] == ("`soft_overlong_punishment` 0 up to 16,384 tokens, linear to -1 at 20,480 "
                                   "(overlong_buffer_length 4,096); mask_truncated_completions false: truncated "
                                   "completions stay in the loss")
    assert "soft_overlong_punishment -> trl.rewards" in summary["rewards"]  # TRL's own function, built from the recipe
    assert not [p for p in report.problems if "overlong" in p]


def test_a_buffer_as_long_as_the_completion_is_a_problem_naming_the_field():
    report = dry_run(["--config", RECIPE, "--overlong_buffer_length", "20480", "--mask_truncated_completions", "true"])
    assert any(p.startswith("overlong_buffer_length: 20480 must be below max_completion_length") for p in report.problems)
    assert dict(report.summary)["overlong"].startswith("mask_truncated_completions true")
