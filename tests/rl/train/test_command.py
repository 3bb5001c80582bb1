"""End to end: `rl train` builds RPT data from a corpus and runs real TRL GRPO steps (tiny model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rl.cli import main as rl_main
from tests.kit import tiny_recipe, write_yaml

DOCS = [
    "Let x be a real number with x squared equal to four. Then x is two or x is minus two, so the sum of roots is zero.",
    "The triangle has sides three, four and five. It is a right triangle because nine plus sixteen equals twenty five.",
    "To count subsets of a set with n elements, note each element is either in or out, giving two to the n subsets.",
    "A prime number has exactly two divisors. The smallest prime is two and the next primes are three, five, seven.",
]


def write_recipe(tmp_path: Path, model_dir: Path, **overrides) -> Path:
    """The kit's tiny recipe, building its RPT rows from a 4-document corpus at the start of the run."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(DOCS), encoding="utf-8")
    fields = {"env": {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}, "corpus": str(corpus),
              "rpt_min_entropy": 0.0, "rpt_max_per_doc": 4, "rpt_min_context_tokens": 4,
              "max_completion_length": 12, "save_steps": 2, **overrides}
    return write_yaml(tmp_path / "recipe.yaml", tiny_recipe(model_dir, tmp_path / "run", **fields))


def read_state(run: Path, step: int) -> dict:
    return json.loads((run / f"checkpoint-{step}" / "trainer_state.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_train_builds_data_trains_and_checkpoints(tmp_path, tiny_model_dir, use_peft, capsys):
    recipe = write_recipe(tmp_path, tiny_model_dir, use_peft=use_peft, lora_r=4,
                          lora_target_modules=["q_proj", "v_proj"], report_to=["wandb"])
    assert rl_main(["train", "--config", str(recipe)]) == 0
    run = tmp_path / "run"
    assert (run / "rpt-data" / "dataset_info.json").exists()
    state = read_state(run, 2)
    assert state["global_step"] == 2
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any("rewards/rpt_reward/mean" in e for e in state["log_history"])
    assert list((run / "wandb").glob("offline-run-*")), "W&B offline run dir missing"
    if use_peft:
        assert (run / "checkpoint-2" / "adapter_model.safetensors").exists()
    else:
        assert (run / "checkpoint-2" / "model.safetensors").exists()
    assert "mean reward: first step" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_from_checkpoint_auto_continues(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, save_steps=1)
    assert rl_main(["train", "--config", str(recipe)]) == 0
    assert rl_main(["train", "--config", str(recipe), "--max_steps", "3", "--resume_from_checkpoint", "auto"]) == 0
    state = read_state(tmp_path / "run", 3)
    assert state["global_step"] == 3
    # the resumed run did not redo steps 1-2: their log entries come from the first run only once
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]


def test_typo_in_recipe_is_one_line(tmp_path, tiny_model_dir, capsys):
    recipe = write_recipe(tmp_path, tiny_model_dir, learnin_rate=1e-3)
    assert rl_main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "learnin_rate" in err and "learning_rate" in err


def test_missing_model_is_one_line(tmp_path, capsys):
    recipe = write_recipe(tmp_path, tmp_path / "no-such-model")
    assert rl_main(["train", "--config", str(recipe)]) == 2
    assert "no-such-model" in capsys.readouterr().err
