"""RLP scoring: teacher-forced log-probabilities of the true next token(s), no gradient.

RLP ("RLP: Reinforcement as a Pretraining Objective", arXiv 2510.01265) rewards a thought c_t by

    r(c_t) = log p_theta(x_t | x_<t, c_t) - log p_teacher(x_t | x_<t)

Both terms are the log-probability of known tokens at the END of a sequence. The functions here
score a batch of token sequences whose last `n_scored[i]` tokens are the targets:

* rows are LEFT-padded so every row's targets sit in the last columns, with explicit
  `position_ids` (cumulative attention mask), so padding changes nothing;
* the model's own forward runs with `logits_to_keep = K + 1` (K = the most targets of any row):
  only K + 1 positions per row go through the LM head, never a B x T x V logits tensor, and DDP,
  PEFT and ZeRO-3 hooks stay intact because it is the model's usual forward;
* rows go in chunks of `chunk_rows`; `agreed_chunks` makes every rank run the same number of
  forward calls (ZeRO-3 gathers each layer's weights collectively, so one rank with fewer calls
  would hang the others): a rank with fewer rows repeats its first row in dummy chunks;
* the model runs in eval mode (`eval_mode`: no dropout, so a score is a function of the weights and
  the ids; TRL's defaults keep dropout on in training, e.g. `lora_dropout` 0.05), and every module's
  own training flag is given back afterwards, also when the forward raises.

Pure functions of a model and token ids, tested against a plain full-logits reference.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["agreed_chunks", "eval_mode", "score_targets", "scored_sequence"]


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode inside the block; each module's own `training` flag restored after it
    (mixed flags too), also on an exception."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


def scored_sequence(context_ids: Sequence[int], thought_ids: Sequence[int] | None, open_ids: Sequence[int],
                    close_ids: Sequence[int], target_ids: Sequence[int]) -> list[int]:
    """The token sequence a thought is scored on: context, open delimiter, thought, close
    delimiter, then the true next token(s). `thought_ids=None` is the no-think baseline:
    context then targets (what the teacher scores)."""
    if thought_ids is None:
        return list(context_ids) + list(target_ids)
    return list(context_ids) + list(open_ids) + list(thought_ids) + list(close_ids) + list(target_ids)


def agreed_chunks(n_rows: int, chunk_rows: int, group=None) -> int:
    """Forward calls this rank makes for `n_rows` rows: ceil(n_rows / chunk_rows), maximised over
    the ranks of `group` when torch.distributed is initialised with more than one rank."""
    local = math.ceil(n_rows / chunk_rows) if n_rows else 0
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        count = torch.tensor([local], dtype=torch.int64)
        if dist.get_backend(group) == "nccl":
            count = count.cuda()
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=group)
        return int(count.item())
    return local


@torch.no_grad()
def score_targets(model, sequences: Sequence[Sequence[int]], n_scored: Sequence[int], *, pad_id: int,
                  chunk_rows: int = 8, num_chunks: int | None = None, device=None) -> list[float]:
    """Sum over each row's last `n_scored[i]` tokens of log p(token | everything before it).

    `num_chunks` (>= the chunks the rows need) pads the work with dummy chunks so every rank makes
    the same number of forward calls; None: just the rows' own chunks. Log-softmax in float32
    (float64 when the model is float64) over the K + 1 kept positions only.
    """
    if len(sequences) != len(n_scored):
        raise ValueError("sequences and n_scored differ in length")
    for seq, k in zip(sequences, n_scored):
        if not 1 <= k < len(seq):
            raise ValueError(f"each row needs 1 <= n_scored < its length, got {k} of {len(seq)}")
    device = device or next(model.parameters()).device
    need = math.ceil(len(sequences) / chunk_rows) if sequences else 0
    total = need if num_chunks is None else num_chunks
    if total < need:
        raise ValueError(f"num_chunks={num_chunks} is fewer than the {need} chunks the rows need")
    out: list[float] = []
    with eval_mode(model):
        for c in range(total):
            rows = list(range(c * chunk_rows, min((c + 1) * chunk_rows, len(sequences))))
            dummy = not rows
            if dummy:  # this rank is done but others are not: same call, result dropped
                seqs, ks = ([[pad_id, pad_id]], [1]) if not sequences else ([sequences[0]], [n_scored[0]])
            else:
                seqs, ks = [sequences[i] for i in rows], [n_scored[i] for i in rows]
            values = _score_chunk(model, seqs, ks, pad_id, device)
            if not dummy:
                out.extend(values)
    return out


def _score_chunk(model, seqs, ks, pad_id: int, device) -> list[float]:
    width = max(len(s) for s in seqs)
    k_max = max(ks)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):  # left padding: every row ends in the last column
        ids[i, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, width - len(seq):] = 1
    ids, mask = ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                   logits_to_keep=k_max + 1, use_cache=False).logits
    # logits[:, j] predicts token at column width - (k_max + 1) + j + 1; the last one predicts nothing
    logits = logits[:, -(k_max + 1):-1]
    work = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logps = torch.log_softmax(logits.to(work), dim=-1)
    targets = ids[:, -k_max:]
    picked = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (b, k_max)
    keep = torch.arange(k_max, device=device).unsqueeze(0) >= (k_max - torch.tensor(ks, device=device)).unsqueeze(1)
    return (picked * keep).sum(-1).tolist()
