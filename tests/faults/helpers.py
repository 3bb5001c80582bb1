"""Helpers for the fault-injection suite (importable from tests and from subprocess workers)."""

from __future__ import annotations

import io
import json
import logging
import contextlib
from pathlib import Path

from tests.kit import TINY_GRPO, rpt_rows, tiny_recipe, write_jsonl, write_yaml

ROOT = Path(__file__).resolve().parents[2]

# The kit's tiny run (tests/kit.py); fault tests override what each is about.
BASE_RECIPE = TINY_GRPO


def write_recipe(tmp_path: Path, model_dir: Path | str, *, name: str = "recipe.yaml", rows=None, **overrides) -> Path:
    """The kit's tiny recipe; `dataset_path` defaults to 8 RPT rows written next to it."""
    tmp_path = Path(tmp_path)
    if "dataset_path" not in overrides and "corpus" not in overrides:
        overrides["dataset_path"] = str(write_jsonl(tmp_path / "data.jsonl", rows if rows is not None else rpt_rows()))
    output_dir = overrides.pop("output_dir", tmp_path / "run")
    return write_yaml(tmp_path / name, tiny_recipe(model_dir, output_dir, **overrides))


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
