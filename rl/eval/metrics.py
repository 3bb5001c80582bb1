"""Next-token metrics that see the whole distribution, not only its argmax.

For a position with ground truth (`continuation`, `boundaries`) and the model's next-token
distribution p (logits z):

* expected accuracy at temperature T: the probability that ONE token sampled from softmax(z / T)
  is rewarded, i.e. the expected RPT reward of a 1-token completion-format guess:
  sum of p_T(v) over the vocabulary tokens v whose decoded bytes are a ground-truth prefix ending
  on a boundary (Eq. 3). It moves smoothly with training where the greedy top-1 flips rarely.
* top-1: whether argmax z is such a token (the RPT paper's standard-mode accuracy).
* NLL: -log p_1(first ground-truth token), summing p over every vocabulary entry that decodes to
  exactly those bytes (None when no single token does: another tokenizer built the data).

`token_candidates` maps decoded token bytes to ids once per tokenizer (so a row's rewarded tokens
are found in O(boundaries), never by decoding the vocabulary per row). `document_metrics` gives
the same three numbers for every token of whole documents (teacher-forced, non-overlapping
windows), summed per document for the paired bootstrap of rl/eval/stats.py.
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any, Sequence

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_bytes_index(tokenizer) -> dict[bytes, list[int]]:
    """Decoded UTF-8 bytes of every vocabulary id (special tokens skipped) -> the ids decoding to them.

    Built once per tokenizer object (one batched decode of the vocabulary, ~1 s for 50k tokens)."""
    try:
        return _CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    index: dict[bytes, list[int]] = {}
    for token_id, text in zip(ids, texts):
        if text and "\ufffd" not in text:  # a partial UTF-8 character is never a whole-token guess
            index.setdefault(text.encode("utf-8"), []).append(token_id)
    try:
        _CACHE[tokenizer] = index
    except TypeError:  # not weak-referenceable: no cache
        pass
    return index


def token_candidates(index: dict[bytes, list[int]], continuation: str, boundaries: Sequence[int]) -> tuple[list[int], list[int]]:
    """(ids of the first ground-truth token, ids rewarded under Eq. 3 = any boundary-ending prefix)."""
    data = continuation.encode("utf-8", "surrogatepass")
    first = list(index.get(data[: boundaries[0]], []))
    rewarded = []
    for bound in boundaries:
        rewarded.extend(index.get(data[:bound], []))
    return first, rewarded


def _forward_kwargs(model) -> tuple[dict, bool]:
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {"use_cache": False}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs, "position_ids" in params


def position_metrics(model, tokenizer, contexts: list[list[int]], targets: list[tuple[str, Sequence[int]]], *,
                     temperature: float = 1.0, batch_size: int = 8) -> list[dict]:
    """Per context (token ids): expected accuracy at `temperature`, top-1 and NLL of its target
    (`continuation`, `boundaries`); longest-first left-padded batches, last-position logits only."""
    import torch

    from rl.train.padding import left_pad

    if temperature <= 0:
        raise ValueError("expected accuracy needs a temperature > 0")
    index = token_bytes_index(tokenizer)
    kwargs, takes_positions = _forward_kwargs(model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    out: list[dict] = [{} for _ in contexts]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids, mask, pos = left_pad([contexts[i] for i in chunk], pad_id, device)
            extra = {"position_ids": pos} if takes_positions else {}
            logits = model(input_ids=ids, attention_mask=mask, **extra, **kwargs).logits[:, -1, :].float()
            probs_t = torch.softmax(logits / temperature, dim=-1)
            logp = torch.log_softmax(logits, dim=-1)
            argmax = logits.argmax(dim=-1).tolist()
            for row, i in enumerate(chunk):
                first, rewarded = token_candidates(index, *targets[i])
                expected = float(probs_t[row, rewarded].sum()) if rewarded else 0.0
                nll = float(-torch.logsumexp(logp[row, first], dim=0)) if first else None
                out[i] = {"expected": expected, "top1": 1.0 if argmax[row] in rewarded else 0.0, "nll": nll,
                          "argmax": argmax[row]}
    return out


def document_metrics(model, tokenizer, texts: list[str], *, temperature: float = 1.0, window: int = 512,
                     batch_size: int = 4, progress=None) -> list[dict]:
    """Per document: tokens scored and the sums of expected accuracy at `temperature`, top-1 and NLL
    over every token that has context (each window's first token has none and is skipped).

    Teacher-forced over non-overlapping windows of `window` tokens; the LM head runs per row, so
    no batch x window x vocab tensor is held."""
    import torch

    if temperature <= 0:
        raise ValueError("expected accuracy needs a temperature > 0")
    device = next(model.parameters()).device
    pieces: list[tuple[int, list[int]]] = []  # (document, window ids)
    for doc, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), window):
            piece = ids[start:start + window]
            if len(piece) >= 2:
                pieces.append((doc, piece))
    sums = [{"tokens": 0, "expected": 0.0, "top1": 0.0, "nll": 0.0} for _ in texts]
    head = model.get_output_embeddings()
    backbone = getattr(model, model.base_model_prefix, None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(pieces), batch_size):
            chunk = pieces[start:start + batch_size]
            width = max(len(p) for _, p in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, piece) in enumerate(chunk):
                ids[r, : len(piece)] = torch.tensor(piece)
                mask[r, : len(piece)] = 1
            ids, mask = ids.to(device), mask.to(device)
            if backbone is not None and head is not None:
                hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
                rows = (head(hidden[r : r + 1])[0] for r in range(len(chunk)))
            else:
                rows = iter(model(input_ids=ids, attention_mask=mask).logits)
            for (doc, piece), logits in zip(chunk, rows):
                logits = logits[: len(piece) - 1].float()
                target = ids.new_tensor(piece[1:]).to(logits.device)
                logp = torch.log_softmax(logits, dim=-1)
                p_t = torch.softmax(logits / temperature, dim=-1).gather(1, target[:, None])[:, 0]
                entry = sums[doc]
                entry["tokens"] += len(piece) - 1
                entry["expected"] += float(p_t.sum())
                entry["top1"] += float((logits.argmax(dim=-1) == target).float().sum())
                entry["nll"] += float(-logp.gather(1, target[:, None]).sum())
            if progress is not None:
                progress.update(len(chunk))
    return sums


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None
