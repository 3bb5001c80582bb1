"""Shards over the tokenizer matrix: for every tokenizer family (BOS or not, byte-level, SentencePiece,
byte fallback) a build in 3 shards, merged, is file for file the one-process build."""

from __future__ import annotations

import json

from rl.data.rpt import build_rpt_dataset
from rl.data.settings import RPTBuildConfig
from rl.data.shards import ShardPlan
from tests.tokenizer_matrix import MATRIX_TEXTS


def _files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "rl-output.json"}


def test_three_shards_equal_one_process_for_every_tokenizer(matrix_model_dir, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in MATRIX_TEXTS * 2), encoding="utf-8")

    def cfg():
        return RPTBuildConfig(corpus=str(corpus), proxy_model=str(matrix_model_dir), entropy="full", min_entropy=0.0,
                              min_context_tokens=2, window_tokens=8, proxy_batch_size=3, block_documents=1,
                              continuation_tokens=3, format="completion", max_per_doc=4)

    one, summary = build_rpt_dataset(cfg(), tmp_path / "one")
    assert len(one) > 0 and summary.documents == 2 * len(MATRIX_TEXTS)
    for i in (1, 2, 0):
        merged, _ = build_rpt_dataset(cfg(), tmp_path / "three", plan=ShardPlan(3, i))
    assert merged is not None and _files(tmp_path / "three") == _files(tmp_path / "one")
