"""`rl prune --sample`: a reward scores the text the policy wrote after the prompt, as in training
(issue 22 finding 2). With a SentencePiece-style tokenizer (tests/tokenizer_matrix.py) a completion
decoded alone loses its first token's leading space; the policy here is a tiny model made to write a
known continuation (tests/chain_model.py)."""

from __future__ import annotations

from rl.prune.chains import Chain
from rl.prune.samples import SampleSettings, draw, policy_prompt, sample_chains
from tests.chain_model import build_chain_model
from tests.tokenizer_matrix import build_matrix_model, matrix_tokenizer

WRITTEN = " the sum is"  # starts with a space: `▁the`, which a Strip decoder drops when decoded alone


def test_sampled_completions_are_the_text_after_the_prompt(tmp_path, matrix_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = matrix_tokenizer("sentencepiece", matrix_root)
    settings = SampleSettings(samples=2, max_new_tokens=8)
    prompt = policy_prompt("What is 2+3?", settings)
    head = tok(prompt, add_special_tokens=False)["input_ids"]  # as `draw` tokenizes it
    full = tok(prompt + WRITTEN, add_special_tokens=False)["input_ids"]
    assert full[:len(head)] == head and head[-1] not in full[len(head):]
    path = build_chain_model(build_matrix_model(tmp_path / "src", "sentencepiece", matrix_root), tmp_path / "chain",
                             full[len(head):])
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)

    prompts_seen = []
    generate = policy.generate
    policy.generate = lambda **kw: prompts_seen.append(kw["input_ids"][0].tolist()) or generate(**kw)
    drawn = draw(policy, tok, "What is 2+3?", settings)
    assert drawn == [(WRITTEN, full[len(head):])] * 2  # decoded alone: "the sum is"
    assert prompts_seen == [[tok.bos_token_id] + head]  # the policy reads BOS first, as in training

    seen = []

    def exact(prompts, completions, **kwargs):
        seen.extend(completions)
        return [1.0 if p + c == prompt + WRITTEN else 0.0 for p, c in zip(prompts, completions)]

    _, records = sample_chains(policy, tok, [Chain("q", "What is 2+3?", "", "5")], exact, settings)
    assert seen == [WRITTEN] * 2
    assert [(r["completion"], r["reward"]) for r in records] == [(WRITTEN, 1.0)] * 2
