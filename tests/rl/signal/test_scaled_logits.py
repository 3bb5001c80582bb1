"""Issue 22 finding 6: every score read outside the model's own forward (proxy entropies of `rl data rpt`,
`rl profile entropy`/`bits`, the document metrics) gives the entropies of the model's REAL logits, for
architectures whose forward scales the head's output: Cohere `logit_scale`, Granite `logits_scaling`,
Falcon-H1 `lm_head_multiplier` (and Gemma-2 soft-capping)."""

from __future__ import annotations

import math

import pytest
import torch

from rl.data.corpus import Document
from tests.tokenizer_matrix import MATRIX_TEXTS, matrix_tokenizer

COMMON = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256)


def _config(arch: str, vocab: int):
    import transformers

    if arch == "cohere":
        return transformers.CohereConfig(vocab_size=vocab, logit_scale=0.25, **COMMON)
    if arch == "granite":
        return transformers.GraniteConfig(vocab_size=vocab, logits_scaling=4.0, **COMMON)
    if arch == "falcon_h1":
        return transformers.FalconH1Config(vocab_size=vocab, lm_head_multiplier=0.3, mamba_d_ssm=32, mamba_n_heads=4,
                                           mamba_d_head=8, mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=16,
                                           **COMMON)
    if arch == "gemma2":
        return transformers.Gemma2Config(vocab_size=vocab, final_logit_softcapping=0.3, head_dim=8, **COMMON)
    raise ValueError(arch)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # the Unigram kind adds no BOS: these tests see the logit transform alone
    return matrix_tokenizer("cleanup", tmp_path_factory.mktemp("matrix"))


def _model(arch, tok):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch, len(tok))).eval()
    with torch.no_grad():  # sharper than the random init, so the scale moves the entropies a lot
        model.get_output_embeddings().weight.mul_(8.0)
    return model


def _direct(model, ids):
    """log-probabilities of the model's own forward over `ids` (row p - 1 predicts token p)."""
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


def _entropy(logp):
    return -(logp.exp() * logp).sum(-1)


ARCHS = ["cohere", "granite", "falcon_h1", "gemma2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_reader_gives_the_models_own_logits(arch, tok):
    from rl.signal.scoring import logit_reader

    model = _model(arch, tok)
    ids = tok(MATRIX_TEXTS[0], add_special_tokens=False)["input_ids"]
    reader = logit_reader(model)
    assert reader.chunked, f"{arch}: the head transform should be reproduced, not the full-logits fallback"
    with torch.no_grad():
        got = reader.logits(reader.states(torch.tensor([ids])))
        want = model(input_ids=torch.tensor([ids])).logits.float()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_proxy_profile_bits_and_document_metrics_use_the_real_logits(arch, tok):
    from rl.data.rpt import BuildSummary, RPTBuildConfig, iter_rpt_rows
    from rl.eval.metrics import document_metrics
    from rl.eval.patch_report import score_documents
    from rl.eval.profile import corpus_entropies

    model = _model(arch, tok)
    texts = list(MATRIX_TEXTS)
    docs = [Document(doc_id=str(i), text=t) for i, t in enumerate(texts)]
    want_ent, want_sur = [], []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        logp = _direct(model, ids)
        want_ent.append(_entropy(logp)[: len(ids) - 1].tolist())
        want_sur.append((-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]).tolist())

    ents, _, _ = corpus_entropies(model, tok, docs, window_tokens=256, progress=False)
    assert ents == pytest.approx([e for doc in want_ent for e in doc], abs=1e-4)

    scored = score_documents(model, tok, docs, window_tokens=256, progress=False)
    for d, e, s in zip(scored, want_ent, want_sur):
        assert d["entropy"] == pytest.approx(e, abs=1e-4) and d["surprisal"] == pytest.approx(s, abs=1e-4)

    sums = document_metrics(model, tok, texts, window=256)
    for m, s in zip(sums, want_sur):
        assert m["nll"] == pytest.approx(sum(s), abs=1e-3)

    cfg = RPTBuildConfig(corpus="-", proxy_model="-", entropy="full", min_entropy=0.0, max_per_doc=1000,
                         min_context_tokens=1, window_tokens=256, continuation_tokens=2, prompt_template="{context}")
    rows = list(iter_rpt_rows(cfg, model, tok, docs, BuildSummary()))
    assert rows
    for row in rows:
        want = want_ent[int(row["doc_id"])][row["position"] - 1]
        assert math.isfinite(row["entropy"]) and row["entropy"] == pytest.approx(want, abs=1e-4)
