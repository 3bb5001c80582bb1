"""`rl profile entropy`/`bits`, the document metrics and `rl eval next-token` over the tokenizer matrix
(issue 22): each scores text as the model sees it (BOS first when the tokenizer adds one), entropies
equal a direct forward, per-token strings reassemble the text (multi-byte characters split over
byte-fallback tokens included), and single-token texts keep their leading space (SentencePiece)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rl.data.corpus import Document
from tests.tokenizer_matrix import ADDS_BOS, MATRIX_TEXTS, kind_of


def _view(kind, tok, text):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return ([tok.bos_token_id] if ADDS_BOS[kind] else []), enc["input_ids"], enc["offset_mapping"]


def _direct(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


def _docs():
    return [Document(doc_id=str(i), text=t) for i, t in enumerate(MATRIX_TEXTS)]


def test_profile_and_bits_scores_equal_a_direct_forward(matrix_scorer):
    from rl.eval.patch_report import score_documents
    from rl.eval.profile import corpus_entropies

    kind, model, tok = matrix_scorer
    ents, token_ids, n = corpus_entropies(model, tok, _docs(), window_tokens=256, progress=False)[:3]
    docs = score_documents(model, tok, _docs(), window_tokens=256, progress=False)
    want_ent, want_ids = [], []
    for text, d in zip(MATRIX_TEXTS, docs):
        prefix, ids, offsets = _view(kind, tok, text)
        logp = _direct(model, prefix + ids)[len(prefix):len(prefix) + len(ids) - 1]
        ent = (-(logp.exp() * logp).sum(-1)).tolist()
        sur = (-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]).tolist()
        want_ent += ent
        want_ids += ids[1:]
        assert d["ids"] == ids[1:]
        assert d["entropy"] == pytest.approx(ent, abs=1e-4) and d["surprisal"] == pytest.approx(sur, abs=1e-4)
        assert all(math.isfinite(x) for x in d["surprise"])
        # per-token strings and byte sizes reassemble the text the scored tokens cover
        rest = text[d["starts"][0]:]
        assert "".join(d["texts"]) == rest and sum(d["bytes"]) == len(rest.encode("utf-8"))
    assert n == len(MATRIX_TEXTS) and token_ids == want_ids
    assert ents == pytest.approx(want_ent, abs=1e-4)


def test_generated_pieces_reassemble_the_completion(matrix_scorer):
    from rl.eval.patch_report import generated_documents
    from rl.signal.sampling import SamplingSettings

    kind, model, tok = matrix_scorer
    docs = generated_documents(model, tok, ["Über café: 東京", "The quick brown"],
                               SamplingSettings(max_new_tokens=12, temperature=1.0),
                               progress=False)
    for d in docs:
        assert "".join(d["texts"]) == d["text"] and len(d["texts"]) == len(d["ids"])
        assert all(math.isfinite(x) for x in d["entropy"])


def test_single_token_texts_keep_their_leading_space(matrix_scorer):
    from rl.signal.scoring import token_texts

    kind, model, tok = matrix_scorer
    for text in (MATRIX_TEXTS[0], MATRIX_TEXTS[3]):  # whole-character tokens only
        _, ids, offsets = _view(kind, tok, text)
        assert "".join(token_texts(tok, ids[1:])) == text[offsets[1][0]:]


def test_document_metrics_see_the_bos(matrix_scorer):
    from rl.eval.metrics import document_metrics

    kind, model, tok = matrix_scorer
    sums = document_metrics(model, tok, list(MATRIX_TEXTS), window=256)
    for text, m in zip(MATRIX_TEXTS, sums):
        prefix, ids, _ = _view(kind, tok, text)
        logp = _direct(model, prefix + ids)[len(prefix):len(prefix) + len(ids) - 1]
        nll = float(-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
        assert m["tokens"] == len(ids) - 1 and m["nll"] == pytest.approx(nll, abs=1e-3)


def test_next_token_eval_scores_the_true_first_token(matrix_scorer):
    """Rows built from the matrix documents: the standard mode's NLL is -log p(first target token) of a
    direct forward over the model's view of the context, for every row whose first target token is
    whole characters (SentencePiece `▁word` tokens included), and the prediction is the argmax token's text."""
    from rl.data.rpt import BuildSummary, RPTBuildConfig, iter_rpt_rows
    from rl.eval.next_token import evaluate_next_token

    kind, model, tok = matrix_scorer
    cfg = RPTBuildConfig(corpus="-", proxy_model="-", entropy="full", min_entropy=0.0, max_per_doc=1000,
                         min_context_tokens=1, window_tokens=256, continuation_tokens=3, prompt_template="{context}",
                         format="completion")
    rows = list(iter_rpt_rows(cfg, model, tok, _docs(), BuildSummary()))
    result = evaluate_next_token("m", rows, model=model, tokenizer=tok, progress=False)
    checked = 0
    for row, out in zip(rows, result["per_row"]):
        text = MATRIX_TEXTS[int(row["doc_id"])]
        prefix, ids, offsets = _view(kind, tok, text)
        p = row["position"]
        if tok(row["context"], add_special_tokens=False)["input_ids"] != ids[:p]:
            continue  # the context alone tokenizes differently from the document: not this check
        first = row["continuation"].encode("utf-8")[: row["boundaries"][0]]
        if tok.decode([ids[p]], clean_up_tokenization_spaces=False).strip() != first.decode("utf-8").strip():
            continue  # the first boundary is not token p's end (a split character)
        logp = _direct(model, prefix + ids[:p])[-1]
        assert out["nll"] is not None, f"row {row['context']!r} -> {first!r}: no NLL"
        assert out["nll"] <= float(-logp[ids[p]]) + 1e-4  # at least the true token's own mass
        argmax = int(logp.argmax())
        assert out["prediction"] == tok.decode([tok("a", add_special_tokens=False)["input_ids"][-1], argmax],
                                                clean_up_tokenization_spaces=False, skip_special_tokens=True)[
            len(tok.decode(tok("a", add_special_tokens=False)["input_ids"][-1:])):]
        checked += 1
    assert checked >= 20


def test_profile_command_over_the_matrix(matrix_model_dir, tmp_path):
    from rl.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in MATRIX_TEXTS), encoding="utf-8")
    for cmd, name in (("entropy", "entropy_profile.json"), ("bits", "bits_profile.json")):
        out = tmp_path / cmd
        assert main(["profile", cmd, "--model", str(matrix_model_dir), "--data", str(corpus), "-o", str(out),
                     "--window-tokens", "16"]) == 0
        result = json.loads((out / name).read_text(encoding="utf-8"))
        assert result["stats"]["tokens"] == sum(len(_view(kind_of(matrix_model_dir), _tok(matrix_model_dir), t)[1]) - 1
                                                for t in MATRIX_TEXTS)


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
