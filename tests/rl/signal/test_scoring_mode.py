"""Issue 22: every read that scores with a model (the `rl data rpt` proxy, `rl eval`, `rl profile`, the
document metrics, `rl prune`) runs in eval mode under inference mode, whatever mode the model it was
given is in, and gives the model back in that mode. A model in train mode with heavy dropout would
otherwise give different (random) scores."""

from __future__ import annotations

import pytest
import torch

from rl.data.corpus import Document
from tests.tokenizer_matrix import MATRIX_TEXTS, matrix_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return matrix_tokenizer("sentencepiece", tmp_path_factory.mktemp("matrix"))


def _model(tok):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attention_dropout=0.5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, attn_implementation="eager")
    return AutoModelForCausalLM.from_config(config)


def _scores(model, tok):
    from rl.data.rpt import BuildSummary, RPTBuildConfig, iter_rpt_rows
    from rl.eval.metrics import document_metrics, position_metrics
    from rl.eval.patch_report import score_documents
    from rl.eval.profile import corpus_entropies
    from rl.prune.pruner import encode, prune, score_kept

    docs = [Document(doc_id=str(i), text=t) for i, t in enumerate(MATRIX_TEXTS)]
    cfg = RPTBuildConfig(corpus="-", proxy_model="-", entropy="full", min_entropy=0.0, max_per_doc=1000,
                         min_context_tokens=1, window_tokens=256, continuation_tokens=2, prompt_template="{context}")
    rows = list(iter_rpt_rows(cfg, model, tok, docs, BuildSummary()))
    enc = encode(tok, "What is 3+4?", "We add: 3 + 4 = 7.", "7")
    contexts = [tok(t)["input_ids"][:6] for t in MATRIX_TEXTS]
    return {
        "rpt": [r["entropy"] for r in rows],
        "profile": corpus_entropies(model, tok, docs, window_tokens=256, progress=False)[0],
        "bits": [x for d in score_documents(model, tok, docs, window_tokens=256, progress=False) for x in d["surprisal"]],
        "documents": [d["nll"] for d in document_metrics(model, tok, list(MATRIX_TEXTS), window=256)],
        "positions": [m["nll"] for m in position_metrics(model, tok, contexts, [(" the", [4])] * len(contexts))],
        "prune": [score_kept(model, enc, list(range(len(enc.chain_ids))))] + prune(model, enc).order,
    }


def test_scores_are_taken_in_eval_mode_and_the_mode_is_restored(tok):
    model = _model(tok)
    want = _scores(model.eval(), tok)
    model.train()
    got = _scores(model, tok)
    assert model.training and all(m.training for m in model.modules())
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-5), f"{key}: scored with dropout on"
