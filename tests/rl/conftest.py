"""Stand-ins for the data the shipped recipes expect a user to prepare (the dry-run tests of
tests/rl/train/preflight and the shipped-recipe tests of tests/rl/launch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """Stand-in for data/omni-math.jsonl: a few problem + solution documents in a `text` column."""
    path = tmp_path_factory.mktemp("corpus") / "omni-math.jsonl"
    docs = [f"Problem: What is {a} times {b}?\n\nSolution: Multiply: {a} x {b} = {a * b}. So the answer is {a * b}."
            for a in range(2, 6) for b in range(2, 6)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def math_file(tmp_path_factory) -> Path:
    """Stand-in for data/dapo-math-17k: 512 DAPO-prompt rows (one paper rollout batch) with gold answers."""
    from rewards.math import dapo_math_prompt

    path = tmp_path_factory.mktemp("math") / "dapo-math.jsonl"
    rows = [{"prompt": [{"role": "user", "content": dapo_math_prompt(f"What is {a} + {b}?")}], "solution": str(a + b)}
            for a in range(32) for b in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
