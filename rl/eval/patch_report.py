"""`rl profile bits`: where the bits are. Entropy patches (BLT) and surprise (Titans) of one model
over a corpus, next to the forking tokens `rl profile entropy` reports.

Scoring (`score_documents`) is teacher-forced, one scoring forward per window (eval mode, each window
read after the tokenizer's BOS when it adds one, the model's real logits: rl/signal/scoring.py; windows
overlap by half, rl.data.rpt.window_plan; each position scored once), the LM head applied in chunks: per
predicted token its entropy, surprisal -log p(y), momentary surprise ||softmax(z) - onehot(y)||
(rl/signal/surprise.py), the model's top guess, the token's piece of the text and its size in bytes
(from the tokenizer's offsets; the pieces reassemble the text). `bits_stats` turns that into the
numbers (pure, tested): patches in each mode (rl/eval/patches.py), their lengths, the patch starts'
token kinds and overlap with the top-20% forking tokens, and where entropy and surprise disagree,
with examples.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

from rl.errors import UserError
from rl.signal.entropy import token_entropy
from rl.signal.sampling import SamplingSettings, pad_id, prompt_ids, sample
from rl.signal.scoring import decoded_pieces, logit_reader, scoring, text_prefix, token_pieces
from rl.signal.surprise import momentary_surprise, past_surprise, surprisal
from rl.eval.patches import patch_lengths, patch_starts

TOP_FRACTION = 0.2


def _window_scores(model, windows: list[list[int]], pad_id: int, skip: int = 0) -> list[dict[str, list]]:
    """One batched scoring forward (eval mode, the model's real logits: rl/signal/scoring.py); for each
    window, per predicted token from index `skip` + 1 on (the first `skip` ids are a prefix such as
    BOS, read but not scored) its entropy, surprisal, momentary surprise and the argmax id."""
    import torch

    device = next(model.parameters()).device
    width = max(len(w) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, w in enumerate(windows):
        ids[r, :len(w)], mask[r, :len(w)] = torch.tensor(w), 1
    ids, mask = ids.to(device), mask.to(device)
    reader = logit_reader(model)
    out = []
    with scoring(model):
        states = reader.states(ids, mask)
        for r, w in enumerate(windows):
            cols: dict[str, list] = {"entropy": [], "surprisal": [], "surprise": [], "argmax": []}
            for s in range(skip, len(w) - 1, 256):
                e = min(len(w) - 1, s + 256)
                logits = reader.logits(states[r, s:e])
                target = ids[r, s + 1:e + 1]
                cols["entropy"] += token_entropy(logits).tolist()
                cols["surprisal"] += surprisal(logits, target).tolist()
                cols["surprise"] += momentary_surprise(logits, target).tolist()
                cols["argmax"] += logits.argmax(-1).tolist()
            out.append(cols)
    return out


def score_documents(model, tokenizer, documents, *, window_tokens=1024, batch_size=4, max_documents=None,
                    max_tokens=None, progress=True) -> list[dict]:
    """Per document with at least two tokens: `ids`, `bytes`, `entropy`, `surprisal`, `surprise`,
    `argmax` for tokens 1..n-1 (token 0 has no prediction), plus `text`, `starts` (char offsets) and
    `texts` (each token's piece of the text, rl.signal.scoring.token_pieces: they reassemble
    text[starts[0]:], a character split over tokens going to the token that completes it).
    Each window is read after the tokenizer's text prefix (BOS when it adds one; `window_tokens`
    counts it), as the model reads text."""
    from tqdm.auto import tqdm

    from rl.data.rpt import window_plan

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix = text_prefix(tokenizer)
    window = max(2, window_tokens - len(prefix))
    docs, scored = [], 0
    for doc in tqdm(documents, desc="profile bits", unit="doc", total=max_documents, disable=not progress):
        if (max_documents is not None and len(docs) >= max_documents) or (max_tokens and scored >= max_tokens):
            break
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        if len(ids) < 2:
            continue
        pieces = token_pieces(doc.text, offsets)
        row = {"doc_id": doc.doc_id, "text": doc.text, "ids": ids[1:],
               "starts": [a for a, _ in offsets[1:]], "texts": pieces[1:],
               "bytes": [len(p.encode("utf-8")) for p in pieces[1:]],
               "entropy": [0.0] * (len(ids) - 1), "surprisal": [0.0] * (len(ids) - 1),
               "surprise": [0.0] * (len(ids) - 1), "argmax": [0] * (len(ids) - 1)}
        plans = window_plan(len(ids), window)
        for b in range(0, len(plans), batch_size):
            group = plans[b:b + batch_size]
            for (start, _end, own_from, own_to), cols in zip(group, _window_scores(
                    model, [prefix + ids[p[0]:p[1]] for p in group], pad_id, len(prefix))):
                for p in range(own_from, own_to):  # position p is predicted by window index p - start - 1
                    for key, values in cols.items():
                        row[key][p - 1] = values[p - start - 1]
        docs.append(row)
        scored += len(ids) - 1
    if not docs:
        raise UserError("rl profile bits: no document has two tokens to score; give more or longer documents")
    return docs


def top_mask(values: Sequence[float], fraction: float = TOP_FRACTION) -> list[bool]:
    """The top ceil(fraction x N) values (ties to the earlier position), as in entropy_profile_stats."""
    n = len(values)
    k = min(n, math.ceil(fraction * n - 1e-9))
    keep = [False] * n
    for i in sorted(range(n), key=lambda i: (-values[i], i))[:k]:
        keep[i] = True
    return keep


def _pct(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def patch_summary(docs: list[dict], mode: str, threshold: float, forking: list[bool], texts: list[str],
                  **kwargs) -> dict:
    """Patches of every document cut in one mode: counts, lengths in tokens and bytes, the share of
    global steps, the kinds and most frequent tokens that start patches, overlap with forking tokens."""
    from rl.eval.profile import KINDS, token_kind

    n = sum(len(d["ids"]) for d in docs)
    lengths, byte_lengths, start_flags = [], [], []
    for d in docs:
        starts = patch_starts(d["entropy"], mode, threshold, **kwargs)
        lengths += patch_lengths(starts, len(d["ids"]))
        byte_lengths += patch_lengths(starts, len(d["ids"]), d["bytes"])
        flags = [False] * len(d["ids"])
        for s in starts:
            flags[s] = True
        start_flags += flags
    n_starts = sum(start_flags)
    both = sum(1 for s, f in zip(start_flags, forking) if s and f)
    kinds = Counter(token_kind(t) for t, s in zip(texts, start_flags) if s)
    firsts = Counter(t for t, s in zip(texts, start_flags) if s)
    return {
        "mode": mode, "threshold": None if mode == "topk" else threshold, **{k: v for k, v in kwargs.items()},
        "tokens": n, "patches": len(lengths), "patches_per_token": len(lengths) / n,
        "share_above_threshold": (None if mode == "topk" else
                                  sum(1 for d in docs for h in d["entropy"] if h > threshold) / n),
        "global_step_share": len(lengths) / n,
        "mean_patch_tokens": sum(lengths) / len(lengths), "p90_patch_tokens": _pct(lengths, 90),
        "max_patch_tokens": max(lengths),
        "mean_patch_bytes": sum(byte_lengths) / len(byte_lengths), "p90_patch_bytes": _pct(byte_lengths, 90),
        "starts_that_are_forking": both / n_starts if n_starts else 0.0,
        "forking_that_start_patches": both / max(1, sum(forking)),
        "start_kinds": {k: kinds.get(k, 0) / n_starts if n_starts else 0.0 for k in KINDS},
        "top_start_tokens": [{"token": t, "count": c} for t, c in firsts.most_common(15)],
        "_lengths": lengths,
    }


def disagreement(docs: list[dict], texts: list[str], surprise_key: str = "surprisal", examples: int = 8,
                 context_chars: int = 60) -> dict:
    """Overlap of the top-20% positions by entropy and by surprise, and examples of each kind of
    disagreement: surprised but confident (low entropy, high surprise: the model was sure and wrong)
    and uncertain but unsurprised (high entropy, low surprise: it hesitated and the likely token came)."""
    ent = [x for d in docs for x in d["entropy"]]
    sur = [x for d in docs for x in d[surprise_key]]
    hi_e, hi_s = top_mask(ent), top_mask(sur)
    both = sum(1 for a, b in zip(hi_e, hi_s) if a and b)
    where = [(d, i) for d in docs for i in range(len(d["ids"]))]

    def show(j: int) -> dict:
        d, i = where[j]
        return {"context": d["text"][max(0, d["starts"][i] - context_chars):d["starts"][i]], "token": texts[j],
                "entropy": round(ent[j], 3), surprise_key: round(sur[j], 3), "top_guess_id": d["argmax"][i]}

    def rank(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        r = [0.0] * len(values)
        for k, i in enumerate(order):
            r[i] = k / max(1, len(values) - 1)
        return r

    re, rs = rank(ent), rank(sur)
    confident_wrong = sorted(range(len(ent)), key=lambda j: re[j] - rs[j])[:examples]
    uncertain_right = sorted(range(len(ent)), key=lambda j: rs[j] - re[j])[:examples]
    return {
        "surprise": surprise_key, "top_fraction": TOP_FRACTION, "tokens": len(ent),
        "overlap_share": both / max(1, sum(hi_e)),  # of the top-entropy group, the share also top-surprise
        "high_surprise_low_entropy": [show(j) for j in confident_wrong],
        "high_entropy_low_surprise": [show(j) for j in uncertain_right],
    }


def distribution(values: Sequence[float]) -> dict:
    return {"mean": sum(values) / len(values), **{f"p{q}": _pct(values, q) for q in (10, 50, 80, 90, 99)}}


def bits_stats(docs: list[dict], texts: list[str], *, modes: Sequence[dict], eta: float = 0.9,
               alpha: float = 0.1) -> dict:
    """All the numbers of `rl profile bits` (pure given the scored documents; `texts` are the decoded
    tokens in document order)."""
    ent = [x for d in docs for x in d["entropy"]]
    forking = top_mask(ent)
    past, memory = [], []
    for d in docs:
        s, m = past_surprise(d["surprise"], eta=eta, alpha=alpha)
        past += s
        memory += m
    patches = [patch_summary(docs, **m, forking=forking, texts=texts) for m in modes]
    return {
        "tokens": len(ent), "documents": len(docs), "bytes": sum(b for d in docs for b in d["bytes"]),
        "forking_threshold": min((e for e, f in zip(ent, forking) if f), default=None),
        "patches": patches,
        "distributions": {
            "entropy": distribution(ent),
            "surprisal": distribution([x for d in docs for x in d["surprisal"]]),
            "momentary_surprise": distribution([x for d in docs for x in d["surprise"]]),
            f"past_surprise(eta={eta})": distribution(past),
            f"memory(eta={eta},alpha={alpha})": distribution(memory),
        },
        "disagreement": {"surprisal": disagreement(docs, texts, "surprisal"),
                         "momentary_surprise": disagreement(docs, texts, "surprise")},
    }


def generated_documents(model, tokenizer, prompts, sampling: SamplingSettings, *, progress=True) -> list[dict]:
    """The model's own completions as documents for `bits_stats`: drawn by the one sampler
    (rl/signal/sampling.py: eval mode, chat template when the tokenizer has one, else its BOS rule; a
    completion ends before its EOS), then each prompt + completion re-scored unpadded (`_window_scores`)
    keeping the completion's tokens, scored at T = 1. `texts` are the pieces each token adds to the
    decoded completion (rl.signal.scoring.decoded_pieces: "" while a character is unfinished, the whole
    character on the token that completes it); `bytes` their UTF-8 sizes and `starts` their character
    offsets. Empty completions are skipped."""
    from tqdm.auto import tqdm

    seqs = [prompt_ids(tokenizer, p, user_turn=True) for p in prompts]
    with tqdm(total=len(seqs), desc="generate", unit="prompt", disable=not progress) as bar:
        drawn = sample(model, tokenizer, seqs, sampling, progress=bar.update)
    pad = pad_id(tokenizer)
    docs = []
    for j, s in enumerate(drawn):
        if not s.ids:
            continue
        prompt = seqs[s.prompt]
        cols = _window_scores(model, [prompt + s.ids], pad)[0]
        keep = slice(len(prompt) - 1, len(prompt) - 1 + len(s.ids))
        pieces = decoded_pieces(tokenizer, s.ids)
        starts = list(itertools.accumulate([0] + [len(p) for p in pieces[:-1]]))
        docs.append({"doc_id": f"prompt{s.prompt}:sample{j % sampling.samples}", "text": "".join(pieces),
                     "ids": s.ids, "starts": starts, "texts": pieces, "bytes": [len(p.encode("utf-8")) for p in pieces],
                     **{k: v[keep] for k, v in cols.items()}})
    if not docs:
        raise UserError("rl profile bits --generate: every completion was empty; raise --max-new-tokens")
    return docs
