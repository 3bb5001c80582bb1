"""`rl prune` over the tokenizer matrix (issue 22): the pruner scores the text as the model reads it
(BOS first when the tokenizer adds one, one tokenization of the whole text, no `▁` a SentencePiece
tokenizer puts before each part tokenised alone), and the per-token strings it writes reassemble the
chain, multi-byte characters split over byte-fallback tokens included."""

from __future__ import annotations

import json

import pytest
import torch

from rl.prune.pruner import PROMPT_TEMPLATE, SEP, encode, score_kept
from tests.kit import write_jsonl
from tests.tokenizer_matrix import ADDS_BOS, kind_of

ROWS = [
    {"question": "What is 3+4?", "reasoning": "Über café: 東京 is big 😀, so 3 + 4 = 7.", "answer": "7"},
    {"question": "Is the fox quick?", "reasoning": "The quick brown fox jumps over the lazy dog", "answer": "yes"},
]


def _text(row):
    return PROMPT_TEMPLATE.format(question=row["question"]) + row["reasoning"] + SEP + " " + row["answer"]


def test_encoding_is_the_models_view_and_scores_match_a_direct_forward(matrix_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = kind_of(matrix_model_dir)
    tok = AutoTokenizer.from_pretrained(matrix_model_dir)
    model = AutoModelForCausalLM.from_pretrained(matrix_model_dir).eval()
    for row in ROWS + [{"question": "What is 1+1?", "reasoning": "", "answer": "2"}]:  # held-out rows have no chain
        enc = encode(tok, row["question"], row["reasoning"], row["answer"])
        view = ([tok.bos_token_id] if ADDS_BOS[kind] else []) + tok(_text(row), add_special_tokens=False)["input_ids"]
        full = enc.prompt_ids + enc.chain_ids + enc.sep_ids + enc.answer_ids
        assert full == view, f"{kind}: the pruner's ids are not the model's view of the text"
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([view])).logits[0].float(), -1)
        n = len(enc.answer_ids)
        want = float(logp[len(view) - n - 1:-1].gather(-1, torch.tensor(view[-n:])[:, None]).sum())
        assert score_kept(model, enc, list(range(len(enc.chain_ids)))) == pytest.approx(want, abs=1e-4)
        if kind == "sentencepiece":  # byte tokens for "\n": every part boundary is a token boundary
            assert (len(enc.chain_ids) == 0) == (row["reasoning"] == "")


def test_prune_command_over_the_matrix(matrix_model_dir, tmp_path, capsys):
    from rl.cli import main

    data = write_jsonl(tmp_path / "chains.jsonl", ROWS)
    out = tmp_path / "out"
    assert main(["prune", "--data", str(data), "--model", str(matrix_model_dir), "--keep", "0.5", "-o", str(out),
                 "--mode", "approx", "--candidates", "4"]) == 0
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(steps) == len(ROWS)
    for s, row in zip(steps, ROWS):
        assert "".join(s["tokens"]) == row["reasoning"]
        assert sorted(s["order"]) == list(range(s["n"])) and len(s["categories"]) == s["n"] == len(s["tokens"])
    full = [json.loads(line) for line in (out / "sft" / "keep-0.50.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["completion"].endswith(f"{SEP} {row['answer']}") for r, row in zip(full, ROWS)] == [True, True]
