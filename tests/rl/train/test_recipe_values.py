"""Recipe values that used to be silently replaced: refused by `rl train` and its `--dry-run` alike."""

from __future__ import annotations

import pytest
import yaml

from rl.train.recipe import parse_recipe
from rl.train.preflight.dryrun import dry_run
from rl.errors import UserError
from tests.faults.helpers import write_recipe


@pytest.mark.parametrize("fields, message", [
    ({"max_steps": -3}, "max_steps: must be a positive number of optimizer steps, or -1"),
    ({"max_steps": 0}, "max_steps: must be a positive number"),
    ({"eval_fraction": 1.0}, "eval_fraction: must be in [0, 1)"),
    ({"eval_fraction": -0.1}, "eval_fraction: must be in [0, 1)"),
    ({"entropy_mask_side": "bottom", "top_entropy_quantile": 1.0}, "entropy_mask_side: `bottom` trains on"),
])
def test_bad_values_refused_by_run_and_dry_run(tmp_path, fields, message):
    recipe = write_recipe(tmp_path, "org/model", **fields)
    with pytest.raises(UserError, match=__import__("re").escape(message)):
        parse_recipe(["--config", str(recipe)])
    problems = dry_run(["--config", str(recipe)]).problems
    assert any(message in p for p in problems), problems


def test_minus_one_still_means_epochs(tmp_path):
    recipe = write_recipe(tmp_path, "org/model", max_steps=-1, eval_fraction=0.25)
    _, training_args, _ = parse_recipe(["--config", str(recipe)])
    assert training_args.max_steps == -1


def test_duplicate_key_is_refused_with_key_and_lines(tmp_path):
    recipe = write_recipe(tmp_path, "org/model")
    text = recipe.read_text() + "learning_rate: 0.5\n"
    recipe.write_text(text)
    first = 1 + next(i for i, line in enumerate(text.splitlines()) if line.startswith("learning_rate:"))
    last = len(text.splitlines())
    with pytest.raises(UserError, match=f"recipe.yaml:{last}: key 'learning_rate' appears twice "
                                        f"\\(lines {first} and {last}\\)"):
        parse_recipe(["--config", str(recipe)])
    assert any("appears twice" in p for p in dry_run(["--config", str(recipe)]).problems)


@pytest.mark.parametrize("make, message", [
    (lambda run: str(run / "checkpoint-99"), "is not a directory"),
    (lambda run: str((run / "checkpoint-2").mkdir(parents=True) or run / "checkpoint-2"), "is incomplete"),
])
def test_dry_run_checks_resume_from_checkpoint_as_the_run(tmp_path, make, message):
    recipe = write_recipe(tmp_path, "org/model")
    run = yaml.safe_load(recipe.read_text())["output_dir"]
    from pathlib import Path

    problems = dry_run(["--config", str(recipe), "--resume_from_checkpoint", make(Path(run))]).problems
    assert any("resume_from_checkpoint" in p and message in p for p in problems), problems
