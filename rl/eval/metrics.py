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
windows), summed per document for the paired bootstrap of rl/eval/stats.py; `token_metrics` keeps
them per token, with the NLL at a calibrated temperature, the entropy of the sampling distribution
and (optionally) expected accuracy and entropy on a grid of temperatures.

Temperature-fair metrics (a pure change of temperature, logits / c, cannot improve them):

* greedy top-1 (the argmax does not move with T);
* calibrated NLL: the NLL at the temperature that minimises a model's mean NLL on data that is not
  the held-out set (`fit_temperature`: a grid over log T, then golden-section search in the grid's
  best bracket; the mean NLL is convex in 1/T, hence unimodal in log T, so this finds the global
  minimum). A model whose logits are the base's divided by c gets T_fit = T_base / c, so the same
  held-out distributions and the same calibrated NLL.

Expected accuracy at a fixed T is not fair in this sense: sharpening alone raises it wherever the
model's top token is right more often than not. `match_temperature` finds the temperature at which
one model's mean entropy (on a grid, interpolated in log T) equals another's, for the sharpening
share (rl/eval/learning_report.py).
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any, Sequence

from rl.signal.entropy import token_entropy, topk_entropy
from rl.signal.padding import left_pad
from rl.signal.scoring import logit_reader, scoring, text_prefix, token_texts

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

    texts = token_texts(tokenizer, ids, skip_special_tokens=True)  # as each reads after text: `▁the` is " the"
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


def _last_logits(model, tokenizer, contexts: list[list[int]], batch_size: int):
    """Yield (row indices, last-position logits (rows, V) float32) over longest-first left-padded batches
    (the model's own forward, in eval mode)."""
    kwargs, takes_positions = _forward_kwargs(model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    with scoring(model):  # eval mode, inference mode
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids, mask, pos = left_pad([contexts[i] for i in chunk], pad_id, device)
            extra = {"position_ids": pos} if takes_positions else {}
            yield chunk, model(input_ids=ids, attention_mask=mask, **extra, **kwargs).logits[:, -1, :].float()


def position_metrics(model, tokenizer, contexts: list[list[int]], targets: list[tuple[str, Sequence[int]]], *,
                     temperature: float = 1.0, batch_size: int = 8,
                     calibrated_temperature: float | None = None) -> list[dict]:
    """Per context (token ids): expected accuracy at `temperature`, top-1 and NLL of its target
    (`continuation`, `boundaries`); with `calibrated_temperature` also `nll_cal`, the NLL at that
    temperature. Longest-first left-padded batches, last-position logits only."""
    import torch

    if temperature <= 0 or (calibrated_temperature is not None and not calibrated_temperature > 0):
        raise ValueError("expected accuracy and NLL need a temperature > 0")
    index = token_bytes_index(tokenizer)
    out: list[dict] = [{} for _ in contexts]
    for chunk, logits in _last_logits(model, tokenizer, contexts, batch_size):
        probs_t = torch.softmax(logits / temperature, dim=-1)
        logp = torch.log_softmax(logits, dim=-1)
        argmax = logits.argmax(dim=-1).tolist()
        firsts = []
        for row, i in enumerate(chunk):
            first, rewarded = token_candidates(index, *targets[i])
            firsts.append(first)
            expected = float(probs_t[row, rewarded].sum()) if rewarded else 0.0
            nll = float(-torch.logsumexp(logp[row, first], dim=0)) if first else None
            out[i] = {"expected": expected, "top1": 1.0 if argmax[row] in rewarded else 0.0, "nll": nll,
                      "argmax": argmax[row]}
        if calibrated_temperature is not None:
            cal = nll_at_temperature(logits, firsts, calibrated_temperature).tolist()
            for row, i in enumerate(chunk):
                out[i]["nll_cal"] = None if math.isnan(cal[row]) else cal[row]
    return out


def position_logits(model, tokenizer, contexts: list[list[int]], targets: list[tuple[str, Sequence[int]]], *,
                    batch_size: int = 8) -> tuple:
    """(last-position logits (N, V) float32, first-token id sets) of each context: what
    `fit_temperature` fits a calibration temperature on (N x V floats are held: keep N modest)."""
    import torch

    index = token_bytes_index(tokenizer)
    rows: list = [None] * len(contexts)
    for chunk, logits in _last_logits(model, tokenizer, contexts, batch_size):
        for row, i in enumerate(chunk):
            rows[i] = logits[row].cpu()
    firsts = [token_candidates(index, *target)[0] for target in targets]
    return (torch.stack(rows) if rows else torch.zeros((0, 0))), firsts


def _document_pieces(tokenizer, texts: list[str], window: int) -> list[tuple[int, int, list[int]]]:
    """(document, first token's index in the document, window ids) of non-overlapping windows."""
    pieces = []
    for doc, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), window):
            piece = ids[start:start + window]
            if len(piece) >= 2:
                pieces.append((doc, start, piece))
    return pieces


def _window_logits(model, tokenizer, pieces, batch_size: int):
    """Yield (document, start, piece, logits (len(piece) - 1, V) float32) per window, teacher-forced in
    eval mode, each window read after the tokenizer's text prefix (BOS when it adds one), the model's
    real logits (rl/signal/scoring.py); the LM head runs per row, so no batch x window x vocab tensor."""
    import torch

    device = next(model.parameters()).device
    reader = logit_reader(model)
    prefix = text_prefix(tokenizer)
    skip = len(prefix)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with scoring(model):
        for start in range(0, len(pieces), batch_size):
            chunk = pieces[start:start + batch_size]
            width = skip + max(len(p) for _, _, p in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, _, piece) in enumerate(chunk):
                ids[r, : skip + len(piece)] = torch.tensor(prefix + list(piece))
                mask[r, : skip + len(piece)] = 1
            states = reader.states(ids.to(device), mask.to(device))
            for r, (doc, first, piece) in enumerate(chunk):
                yield doc, first, piece, reader.logits(states[r, skip: skip + len(piece) - 1])


def token_metrics(model, tokenizer, texts: list[str], *, temperature: float = 1.0,
                  calibrated_temperature: float | None = None, grid: Sequence[float] | None = None,
                  proxy: tuple[str, int] | None = None, window: int = 512, batch_size: int = 4,
                  progress=None) -> list[dict]:
    """Per document, numpy arrays over every token that has context (each window's first token has
    none), teacher-forced over non-overlapping windows of `window` tokens:

    position (index in the document's tokens), top1, nll (T = 1), expected (probability of the true
    token at `temperature`), entropy (of softmax(z / temperature)); nll_cal at
    `calibrated_temperature` when given; grid_expected / grid_entropy (len(grid) x tokens) at each
    temperature of `grid` when given; proxy_entropy when `proxy` is ("topk", k) or ("full", 0): the
    model's own entropy at T = 1 as `rl data rpt` computes it (rl/signal/entropy.py), for splitting
    tokens by a proxy's entropy when this model is the proxy."""
    import numpy as np
    import torch

    temps = [temperature] + ([calibrated_temperature] if calibrated_temperature is not None else []) + list(grid or [])
    if any(not t > 0 for t in temps):
        raise ValueError("expected accuracy and NLL need a temperature > 0")
    parts: list[dict[str, list]] = [{} for _ in texts]
    pieces = _document_pieces(tokenizer, texts, window)
    for doc, first, piece, logits in _window_logits(model, tokenizer, pieces, batch_size):
        target = torch.tensor(piece[1:], device=logits.device)
        sets = target_sets(target)
        logp = torch.log_softmax(logits, dim=-1)
        entropy, expected = distribution_stats(logits, sets, temperature)
        values = {"position": np.arange(first + 1, first + len(piece)),
                  "top1": (logits.argmax(dim=-1) == target).double().cpu().numpy(),
                  "nll": (-logp.gather(1, target[:, None])[:, 0]).double().cpu().numpy(),
                  "expected": expected.double().cpu().numpy(), "entropy": entropy.double().cpu().numpy()}
        if calibrated_temperature is not None:
            values["nll_cal"] = nll_at_temperature(logits, sets, calibrated_temperature).double().cpu().numpy()
        if grid:
            stats = [distribution_stats(logits, sets, t) for t in grid]
            values["grid_entropy"] = torch.stack([e for e, _ in stats]).double().cpu().numpy()
            values["grid_expected"] = torch.stack([x for _, x in stats]).double().cpu().numpy()
        if proxy is not None:
            kind, k = proxy
            ent = topk_entropy(logits, k=k) if kind == "topk" else token_entropy(logits)
            values["proxy_entropy"] = ent.double().cpu().numpy()
        for key, value in values.items():
            parts[doc].setdefault(key, []).append(value)
        if progress is not None:
            progress.update(1)
    out = []
    for part in parts:
        entry = {}
        for key, chunks in part.items():
            entry[key] = np.concatenate(chunks, axis=-1)
        out.append(entry)
    return out


def sample_token_logits(model, tokenizer, texts: list[str], *, max_tokens: int = 1024, window: int = 512,
                        batch_size: int = 4) -> tuple:
    """(logits (N, V) float32, true next-token ids (N,)) at up to `max_tokens` token positions spread
    evenly over `texts` (teacher-forced, the windows of `token_metrics`): what `fit_temperature`
    fits a temperature for whole-document tokens on."""
    import torch

    pieces = _document_pieces(tokenizer, texts, window)
    total = sum(len(p) - 1 for _, _, p in pieces)
    stride = max(1, -(-total // max_tokens)) if total else 1
    rows, targets, seen = [], [], 0
    for _, _, piece, logits in _window_logits(model, tokenizer, pieces, batch_size):
        n = len(piece) - 1
        keep = [j for j in range(n) if (seen + j) % stride == 0]
        seen += n
        if keep:
            rows.append(logits[keep].cpu())
            targets.extend(piece[j + 1] for j in keep)
    if not rows:
        return torch.zeros((0, 0)), torch.zeros((0,), dtype=torch.long)
    return torch.cat(rows), torch.tensor(targets, dtype=torch.long)


def document_metrics(model, tokenizer, texts: list[str], *, temperature: float = 1.0, window: int = 512,
                     batch_size: int = 4, progress=None) -> list[dict]:
    """Per document: tokens scored and the sums of expected accuracy at `temperature`, top-1 and NLL
    over every token that has context (`token_metrics`, summed)."""
    per_doc = token_metrics(model, tokenizer, texts, temperature=temperature, window=window, batch_size=batch_size,
                            progress=progress)
    return [{"tokens": int(len(d.get("top1", ()))), "expected": float(d["expected"].sum()) if d else 0.0,
             "top1": float(d["top1"].sum()) if d else 0.0, "nll": float(d["nll"].sum()) if d else 0.0}
            for d in per_doc]


# ----------------------------------------------------------------------------------------------
# Temperature (pure: tensors in, tensors or floats out)


def target_sets(targets) -> tuple:
    """(index (N, K) long, mask (N, K) bool) from per-unit target id sets: a 1-D long tensor (one id
    each) or a list of id lists (the ids whose probabilities sum to the unit's target; an empty list
    is a unit without a target, masked out everywhere)."""
    import torch

    if isinstance(targets, torch.Tensor):
        if targets.dim() != 1:
            raise ValueError("target ids must be a 1-D tensor (one id per unit) or a list of id lists")
        return targets.long()[:, None], torch.ones((len(targets), 1), dtype=torch.bool, device=targets.device)
    width = max([len(t) for t in targets] + [1])
    index = torch.zeros((len(targets), width), dtype=torch.long)
    mask = torch.zeros((len(targets), width), dtype=torch.bool)
    for row, ids in enumerate(targets):
        if ids:
            index[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[row, : len(ids)] = True
    return index, mask


def nll_at_temperature(logits, targets, temperature: float):
    """Per unit (float64): -log of the probability that softmax(logits / T) gives the unit's target
    set (NaN for a unit without a target). `logits` (N, V); `targets` as `target_sets` takes them."""
    import torch

    if not temperature > 0:
        raise ValueError("the NLL needs a temperature > 0")
    index, mask = targets if isinstance(targets, tuple) else target_sets(targets)
    z = logits.double() / temperature  # float64: the fit resolves the flat minimum, float32 would not
    index, mask = index.to(z.device), mask.to(z.device)
    picked = z.gather(1, index).masked_fill(~mask, float("-inf"))
    out = torch.logsumexp(z, dim=-1) - torch.logsumexp(picked, dim=-1)
    return out.masked_fill(~mask.any(dim=1), float("nan"))


def mean_nll_at_temperature(logits, targets, temperature: float) -> float:
    """Mean `nll_at_temperature` over the units with a target (NaN when none has one)."""
    import torch

    values = nll_at_temperature(logits, targets, temperature)
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if len(kept) else float("nan")


def fit_temperature(logits, targets, *, low: float = 0.05, high: float = 20.0, grid: int = 49,
                    tol: float = 1e-7) -> float:
    """The temperature in [low, high] that minimises the mean NLL of `targets` under softmax(logits / T).

    Robust 1-D minimisation over log T: the mean NLL is convex in 1/T (a log-sum-exp of linear
    functions minus a linear one), so unimodal in log T; a grid of `grid` log-spaced points finds
    the bracket of the minimum, golden-section search narrows it to `tol` in log T. A minimum at the
    edge of [low, high] returns the edge. Units without a target are left out; none at all: ValueError."""
    if not 0 < low < high:
        raise ValueError(f"fit_temperature needs 0 < low < high, got {low}, {high}")
    sets = target_sets(targets) if not isinstance(targets, tuple) else targets
    if not bool(sets[1].any()):
        raise ValueError("no unit has a target: nothing to fit a temperature on")
    loss = lambda log_t: mean_nll_at_temperature(logits, sets, math.exp(log_t))  # noqa: E731
    a, b = math.log(low), math.log(high)
    points = [a + (b - a) * k / (grid - 1) for k in range(grid)]
    values = [loss(x) for x in points]
    best = min(range(grid), key=lambda k: values[k])
    lo, hi = points[max(0, best - 1)], points[min(grid - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = loss(x1), loss(x2)
    while hi - lo > tol:
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - ratio * (hi - lo)
            f1 = loss(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + ratio * (hi - lo)
            f2 = loss(x2)
    return math.exp((lo + hi) / 2)


def distribution_stats(logits, targets, temperature: float) -> tuple:
    """(entropy, target mass) per unit of softmax(logits / T): the entropy in nats and the probability
    of the unit's target set (the expected accuracy of one sampled token; 0 without a target)."""
    import torch

    index, mask = targets if isinstance(targets, tuple) else target_sets(targets)
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    picked = logp.gather(1, index.to(logp.device)).masked_fill(~mask.to(logp.device), float("-inf"))
    return entropy, torch.logsumexp(picked, dim=-1).exp()


def temperature_grid(center: float, low: float = 0.35, high: float = 1.6, step: float = 0.05) -> list[float]:
    """Log-spaced temperatures from center * low to center * high, `step` apart in log T, center included."""
    first, last = math.floor(math.log(low) / step + 1e-9), math.ceil(math.log(high) / step - 1e-9)
    return [center * math.exp(k * step) for k in range(first, last + 1)]


def match_temperature(temperatures: Sequence[float], values: Sequence[float], target: float) -> tuple[int, float] | None:
    """Where a curve given on increasing `temperatures` crosses `target`: (i, w) such that the curve,
    linear in log T between temperatures[i] and temperatures[i + 1], equals `target` at
    T = exp((1 - w) log T_i + w log T_{i+1}); None when the grid does not bracket it. Apply the
    same (i, w) to any other per-temperature quantity with `at_match`."""
    for i in range(len(temperatures) - 1):
        a, b = values[i], values[i + 1]
        if (a - target) * (b - target) <= 0 and a != b:
            return i, (target - a) / (b - a)
        if a == b == target:
            return i, 0.0
    return None


def matched_temperature(temperatures: Sequence[float], match: tuple[int, float]) -> float:
    i, w = match
    return math.exp((1 - w) * math.log(temperatures[i]) + w * math.log(temperatures[i + 1]))


def at_match(per_temperature: Sequence, match: tuple[int, float]):
    """(1 - w) * x[i] + w * x[i + 1]: a per-temperature quantity (numbers or arrays) at the matched T."""
    i, w = match
    return (1 - w) * per_temperature[i] + w * per_temperature[i + 1]


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None
