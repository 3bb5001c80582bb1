"""The test kit: one tiny GRPO recipe, one recipe writer, row factories, model builders, and the
one-line CLI error check.

Every test that runs `rl train` starts from `TINY_GRPO` (fast, CPU, no W&B, no signal check,
checkpoint every step) and overrides only what it is about. Tiny models come from
tests/tiny_models.py (fixtures in tests/conftest.py); `build_sharp_model` derives a copy whose
next-token entropies spread like a trained model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

# A tiny, fast GRPO run: 2 steps, 4 completions of 8 tokens per device, checkpoint every step.
TINY_GRPO = {
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "num_generations": 2,
    "max_completion_length": 8,
    "learning_rate": 1e-3,
    "beta": 0.0,
    "bf16": False,
    "gradient_checkpointing": False,
    "use_cpu": True,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 1,
    "report_to": ["none"],
    "seed": 1,
    "dataloader_num_workers": 0,
    "signal_check": "off",  # tested on its own (tests/rl/train/test_signal_check.py)
}


def tiny_recipe(model_dir: Path | str, output_dir: Path | str, **overrides) -> dict:
    """`TINY_GRPO` for `model_dir` writing to `output_dir`, with `overrides` (a None value drops the field)."""
    recipe = {"model_name_or_path": str(model_dir), "output_dir": str(output_dir), **TINY_GRPO, **overrides}
    return {k: v for k, v in recipe.items() if v is not None}


def write_yaml(path: Path | str, recipe: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def rpt_rows(n: int = 8) -> list[dict]:
    """`n` completion-style RPT rows: a short prompt, a one-word continuation and its one boundary."""
    words = ["world", "there", "again", "friend", "moon", "sun", "sea", "sky"]
    return [{"prompt": f"Say hello {i}:", "continuation": f" {words[i % len(words)]}",
             "boundaries": [1 + len(words[i % len(words)])], "doc_id": f"doc{i}"} for i in range(n)]


def write_jsonl(path: Path | str, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli_error(capsys, argv: list[str], after_work: bool = False) -> str:
    """Run `rl ARGV`, expect exit status 2 and return its one-line `error: ...` (the last stderr line
    when `after_work`: progress lines of work done before the error come first)."""
    from rl.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    if after_work:
        err = err.splitlines()[-1]
    assert err.startswith("error: ") and "\n" not in err
    return err


def build_sharp_model(src: Path | str, dst: Path | str, scale: float = 8.0) -> Path:
    """Copy of a tiny model with its (tied) embeddings scaled: the random-init model's next-token
    distributions are nearly uniform (entropies within 1e-3 of log V); scaled by 8 they spread
    from ~0.1 to ~7.5 nats like a trained model's, so the forking mask's kept set is not decided
    by float rounding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return Path(dst)
