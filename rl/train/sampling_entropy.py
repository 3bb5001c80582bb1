"""Entropies of the sampled tokens, recorded while `generate` samples them.

The step-scope forking mask needs every completion token's entropy before the first loss; recording
it at sampling time replaces a no-grad forward of the whole generation batch (the pre-pass that cost
as much as the selective head saved on real model shapes, issue 13). On SmolLM2-135M these differ
from a training-time forward by at most 2.5e-4 nats and pick the same top-20% set
(bench/forking_mask.py prints the agreement line).
"""

from __future__ import annotations

import contextlib
import logging

import torch
from transformers.generation.logits_process import LogitsProcessor

from rl.signal.entropy import token_entropy

logger = logging.getLogger(__name__)

__all__ = ["GenerationEntropy", "aligned_entropy_table", "record_generation_entropy", "entropy_table"]


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
        self.sampled: list[list[int]] | None = None  # the completion tokens generate returned (see below)

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
    processor list; yields the list of recorders, one per generate call. Each recorder also keeps the
    completion tokens its call returned (`sampled`: the columns after the prompt), so a caller can tell
    whether the completions it finally holds are the tokens whose entropies were recorded.

    `model` is the transformers model whose `generate` does the decoding (the base model under
    PEFT). Patches the instance's `_get_logits_processor` (the method `generate` builds its list
    with) and `generate`, and removes both patches on exit.
    """
    recorders: list[GenerationEntropy] = []
    original = model._get_logits_processor
    original_generate = model.generate

    def with_entropy_first(*args, **kwargs):
        processors = original(*args, **kwargs)
        recorder = GenerationEntropy(temperature)
        recorders.append(recorder)
        processors.insert(0, recorder)
        return processors

    def generate(*args, **kwargs):
        before = len(recorders)
        out = original_generate(*args, **kwargs)
        prompt = kwargs.get("input_ids", args[0] if args else None)
        seqs = getattr(out, "sequences", out)
        if len(recorders) == before + 1 and isinstance(prompt, torch.Tensor) and isinstance(seqs, torch.Tensor):
            recorders[-1].sampled = seqs[:, prompt.shape[1]:].tolist()
        return out

    own_generate = "generate" in vars(model)  # an instance-level generate (another wrapper) is put back
    model._get_logits_processor = with_entropy_first
    model.generate = generate
    try:
        yield recorders
    finally:
        del model._get_logits_processor
        if own_generate:
            model.generate = original_generate
        else:
            del model.generate


def entropy_table(rows: list[torch.Tensor], num_cols: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(len(rows), num_cols) tensor: row i's values left-aligned, zero after (TRL pads completions right)."""
    out = torch.zeros(len(rows), num_cols, dtype=dtype, device=device)
    for i, r in enumerate(rows):
        n = min(int(r.numel()), num_cols)
        out[i, :n] = r[:n].to(device=device, dtype=dtype)
    return out


def aligned_entropy_table(recorded: list, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                          dtype=torch.float32) -> torch.Tensor | None:
    """The recorded (entropies, sampled ids) rows as a (B, T) tensor aligned with a batch's completions (zero
    on padding), or None if they do not cover it or the batch's completions are not the tokens that were
    sampled (a subclass or wrapper that edits completions after `generate`): entropies of other tokens
    would pick a wrong kept set, so the caller recomputes them."""
    if len(recorded) != completion_mask.shape[0]:
        return None
    rows, sampled = [r for r, _ in recorded], [ids for _, ids in recorded]
    lengths = completion_mask.sum(dim=1).tolist()
    if any(int(r.numel()) < n for r, n in zip(rows, lengths)):
        logger.warning("sampling-time entropies do not cover the completions; recomputing them")
        return None
    ids = completion_ids.tolist()
    if any(ids[i][:n] != list(sampled[i][:n]) for i, n in enumerate(lengths)):
        logger.warning("the completions differ from the sampled tokens (edited after generate); "
                       "recomputing their entropies with a no-grad forward")
        return None
    mask = completion_mask.to(dtype)
    return entropy_table(rows, completion_mask.shape[1], device=completion_mask.device, dtype=dtype) * mask
