"""The preflight's check list (rl/train/preflight/checks.py): every listed check passes a clean plan,
each finds the problem it is for, and a check added to the list reaches both doors (`rl train` raises
it before any model loads, `rl train --dry-run` lists it) with nothing else to wire.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from rewards import get_reward_funcs
from rl.train.preflight import checks
from rl.train.preflight.dryrun import dry_run
from rl.train.preflight.parse import parse_for_target
from rl.train.preflight.plan import RunPlan, recipe_view
from tests.kit import cli_error, rpt_rows, tiny_recipe, write_jsonl, write_yaml


def recipe_path(tmp_path, model="unused-model", **fields):
    data = write_jsonl(tmp_path / "data.jsonl", rpt_rows())
    return write_yaml(tmp_path / "recipe.yaml", tiny_recipe(model, tmp_path / "run", dataset_path=str(data), **fields))


def plan_of(tmp_path, world: int = 1, zero_stage: int | None = None, **fields) -> RunPlan:
    """The plan of the kit's tiny recipe (plus `fields`), parsed for `world` processes as the dry run does."""
    parsed = parse_for_target(["--config", str(recipe_path(tmp_path, **fields))], world)
    rewards = get_reward_funcs(parsed[0].reward_funcs, settings=parsed[1])
    return RunPlan(recipe=recipe_view(parsed), world_size=world, zero_stage=zero_stage, rewards=tuple(rewards))


def with_fields(plan: RunPlan, **fields) -> RunPlan:
    """`plan` with some recipe values replaced (as raw values the parse would have refused)."""
    return dataclasses.replace(plan, recipe=SimpleNamespace(**{**vars(plan.recipe), **fields}))


def test_every_listed_check_passes_a_clean_plan(tmp_path):
    """Whatever is in the list: a new check that fires on the kit's clean recipe fails here by name."""
    clean = plan_of(tmp_path, reward_funcs=["rlp"], save_steps=2, steps_per_generation=2)
    assert checks.CHECKS and len(set(checks.CHECKS)) == len(checks.CHECKS)
    for check in checks.CHECKS:
        assert check.__doc__, f"{check.__name__}: say what it checks and why"
        assert check(clean) is None, f"{check.__name__} finds a problem in a clean plan: {check(clean)}"
    assert checks.problems(clean) == []
    checks.raise_first(clean)  # nothing to raise


def test_each_check_finds_its_problem(tmp_path):
    clean = plan_of(tmp_path, reward_funcs=["rlp"], steps_per_generation=4, save_steps=4)
    batch = with_fields(clean, num_generations=3)  # 4 per device x 1 process x 4 steps = 16 completions
    assert "not a multiple of num_generations 3" in checks.generation_batch(batch)
    evaluating = with_fields(clean, eval_strategy="steps", per_device_eval_batch_size=3)
    assert checks.eval_batch(evaluating).startswith("eval batch: per_device_eval_batch_size 3 x 1 processes = 3")
    saving = with_fields(clean, save_steps=3)
    assert checks.save_steps_cycle(saving).startswith("save_steps: 3 is not a multiple of the generation cycle "
                                                       "(4 optimizer steps)")
    assert checks.reward_weights(with_fields(clean, reward_weights=[1.0, 0.5])).startswith(
        "reward_weights: 2 weight(s) for 1 reward function(s)")
    zero3 = dataclasses.replace(clean, zero_stage=3)
    assert checks.reward_teacher(zero3).startswith("rlp_teacher: `ema` without LoRA needs a whole copy")
    assert checks.reward_teacher(with_fields(zero3, use_peft=True)) is None
    assert checks.reward_teacher(dataclasses.replace(zero3, rewards=())) is None  # no reward scored vs a teacher
    with pytest.raises(Exception, match="^save_steps: 3"):
        checks.raise_first(saving)


def test_a_new_check_is_one_function_and_one_list_entry(tmp_path, tiny_model_dir, monkeypatch, capsys):
    def unlucky_seed(plan: RunPlan) -> str | None:
        """A made-up check: refuse seed 13."""
        return "seed: 13 is unlucky (a made-up rule)" if plan.field("seed") == 13 else None

    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, unlucky_seed])
    path = recipe_path(tmp_path, tiny_model_dir, reward_funcs=["rpt_completion"])
    # the dry run lists it
    assert "seed: 13 is unlucky (a made-up rule)" in dry_run(["--config", str(path), "--seed", "13"]).problems
    assert not any("made-up rule" in p for p in dry_run(["--config", str(path)]).problems)
    # rl train raises it, before any model loads
    import rl.train.command

    def no_model(*args, **kwargs):
        raise AssertionError("the trainer was built before the preflight's problem was raised")

    monkeypatch.setattr(rl.train.command, "build_trainer", no_model)
    assert cli_error(capsys, ["train", "--config", str(path), "--seed", "13"]) == \
        "error: seed: 13 is unlucky (a made-up rule)"
