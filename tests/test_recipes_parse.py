"""Every YAML recipe in recipes/ parses into its command's recipe dataclasses (no weights loaded):
recipes/caft/ are `rl sft` recipes, every other one an `rl train` recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.sft.command import parse_sft_recipe
from rl.train.preflight.parse import parse_for_target as parse_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)
SFT_RECIPES = [p for p in RECIPES if "caft" in p.parts]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses(recipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parse = (lambda argv: parse_sft_recipe(argv, dry=True)) if recipe in SFT_RECIPES else parse_recipe
    script_args, training_args, model_args = parse(["--config", str(recipe)])
    assert model_args.model_name_or_path
    data = ([script_args.dataset_path, training_args.caft_prompts] if recipe in SFT_RECIPES
            else [script_args.dataset_path, script_args.corpus])
    assert any(data), "the recipe names no data"
    assert training_args.output_dir


def test_there_is_a_main_recipe():
    assert ROOT / "recipes" / "rpt_smollm2_cpu.yaml" in RECIPES
