"""Chain rows: builtin:champ and JSONL checks."""

from __future__ import annotations

import pytest

from rl.errors import UserError
from rl.prune.chains import read_chains


def test_champ_rows_are_real_chains():
    rows = read_chains("builtin:champ", limit=3)
    assert len(rows) == 3 and all(r.id.startswith("champ/") for r in rows)
    assert rows[0].question.startswith("Let a string consist of digit 1, 2, 3") and rows[0].answer == "239"
    assert rows[0].reasoning.count("\n") >= 2  # one solution step per line


def test_jsonl_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "reasoning": "r", "answer": 3}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: field 'answer' must be a string"):
        read_chains(str(bad))
    bad.write_text("not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: not valid JSON"):
        read_chains(str(bad))
    with pytest.raises(UserError, match="unknown builtin"):
        read_chains("builtin:gsm8k")
    with pytest.raises(UserError, match="no such file"):
        read_chains(str(tmp_path / "missing.jsonl"))
