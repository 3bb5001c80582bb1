"""`rl data rlp`: RPT's positions with RLP's thought prompt (chat models: an instruction, base
models: the context then ` <think>`), readable by the `rlp` reward."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from rewards.rlp import CHAT_PROMPT, THINK_OPEN
from rl.cli import main

DOCS = ["The quick brown fox jumps over the lazy dog and runs far away into the hills. " * 3,
        "One two three four five six seven eight nine ten eleven twelve thirteen fourteen. " * 3]


@pytest.mark.parametrize("chat", ["yes", "no"])
def test_rl_data_rlp_rows(tmp_path, tiny_model_dir, chat):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    out = tmp_path / "rlp"
    assert main(["data", "rlp", "--corpus", str(corpus), "--proxy-model", str(tiny_model_dir), "--output", str(out),
                 "--min-entropy", "0", "--max-per-doc", "3", "--min-context-tokens", "4", "--chat", chat]) == 0
    rows = list(load_from_disk(str(out)))
    assert len(rows) == 6
    for row in rows:
        assert row["rpt_format"] == "rlp"
        if chat == "yes":
            assert row["prompt"] == [{"role": "user", "content": CHAT_PROMPT.replace("{context}", row["context"])}]
        else:
            assert row["prompt"] == row["context"] + THINK_OPEN
        assert row["boundaries"] and row["continuation"]


def test_rpt_rewards_refuse_rlp_rows():
    from rewards.rpt import rpt_completion_reward
    from rl.errors import UserError

    with pytest.raises(UserError, match="rpt_format"):
        rpt_completion_reward(prompts=["p"], completions=["x"], completion_ids=[[1]], continuation=[" a"],
                              boundaries=[[2]], rpt_format=["rlp"])
