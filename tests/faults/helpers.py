"""Helpers for the fault-injection suite (importable from tests and from subprocess workers)."""

from __future__ import annotations

import io
import json
import logging
import contextlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

# A tiny, fast GRPO run: plain-text prompts, RPT columns, no data build, no W&B.
BASE_RECIPE = {
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


def rpt_rows(n: int = 8) -> list[dict]:
    words = ["world", "there", "again", "friend", "moon", "sun", "sea", "sky"]
    return [{"prompt": f"Say hello {i}:", "continuation": f" {words[i % len(words)]}",
             "boundaries": [1 + len(words[i % len(words)])], "doc_id": f"doc{i}"} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_recipe(tmp_path: Path, model_dir: Path | str, *, name: str = "recipe.yaml", rows=None, **overrides) -> Path:
    """A recipe for the tiny run; `dataset_path` defaults to 8 RPT rows written next to it."""
    tmp_path = Path(tmp_path)
    recipe = {"model_name_or_path": str(model_dir), "output_dir": str(tmp_path / "run"), **BASE_RECIPE}
    if "dataset_path" not in overrides and "corpus" not in overrides:
        recipe["dataset_path"] = str(write_jsonl(tmp_path / "data.jsonl", rows if rows is not None else rpt_rows()))
    recipe.update(overrides)
    recipe = {k: v for k, v in recipe.items() if v is not None}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    """`rl ARGV` in process; returns (exit status, the `error: ...` lines it printed on stderr)."""
    from rl.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(list(argv))
    # tqdm progress bars end with "\r", not a newline: an error after one shares its terminal line.
    text = err.getvalue().replace("\r", "\n")
    return rc, [line for line in text.splitlines() if line.startswith("error:")]


def one_error_line(rc: int, lines: list[str]) -> str:
    """Assert the CLI contract for bad input: exit status 2 and exactly one `error:` line; returns it."""
    assert rc == 2, f"exit status {rc}, expected 2; errors: {lines}"
    assert len(lines) == 1, lines
    return lines[0]


def state(run: Path, step: int) -> dict:
    return json.loads((Path(run) / f"checkpoint-{step}" / "trainer_state.json").read_text())


def warnings_of(caplog, logger_prefix: str = "") -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith(logger_prefix)]
