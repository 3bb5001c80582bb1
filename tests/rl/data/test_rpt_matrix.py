"""`rl data rpt` over the tokenizer matrix (issue 22): the proxy sees each document as the model sees
text (BOS first when the tokenizer adds one), its entropies equal a direct forward over those ids, and
every row's context, continuation and boundaries agree with the document's bytes, multi-byte
characters split over byte-fallback tokens included."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rl.data.corpus import Document
from rl.data.rpt import BuildSummary, RPTBuildConfig, iter_rpt_rows
from tests.tokenizer_matrix import ADDS_BOS, MATRIX_TEXTS


def _prefix(kind, tok):
    return [tok.bos_token_id] if ADDS_BOS[kind] else []


def _direct_entropy(model, ids):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return (-(logp.exp() * logp).sum(-1)).tolist()


def _cfg(**kw):
    base = dict(corpus="-", proxy_model="-", entropy="full", min_entropy=0.0, max_per_doc=1000, min_context_tokens=1,
                window_tokens=512, continuation_tokens=4, prompt_template="{context}", format="completion")
    base.update(kw)
    return RPTBuildConfig(**base)


def _check_row(row, text, ids, tok):
    """The row's cut agrees with the document: context ends where token `position` begins, the
    continuation follows it and ends on a whole character, each boundary is where a target token ends
    (the bytes the first j target tokens add when decoded after the context)."""
    def size(k):  # UTF-8 bytes of the first k tokens decoded
        return len(tok.decode(ids[:k], clean_up_tokenization_spaces=False).encode("utf-8"))

    p = row["position"]
    context, cont = row["context"], row["continuation"]
    lost = len(text.encode("utf-8")) - size(len(ids))  # a leading space the decoder strips
    assert text.startswith(context + cont) and len(context.encode("utf-8")) == size(p) + lost
    data = cont.encode("utf-8")
    bounds = row["boundaries"]
    assert bounds and all(a < b for a, b in zip([0] + bounds, bounds)) and bounds[-1] == len(data)
    ends = {size(j) - size(p) for j in range(p + 1, len(ids) + 1)}
    for b in bounds:
        data[:b].decode("utf-8")  # never inside a character
        assert b in ends, f"boundary {b} is not where a target token ends"


def test_proxy_entropies_match_a_direct_forward_over_the_models_view(matrix_scorer):
    kind, model, tok = matrix_scorer
    docs = [Document(doc_id=str(i), text=t) for i, t in enumerate(MATRIX_TEXTS)]
    rows = list(iter_rpt_rows(_cfg(), model, tok, docs, BuildSummary()))
    prefix = _prefix(kind, tok)
    seen = set()
    for row in rows:
        text = MATRIX_TEXTS[int(row["doc_id"])]
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        want = _direct_entropy(model, prefix + ids)[len(prefix) + row["position"] - 1]
        assert math.isfinite(row["entropy"]) and row["entropy"] == pytest.approx(want, abs=1e-4)
        _check_row(row, text, ids, tok)
        seen.add((row["doc_id"], row["position"]))
    # the multi-byte document gave rows around its split characters
    multi = [r for r in rows if r["doc_id"] == "2"]
    assert any(ch in r["continuation"] for r in multi for ch in "東京😀ü")
    assert len(seen) == len(rows)


def test_windows_keep_the_prefix(matrix_scorer):
    """Windowed scoring: every window starts with the tokenizer's prefix; positions of the first window
    equal the whole-document forward, every entropy is finite."""
    kind, model, tok = matrix_scorer
    text = " ".join(MATRIX_TEXTS)
    rows = list(iter_rpt_rows(_cfg(window_tokens=8), model, tok, [Document("d", text)], BuildSummary()))
    prefix = _prefix(kind, tok)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    full = _direct_entropy(model, prefix + enc["input_ids"])
    first_window = 8 - len(prefix)
    checked = 0
    for row in rows:
        assert math.isfinite(row["entropy"])
        _check_row(row, text, enc["input_ids"], tok)
        if row["position"] < first_window:
            assert row["entropy"] == pytest.approx(full[len(prefix) + row["position"] - 1], abs=1e-4)
            checked += 1
    assert checked >= 3 and len(rows) > 40


def test_rl_data_rpt_command_over_the_matrix(matrix_scorer, matrix_model_dir, tmp_path):
    from rl.cli import main

    kind, model, tok = matrix_scorer
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in MATRIX_TEXTS), encoding="utf-8")
    out = tmp_path / "rpt"
    assert main(["data", "rpt", "--proxy-model", str(matrix_model_dir), "--corpus", str(corpus), "-o", str(out),
                 "--min-entropy", "0", "--min-context-tokens", "1", "--max-per-doc", "100", "--entropy", "full",
                 "--format", "completion", "--jsonl"]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(matrix_model_dir).eval()
    prefix = _prefix(kind, tok)
    texts = {}
    for row in rows:
        text = next(t for t in MATRIX_TEXTS if t.startswith(row["context"] + row["continuation"]))
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if text not in texts:
            texts[text] = _direct_entropy(plain, prefix + enc["input_ids"])
        assert row["entropy"] == pytest.approx(texts[text][len(prefix) + row["position"] - 1], abs=1e-4)
        _check_row(row, text, enc["input_ids"], tok)
