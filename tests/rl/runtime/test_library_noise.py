"""rl/runtime/library_noise.py: `rl train` prints no library notice the user cannot act on, and only those are dropped."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from rl.runtime.library_noise import names_field, quiet_checkpointing_rename, quiet_library_deprecations
from tests.rl.train.test_command import write_recipe

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.parametrize("shell_wandb_mode", [None, "offline"], ids=["env-unset", "env-offline"])
def test_tiny_train_with_report_to_none_prints_no_library_noise(tmp_path, tiny_model_dir, shell_wandb_mode):
    """Like the demo: LoRA, the recipe's env sets WANDB_MODE=offline, no checkpointing field (TRL's default)."""
    path = write_recipe(tmp_path, tiny_model_dir, use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"],
                        report_to=["wandb"], max_steps=1, save_strategy="no")
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    del recipe["gradient_checkpointing"]
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "PYTHONWARNINGS")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if shell_wandb_mode:
        env["WANDB_MODE"] = shell_wandb_mode
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "train", "--config", str(path), "--report_to", "none"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"output dir: {tmp_path / 'run'}" in out
    assert "gradient_checkpointing" not in out, out[-4000:]
    assert "Running in WANDB offline mode" not in out, out[-4000:]
    assert not (tmp_path / "run" / "wandb").exists()


def test_names_field(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("gradient_checkpointing: true\nmax_steps: 2\n", encoding="utf-8")
    assert names_field(["--config", str(recipe)], "gradient_checkpointing")
    assert not names_field(["--config", str(recipe)], "gradient_checkpointing_kwargs")
    assert names_field(["--gradient_checkpointing_kwargs={}"], "gradient_checkpointing_kwargs")
    assert names_field(["--config", str(tmp_path / "missing.yaml"), "--gradient_checkpointing", "false"],
                       "gradient_checkpointing")
    assert not names_field(["--config", str(tmp_path / "missing.yaml")], "gradient_checkpointing")


def _parse(argv):
    from rl.train.recipe import parse_recipe

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_checkpointing_rename(argv):
            parse_recipe(argv)
    return [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


def test_rename_warning_dropped_only_when_trl_default_caused_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\noutput_dir: out\nuse_cpu: true\nbf16: false\n", encoding="utf-8")
    assert not [m for m in _parse(["--config", str(recipe)]) if "gradient_checkpointing" in m]
    named = _parse(["--config", str(recipe), "--gradient_checkpointing", "false"])
    assert any("`gradient_checkpointing` is deprecated" in m for m in named), named  # the user's own old name


def test_renamed_model_methods_dropped_other_future_warnings_kept(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_library_deprecations():
            assert model.is_gradient_checkpointing is False
            model.gradient_checkpointing_enable()
            model.gradient_checkpointing_disable()
            warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)  # not transformers': kept
        model.is_gradient_checkpointing  # noqa: B018 - outside the context it warns again
    messages = [(str(w.message), w.filename) for w in caught]
    assert len(messages) == 2, messages
    assert messages[0][1] == __file__ and "modeling_utils" in messages[1][1]
