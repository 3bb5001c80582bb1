"""Every YAML recipe in recipes/ parses into the recipe dataclasses (no weights loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.train.preflight.parse import parse_for_target as parse_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses(recipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script_args, training_args, model_args = parse_recipe(["--config", str(recipe)])
    assert model_args.model_name_or_path
    assert script_args.dataset_path or script_args.corpus
    assert training_args.output_dir


def test_there_is_a_main_recipe():
    assert ROOT / "recipes" / "rpt_smollm2_cpu.yaml" in RECIPES
