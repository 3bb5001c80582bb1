"""`rl eval next-token --mode reasoning` scores the text each sample adds after its prompt, as the
trainer gives rewards (rl/signal/decoding.py): with a clean-up tokenizer (tests/tokenizer_matrix.py
`cleanup`) a boxed " ." decoded alone becomes "." and a right guess scored 0."""

from __future__ import annotations

import pytest
import torch

from rl.eval.next_token import NextTokenSettings, evaluate_next_token
from tests.tokenizer_matrix import build_matrix_model


@pytest.mark.parametrize("kind", ["cleanup", "sentencepiece", "bpe"])
def test_reasoning_samples_are_scored_in_context(tmp_path, matrix_root, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_matrix_model(tmp_path / kind, kind, matrix_root)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [{"prompt": "Predict the next token.\n\nIt is a test", "context": "It is a test", "continuation": " .",
             "boundaries": [2], "entropy": 2.0, "doc_id": "d", "position": 0}]
    answers = ["I think \\boxed{ .}", "\\boxed{.}"]  # the right guess keeps its space; the second lacks it
    prompts = []

    def fake_generate(input_ids, attention_mask, num_return_sequences=1, **kw):  # the sampler repeats prompts itself
        prompts.extend(input_ids.tolist())
        outs = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
        width = max(map(len, outs))
        new = torch.tensor([o + [tok.eos_token_id] * (width - len(o)) for o in outs])
        return torch.cat([input_ids.repeat_interleave(num_return_sequences, 0), new], dim=1)

    model.generate = fake_generate
    res = evaluate_next_token(str(path), rows, NextTokenSettings(mode="reasoning", samples=2, pass_k=1, batch_size=1,
                                                                 temperature=0.7),
                              model=model, tokenizer=tok, progress=False)
    assert res["per_row"][0]["rewards"] == [1.0, 0.0]
    bos = [tok.bos_token_id] if kind == "sentencepiece" else []
    assert prompts[0][:len(bos)] == bos
