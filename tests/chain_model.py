"""A tiny model that writes a chosen token sequence, for tests that need to know what the policy samples.

`build_chain_model(src, dst, chain)` copies a tiny model (tests/tokenizer_matrix.py
`build_matrix_model`, tests/tiny_models.py) and edits its weights so that, after any prompt whose last
token is not in `chain`, it writes exactly `chain` and then EOS, at any temperature: each token's
embedding is dominated by one coordinate of its own (`scale`, against the random init's ~0.02), so the
final hidden state points along the current token's coordinate, and an untied LM head maps that
coordinate to the next token of the chain (logit ~ `gain` x sqrt(hidden) against 0 for every other
token). Tokens of `chain` must be distinct (each has one successor).
"""

from __future__ import annotations

from pathlib import Path


def build_chain_model(src: Path | str, dst: Path | str, chain: list[int], scale: float = 100.0,
                      gain: float = 10.0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    hidden, eos = model.config.hidden_size, tok.eos_token_id
    if len(set(chain)) != len(chain) or len(chain) + 1 > hidden or eos in chain:
        raise ValueError(f"chain must be distinct non-EOS tokens, at most {hidden - 1} of them: {chain}")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 0] += scale  # any token outside the chain: coordinate 0 -> chain[0]
        head = torch.zeros_like(emb)
        head[chain[0], 0] = gain
        for j, token in enumerate(chain):
            emb[token, 0] -= scale
            emb[token, j + 1] += scale
            head[chain[j + 1] if j + 1 < len(chain) else eos, j + 1] = gain
    model.config.tie_word_embeddings = False
    if getattr(model.config, "text_config", None) is not None:
        model.config.get_text_config().tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return Path(dst)
