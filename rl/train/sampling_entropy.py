"""Entropies of the sampled tokens, recorded while `generate` samples them.

The step-scope forking mask needs every completion token's entropy before the first loss; recording
it at sampling time replaces a no-grad forward of the whole generation batch (the pre-pass that cost
as much as the selective head saved on real model shapes, issue 13). On SmolLM2-135M these differ
from a training-time forward by at most 2.5e-4 nats and pick the same top-20% set
(bench/forking_mask.py prints the agreement line).
"""

from __future__ import annotations

import contextlib

import torch
from transformers.generation.logits_process import LogitsProcessor

from rl.signal.entropy import token_entropy

__all__ = ["GenerationEntropy", "record_generation_entropy", "entropy_table"]


class GenerationEntropy(LogitsProcessor):
    """A logits processor that records, at every decoding step, the entropy of each row's RAW
    next-token distribution softmax(logits / temperature), and changes nothing.

    `record_generation_entropy` puts it FIRST in `generate`'s processor list, so it sees the model's
    logits before repetition penalties, top-k/top-p/min-p and the temperature warper: the same
    distribution the policy loss uses (TRL divides the logits by its temperature). It keeps one
    (B,) float32 vector per step, never the (B, V) scores, so the cost is one pass over each
    step's logits. Step s is completion token s of every row (transformers appends one token per
    row per step; rows that finished keep being padded), so `per_row(lengths)` gives each row's
    first `lengths[i]` values.
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # Few passes over (B, V), as in `head_logps_and_entropy`: shift by the max, scale, exp once;
            # H = log S - (e . z) / S. Non-finite logits (masked vocabulary) take the careful path.
            z = scores.detach().float()
            z = z - z.amax(dim=-1, keepdim=True)
            if self.temperature != 1.0:
                z.mul_(1.0 / self.temperature)
            e = torch.exp(z)
            s = e.sum(-1)
            h = (torch.log(s) - torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).reshape(-1) / s).clamp_min(0.0)
            if not torch.isfinite(h).all():
                h = token_entropy(scores.detach(), self.temperature).float()
            self.steps.append(h)
        return scores

    def per_row(self, lengths: list[int]) -> list[torch.Tensor]:
        """Entropies of each row's first `lengths[i]` completion tokens (lengths in generate's row order)."""
        if not self.steps:
            return [torch.zeros(0) for _ in lengths]
        table = torch.stack(self.steps, dim=1)  # (B, steps)
        if table.shape[0] != len(lengths) or max(lengths, default=0) > table.shape[1]:
            raise ValueError(f"recorded {tuple(table.shape)} entropies for {len(lengths)} rows of lengths up to "
                             f"{max(lengths, default=0)}")
        return [table[i, :n] for i, n in enumerate(lengths)]


@contextlib.contextmanager
def record_generation_entropy(model, temperature: float):
    """Within the block, every `model.generate` call runs a `GenerationEntropy` first in its
    processor list; yields the list of recorders, one per generate call.

    `model` is the transformers model whose `generate` does the decoding (the base model under
    PEFT). Patches the instance's `_get_logits_processor` (the method `generate` builds its list
    with) and removes the patch on exit.
    """
    recorders: list[GenerationEntropy] = []
    original = model._get_logits_processor

    def with_entropy_first(*args, **kwargs):
        processors = original(*args, **kwargs)
        recorder = GenerationEntropy(temperature)
        recorders.append(recorder)
        processors.insert(0, recorder)
        return processors

    model._get_logits_processor = with_entropy_first
    try:
        yield recorders
    finally:
        del model._get_logits_processor


def entropy_table(rows: list[torch.Tensor], num_cols: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(len(rows), num_cols) tensor: row i's values left-aligned, zero after (TRL pads completions right)."""
    out = torch.zeros(len(rows), num_cols, dtype=dtype, device=device)
    for i, r in enumerate(rows):
        n = min(int(r.numel()), num_cols)
        out[i, :n] = r[:n].to(device=device, dtype=dtype)
    return out
