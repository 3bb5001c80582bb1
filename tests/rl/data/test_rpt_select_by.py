"""`rl data rpt --select-by`: positions chosen by surprisal, Titans surprise or at random, with the
same filters and caps as the entropy criterion (tiny local proxy model)."""

from __future__ import annotations

import json

import pytest
import torch

from rl.data.rpt import RPTBuildConfig, build_rpt_dataset
from rl.errors import UserError
from rl.data.settings import DEFAULT_RPT_PROMPT

DOCS = ["The derivative of x squared is two x. Hence the slope at one is two, and the tangent line is y = 2x - 1.",
        "Let n be an integer. If n is even then n squared is even, and if n is odd then n squared is odd too."]


def _cfg(tmp_path, model, **kw):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    base = {"corpus": str(path), "proxy_model": str(model), "min_entropy": 0.0, "max_per_doc": 50, "min_context_tokens": 4,
                "window_tokens": 64, "proxy_batch_size": 2, "prompt_template": DEFAULT_RPT_PROMPT}
    return RPTBuildConfig(**{**base, **kw})


def _scores(model_dir, kind):
    """Per document, the score at every position from one plain forward over the whole document."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.signal.surprise import momentary_surprise, surprisal

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for d in DOCS:
        ids = torch.tensor([tok(d, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float()
        fn = surprisal if kind == "surprisal" else momentary_surprise
        out.append([0.0] + fn(logits, ids[0, 1:]).tolist())
    return out


@pytest.mark.parametrize("kind, threshold", [("surprisal", 10.9), ("surprise", 0.99)])
def test_positions_pass_the_surprise_threshold(tmp_path, tiny_model_dir, kind, threshold):
    scores = _scores(tiny_model_dir, kind)
    ds, summary = build_rpt_dataset(_cfg(tmp_path, tiny_model_dir, select_by=kind, min_surprise=threshold),
                                    tmp_path / "out")
    passing = sum(1 for doc in scores for p in range(4, len(doc)) if doc[p] >= threshold)
    assert summary.positions_above_threshold == passing  # window 64 covers each document: same scores
    assert 0 < len(ds) <= passing
    for row in ds:
        assert scores[int(row["doc_id"].rsplit(":", 1)[-1]) - 1][row["position"]] >= threshold - 1e-4


def test_random_keeps_every_position_as_a_candidate_and_caps_apply(tmp_path, tiny_model_dir):
    ds, summary = build_rpt_dataset(_cfg(tmp_path, tiny_model_dir, select_by="random", min_entropy=99.0,
                                         max_per_doc=3), tmp_path / "out")
    assert summary.positions_above_threshold == summary.candidate_positions and len(ds) == 6


def test_entropy_default_keeps_old_fingerprints_and_bad_values_are_refused(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir)
    assert "select_by" not in cfg.fingerprint()  # data built before select_by is still reused
    assert _cfg(tmp_path, tiny_model_dir, select_by="surprise").fingerprint()["select_by"] == "surprise"
    with pytest.raises(UserError, match="select_by: expected one of"):
        _cfg(tmp_path, tiny_model_dir, select_by="loss").validate()
    with pytest.raises(UserError, match="min_surprise"):
        build_rpt_dataset(_cfg(tmp_path, tiny_model_dir, select_by="surprise", min_surprise=2.0), tmp_path / "o2")
