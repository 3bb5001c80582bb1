"""Expected accuracy, top-1 and NLL (rl/eval/metrics.py) against direct computations."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_token_candidates_with_gpt2_bpe(tokenizer):
    from rl.eval.metrics import token_bytes_index, token_candidates

    index = token_bytes_index(tokenizer)
    para, graph = tokenizer.convert_tokens_to_ids(["Ġpara", "graph"])
    first, rewarded = token_candidates(index, " paragraph", [5, 10])
    assert first == [para]
    assert para in rewarded and tokenizer.convert_tokens_to_ids("Ġparagraph") in rewarded
    assert graph not in rewarded
    assert token_bytes_index(tokenizer) is index  # built once per tokenizer


def test_position_metrics_match_a_full_forward(model_and_tok):
    from rl.eval.metrics import position_metrics, token_bytes_index, token_candidates

    model, tok = model_and_tok
    contexts = ["The cat sat on the", "Once upon a", "x"]
    targets = [(" mat.", [4, 5]), (" time there", [5, 11]), (" y", [2])]
    seqs = [tok(c)["input_ids"] for c in contexts]
    got = position_metrics(model, tok, seqs, targets, temperature=0.7, batch_size=2)
    index = token_bytes_index(tok)
    for seq, (cont, bounds), m in zip(seqs, targets, got):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1].float()
        first, rewarded = token_candidates(index, cont, bounds)
        p_t = torch.softmax(logits / 0.7, -1)
        assert m["expected"] == pytest.approx(float(p_t[rewarded].sum()), rel=1e-4, abs=1e-7)
        assert m["nll"] == pytest.approx(-math.log(float(torch.softmax(logits, -1)[first].sum())), rel=1e-4)
        assert m["top1"] == (1.0 if int(logits.argmax()) in rewarded else 0.0)


def test_document_metrics_match_a_direct_loop(model_and_tok):
    from rl.eval.metrics import document_metrics

    model, tok = model_and_tok
    texts = ["one two three four five six seven eight nine ten eleven twelve", "a b", "z"]
    sums = document_metrics(model, tok, texts, temperature=0.8, window=5, batch_size=3)
    for text, entry in zip(texts, sums):
        ids = tok(text)["input_ids"]
        expected = top1 = nll = 0.0
        count = 0
        for start in range(0, len(ids), 5):
            piece = ids[start:start + 5]
            if len(piece) < 2:
                continue
            with torch.no_grad():
                logits = model(torch.tensor([piece])).logits[0, :-1].float()
            target = torch.tensor(piece[1:])
            expected += float(torch.softmax(logits / 0.8, -1).gather(1, target[:, None]).sum())
            top1 += float((logits.argmax(-1) == target).sum())
            nll += float(-torch.log_softmax(logits, -1).gather(1, target[:, None]).sum())
            count += len(piece) - 1
        assert entry["tokens"] == count
        assert entry["expected"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert entry["top1"] == top1
        assert entry["nll"] == pytest.approx(nll, rel=1e-4, abs=1e-5)


def test_temperature_must_be_positive(model_and_tok):
    from rl.eval.metrics import document_metrics, position_metrics

    model, tok = model_and_tok
    with pytest.raises(ValueError):
        position_metrics(model, tok, [[1, 2]], [(" a", [2])], temperature=0)
    with pytest.raises(ValueError):
        document_metrics(model, tok, ["a b"], temperature=0)
