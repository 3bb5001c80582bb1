"""The CPU smoke variant of every paper recipe (recipes/smoke/) really trains: 2 optimizer steps, tiny model.

Each run goes through `rl train` exactly as a user's would, with the recipe's own fields; only the
model (a tiny local Qwen2) and, for the math recipes, the dataset (a tiny DAPO-prompt math set) are
passed on the command line, as the recipes' headers say.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from rl.cli import main as rl_main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = sorted((ROOT / "recipes" / "smoke").glob("*.yaml"))


@pytest.fixture(scope="module")
def math_data(tmp_path_factory) -> Path:
    """A tiny math set in the DAPO prompt format, as the smoke recipes' header one-liner writes it."""
    from rewards.math import dapo_math_prompt

    path = tmp_path_factory.mktemp("smoke-math") / "math.jsonl"
    rows = [{"prompt": [{"role": "user", "content": dapo_math_prompt(f"What is {a} + {b}?")}], "solution": str(a + b)}
            for a in range(1, 5) for b in range(1, 5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def smoke_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with an EOS it can write: its EOS is also its pad token, whose (tied) embedding row
    starts at zero, so the EOS logit is exactly 0 at every step and no logits processor can raise it (the
    DAPO smokes' `exponential_decay_length_penalty` makes lengths vary, the way a real model's do)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        row = model.get_input_embeddings().weight
        row[tokenizer.eos_token_id] = torch.randn(row.shape[1], generator=torch.Generator().manual_seed(0)) * 0.02
    path = tmp_path_factory.mktemp("smoke-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("recipe", SMOKE, ids=lambda p: p.stem)
def test_smoke_recipe_trains(recipe, tmp_path, smoke_model_dir, math_data, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    fields = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    run = tmp_path / "run"
    argv = ["train", "--config", str(recipe.relative_to(ROOT)), "--model_name_or_path", str(smoke_model_dir),
            "--output_dir", str(run)]
    if fields.get("dataset_path"):
        argv += ["--dataset_path", str(math_data)]
    assert rl_main(argv) == 0
    state = json.loads((run / f"checkpoint-{fields['max_steps']}" / "trainer_state.json").read_text())
    assert state["global_step"] == fields["max_steps"]
    logs = state["log_history"]
    losses = [e["loss"] for e in logs if "loss" in e]
    assert len(losses) == fields["max_steps"] and all(math.isfinite(v) for v in losses)
    accumulation = fields["gradient_accumulation_steps"]
    steps_per_generation = fields.get("steps_per_generation", accumulation)
    generations = fields["max_steps"] * accumulation // steps_per_generation  # rewards are logged per generation batch
    for reward in fields["reward_funcs"]:  # TRL logs each under its function's name (`<name>_reward`)
        assert sum(f"rewards/{reward}_reward/mean" in e for e in logs) == generations, reward
    if fields.get("top_entropy_quantile", 1.0) < 1.0:
        kept = [e["forking/kept_fraction"] for e in logs if "forking/kept_fraction" in e]
        assert kept and all(0.0 < k <= 0.5 for k in kept), kept  # ~20% of the completion tokens
    if fields.get("dynamic_sampling"):  # it acted: the trainer logged its generation batches
        rounds = [e["dynamic_sampling/generation_batches"] for e in logs if "dynamic_sampling/generation_batches" in e]
        assert rounds and all(r >= 1 for r in rounds), rounds
    if fields.get("use_peft"):
        assert (run / "adapter_model.safetensors").exists()
    else:
        assert (run / "model.safetensors").exists()
    assert f"output dir: {run}" in capsys.readouterr().out
