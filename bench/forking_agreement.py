"""Do the entropies recorded while sampling match a training-time forward? (bench/forking_mask.py's
`--agreement` line; the recorder is rl/train/sampling_entropy.py.) A shared helper, not a bench.

The real builtin SmolLM2-135M-Instruct (or `model`: forking_mask's `--smoke` passes a tiny one) samples 8 x 64 tokens with transformers `generate` (top-k 50,
T 0.7) with the recorder in place; a plain forward of the finished batch (LM head in float32) then
gives the training-time entropies. Reports their max / mean absolute difference and the overlap of
the top-ratio sets each selects.
"""

from __future__ import annotations

import torch

__all__ = ["BUILTIN", "entropy_agreement"]

BUILTIN = "builtin:smollm2-135m-instruct"


@torch.no_grad()
def entropy_agreement(ratio: float, n_rows: int = 8, length: int = 64, model: str = BUILTIN) -> str:
    """Sampling-time vs training-time entropies on `model` (the real SmolLM2-135M-Instruct by default), and
    the overlap of the top-`ratio` sets they select (bench/forking_mask.py's docstring: "Entropy agreement")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.runtime.assets import resolve_model
    from rl.signal.entropy import select_forking_tokens
    from rl.train.selective_head import head_logps_and_entropy
    from rl.train.sampling_entropy import record_generation_entropy

    label = "builtin SmolLM2-135M-Instruct" if model == BUILTIN else model
    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = ["Question: what is 17 + 25? Answer step by step.", "Write one sentence about the sea."]
    enc = tok([p for p in prompts for _ in range(n_rows // 2)], return_tensors="pt", padding=True,
              padding_side="left")
    torch.manual_seed(0)
    with record_generation_entropy(model, 0.7) as recorders:
        seq = model.generate(**enc, do_sample=True, temperature=0.7, top_k=50, max_new_tokens=length,
                             pad_token_id=tok.pad_token_id)
    P = enc["input_ids"].shape[1]
    comp = seq[:, P:]
    is_eos = comp == tok.eos_token_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full((comp.shape[0],), comp.shape[1]))
    lengths = torch.minimum(first + 1, torch.tensor(comp.shape[1])).tolist()
    gen = recorders[0].per_row(lengths)
    am = torch.cat([enc["attention_mask"], torch.ones_like(comp)], 1)
    for i, n in enumerate(lengths):
        am[i, P + n:] = 0
    hidden = model.model(input_ids=seq, attention_mask=am).last_hidden_state
    valid = torch.zeros(comp.shape, dtype=torch.bool)
    for i, n in enumerate(lengths):
        valid[i, :n] = True
    rows, cols = valid.nonzero(as_tuple=True)
    _, train = head_logps_and_entropy(model.lm_head, hidden[rows, P - 1 + cols], comp[rows, cols], 0.7)
    got = torch.cat(gen)
    diff = (got - train).abs()
    g_tab, t_tab = torch.zeros(valid.shape), torch.zeros(valid.shape)
    g_tab[rows, cols], t_tab[rows, cols] = got, train
    kept_g, _ = select_forking_tokens(g_tab, valid, ratio)
    kept_t, _ = select_forking_tokens(t_tab, valid, ratio)
    overlap = int((kept_g & kept_t).sum()) / max(1, int(kept_t.sum()))
    return (f"entropy agreement ({label}, generate T 0.7 top-k 50, {len(got)} tokens, fp32): "
            f"sampling-time vs training-forward |dH| max {float(diff.max()):.2e} mean {float(diff.mean()):.2e} "
            f"nats (mean H {float(train.mean()):.2f}); top-{ratio:.0%} sets overlap {overlap:.3f}")
