"""Greedy likelihood-preserving deletion of reasoning tokens (arXiv 2601.03066), batched.

Objective. A row is encoded as `prompt | chain | sep | answer` (`encode`): prompt = "Question: Q\\n
Reasoning:\\n" (after the tokenizer's BOS when it adds one), the chain tokens, sep = "\\nAnswer:",
answer = " A", split out of one tokenization of the whole text; every scoring read runs in eval mode.
With `objective="answer"` a chain is scored by log p(answer | prompt, chain, sep) (sum over answer
tokens) under the pruner model; with `objective="joint"` by log p(chain, sep, answer | prompt). Each
greedy step deletes the chain token whose removal leaves the highest score (ties: the earliest
position), until `stop_at` tokens are left (0: the whole chain, so the deletion order is a
permutation that ranks every token).

Exact mode scores every remaining token at every step. What makes it fast (and stays exact):
* one "shared" forward of the current chain per step, whose KV cache serves as the prefix of every
  candidate: deleting token j leaves everything before j unchanged, so a batch of candidates
  j_1 < ... < j_B reuses the cache up to j_1 and recomputes only the suffix after it;
* the suffixes of one batch all have the same length (one token shorter than the current chain), so
  a batch is a dense tensor with no padding; logits are computed only where the score needs them.

Approximate mode (labelled as such in every output; `PruneSettings.approximations`):
* candidates pre-filtered to the `candidates` chain tokens of lowest surprisal in the shared pass
  (predictable tokens are the likely cheap deletions), instead of all remaining tokens;
* `per_step` of the remaining chain deleted per step (the best-scoring candidates of one scoring pass,
  in score order) instead of one token per step, re-scoring only between steps.

`score_kept` scores one chain with one plain forward (no cache): the brute-force reference of the tests
and the one-candidate-at-a-time anchor of bench/prune_speed.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from rl.errors import UserError
from rl.signal.scoring import scoring, text_prefix, token_pieces

EXACT, APPROX = "exact", "approx"
ANSWER, JOINT = "answer", "joint"
PROMPT_TEMPLATE = "Question: {question}\nReasoning:\n"
SEP = "\nAnswer:"


@dataclass
class PruneSettings:
    """How the greedy deletion runs (see the module doc)."""

    mode: str = EXACT  # exact | approx
    objective: str = ANSWER  # answer: log p(answer | question, chain); joint: log p(chain, answer | question)
    batch_size: int = 16  # candidates per batched forward
    candidates: int = 16  # approx: tokens scored per step (lowest surprisal first)
    per_step: float = 0.1  # approx: fraction of the remaining chain deleted per step (at least one token)

    def __post_init__(self):
        if self.mode not in (EXACT, APPROX):
            raise ValueError(f"mode must be {EXACT} or {APPROX}, not {self.mode!r}")
        if self.objective not in (ANSWER, JOINT):
            raise ValueError(f"objective must be {ANSWER} or {JOINT}, not {self.objective!r}")
        if self.batch_size < 1 or self.candidates < 1 or not 0 < self.per_step <= 1:
            raise ValueError("batch_size and candidates must be >= 1 and per_step in (0, 1]")

    def approximations(self) -> list[str]:
        """Human-readable list of what departs from exact greedy deletion (empty in exact mode)."""
        if self.mode == EXACT:
            return []
        return [(f"approximation: only the {self.candidates} remaining chain tokens of lowest surprisal are "
                 "scored at each step (pre-filter by per-token loss)"),
                (f"approximation: {self.per_step:g} of the remaining chain (at least 1 token, at most half the "
                 "scored candidates) is deleted per step, best-scoring candidates of one scoring pass first")]


@dataclass
class Encoded:
    """One row as token ids; `chain_offsets` are character spans of the chain tokens in `chain_text`."""

    prompt_ids: list[int]
    chain_ids: list[int]
    sep_ids: list[int]
    answer_ids: list[int]
    chain_text: str = ""
    chain_offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def total_len(self) -> int:
        return len(self.prompt_ids) + len(self.chain_ids) + len(self.sep_ids) + len(self.answer_ids)


@dataclass
class PruneResult:
    """`order`: original chain positions in deletion order (first deleted first). `curve`: (chain tokens
    kept, score) at each step start and at the end, computed by the shared pass (exact scores)."""

    order: list[int]
    curve: list[tuple[int, float]]
    n: int
    candidates_scored: int = 0

    def ranks(self) -> list[int]:
        """Deletion step of each chain position (0 = deleted first); tokens never deleted get n."""
        rank = [self.n] * self.n
        for step, pos in enumerate(self.order):
            rank[pos] = step
        return rank

    def kept(self, keep: float) -> list[int]:
        """Positions kept at keep ratio `keep` (round(n * keep) tokens), in chain order."""
        return kept_positions(self.order, self.n, keep)


def keep_count(n: int, keep: float) -> int:
    return max(0, min(n, round(n * keep)))


def kept_positions(order: list[int], n: int, keep: float) -> list[int]:
    """The chain positions left after deleting the first n - round(n * keep) positions of `order`."""
    drop = n - keep_count(n, keep)
    if drop > len(order):
        raise ValueError(f"the deletion order covers {len(order)} of {n} tokens; keep {keep} needs {drop}")
    gone = set(order[:drop])
    return [i for i in range(n) if i not in gone]


def encode(tokenizer, question: str, reasoning: str, answer: str) -> Encoded:
    """Token ids of the four parts as the model reads the whole text: the tokenizer's text prefix (its
    BOS when it adds one) in `prompt_ids`, then one tokenization of prompt + chain + sep + answer split
    where the parts meet (`_part_cuts`), so deletions never re-tokenise and the unpruned chain is
    scored as exactly the text it is (a SentencePiece tokenizer puts a `▁` before each part tokenised
    alone). When no token boundary falls where two parts meet (a `.\\n` token of byte-level BPE), each
    part is tokenised on its own instead."""
    parts = [PROMPT_TEMPLATE.format(question=question.strip()), reasoning, SEP, " " + answer.strip()]
    text = "".join(parts)
    joint = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(joint["input_ids"]), [tuple(o) for o in joint["offset_mapping"]]
    cuts = _part_cuts(tokenizer, text, [len(parts[0]), len(parts[0]) + len(reasoning), len(text) - len(parts[3])],
                      ids, offsets)
    prefix = text_prefix(tokenizer)
    if cuts is not None and 0 < cuts[0] <= cuts[1] < cuts[2] < len(ids):  # only the chain may be empty
        start, n = len(parts[0]), len(reasoning)
        chain_offsets = [(min(n, max(0, a - start)), min(n, max(0, b - start))) for a, b in offsets[cuts[0]:cuts[1]]]
        return Encoded(prefix + ids[:cuts[0]], ids[cuts[0]:cuts[1]], ids[cuts[1]:cuts[2]], ids[cuts[2]:], reasoning,
                       chain_offsets)

    def alone(part):
        return tokenizer(part, add_special_tokens=False)["input_ids"]

    chain = tokenizer(reasoning, add_special_tokens=False, return_offsets_mapping=True)
    return Encoded(prefix + alone(parts[0]), list(chain["input_ids"]), alone(SEP), alone(parts[3]), reasoning,
                   [tuple(o) for o in chain["offset_mapping"]])


def _part_cuts(tokenizer, text: str, chars: list[int], ids: list[int], offsets) -> list[int] | None:
    """Token index k per character cut c such that ids[:k] decode to exactly text[:c] (ending on a whole
    character), or None when some cut falls inside a token or the tokenizer does not decode back to
    the text. Offsets narrow the search; decoding decides (runs of byte-fallback tokens share one
    span in some tokenizers' offsets)."""
    def decode(k):
        return tokenizer.decode(ids[:k], clean_up_tokenization_spaces=False)

    lost = len(text) - len(decode(len(ids)))  # a leading space a decoder strips (`Strip`, Metaspace)
    if lost < 0 or not text.endswith(decode(len(ids))):
        return None
    cuts = []
    for c in chars:
        lo = min(sum(1 for _, b in offsets if b <= c), sum(1 for a, _ in offsets if a < c))
        hi = max(sum(1 for _, b in offsets if b <= c), sum(1 for a, _ in offsets if a < c))
        k = next((k for k in range(lo, hi + 1) if len(piece := decode(k)) == c - lost
                  and not piece.endswith("\ufffd") and text[lost:c] == piece), None)
        if k is None:
            return None
        cuts.append(k)
    return cuts


def chain_pieces(enc: Encoded) -> list[str]:
    """Each chain token's piece of the chain text (rl.signal.scoring.token_pieces): they reassemble it,
    a character split over byte tokens going to the token that completes it."""
    pieces = token_pieces(enc.chain_text, enc.chain_offsets)
    if pieces:
        covered = sum(len(p) for p in pieces)
        pieces[0] = enc.chain_text[: len(enc.chain_text) - covered] + pieces[0]
    return pieces


def _scoring(fn):
    """Run `fn(model, ...)` in eval mode (dropout off) under inference mode (rl.signal.scoring.scoring)."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with scoring(model):
            return fn(model, *args, **kwargs)

    return wrapper


def _full_ids(enc: Encoded, kept: list[int]) -> list[int]:
    return enc.prompt_ids + [enc.chain_ids[i] for i in kept] + enc.sep_ids + enc.answer_ids



@_scoring
def score_kept(model, enc: Encoded, kept: list[int], objective: str = ANSWER) -> float:
    """Score of the chain made of `kept` positions: one plain forward, no cache (the reference)."""
    ids = torch.tensor([_full_ids(enc, kept)])
    n_scored = len(enc.answer_ids) if objective == ANSWER else ids.shape[1] - len(enc.prompt_ids)
    logits = model(input_ids=ids, logits_to_keep=n_scored + 1).logits[0, :-1].float()
    targets = ids[0, -n_scored:]
    return float(torch.log_softmax(logits, -1).gather(-1, targets[:, None]).sum())


@dataclass
class _Shared:
    cache: object  # the model's KV cache of the current full sequence
    score: float
    chain_lp: torch.Tensor  # log p of each current chain token (approx/joint; else empty)
    row_lp: torch.Tensor | None  # full log-prob rows at positions P-1 .. P+k-1 (joint)


@_scoring
def _shared_pass(model, enc: Encoded, kept: list[int], settings: PruneSettings) -> _Shared:
    ids = torch.tensor([_full_ids(enc, kept)])
    p, k = len(enc.prompt_ids), len(kept)
    need_chain = settings.mode == APPROX or settings.objective == JOINT
    keep_logits = ids.shape[1] - p + 1 if need_chain else len(enc.answer_ids) + 1
    out = model(input_ids=ids, use_cache=True, logits_to_keep=keep_logits)
    lp = torch.log_softmax(out.logits[0, :-1].float(), -1)  # rows predict the last keep_logits-1 tokens
    tok_lp = lp.gather(-1, ids[0, -(keep_logits - 1):, None])[:, 0]
    score = float(tok_lp[-len(enc.answer_ids):].sum()) if settings.objective == ANSWER else float(tok_lp.sum())
    chain_lp = tok_lp[:k] if need_chain else torch.empty(0)
    row_lp = lp[:k + 1] if settings.objective == JOINT else None
    return _Shared(out.cache, score, chain_lp, row_lp)


def _prefix_cache(cache, length: int, batch: int):
    """A fresh DynamicCache holding the first `length` positions of `cache`, repeated `batch` times."""
    from transformers import DynamicCache

    kinds = {type(layer).__name__ for layer in cache.layers}
    if kinds != {"DynamicLayer"}:  # sliding-window / linear-attention layers cannot be cut at a position
        raise UserError(f"--model: its KV cache has {', '.join(sorted(kinds))} layers; rl prune shares the prefix "
                        "cache of full-attention models only (Llama, Qwen2, SmolLM2, ...)")
    return DynamicCache(ddp_cache_data=[(layer.keys[:, :, :length].expand(batch, -1, -1, -1),
                                         layer.values[:, :, :length].expand(batch, -1, -1, -1))
                                        for layer in cache.layers])


@_scoring
def score_candidates(model, enc: Encoded, kept: list[int], cands: list[int], settings: PruneSettings,
                     shared: _Shared | None = None) -> list[float]:
    """Score after deleting each of `cands` (indices into `kept`) from the current chain `kept`,
    batched with the shared prefix cache (module doc). Same values as `score_kept` up to float noise."""
    shared = shared or _shared_pass(model, enc, kept, settings)
    full = torch.tensor(_full_ids(enc, kept))
    p, n_ans = len(enc.prompt_ids), len(enc.answer_ids)
    scores: dict[int, float] = {}
    ordered = sorted(cands)
    for start in range(0, len(ordered), settings.batch_size):
        batch = ordered[start:start + settings.batch_size]
        lo = p + batch[0]  # shared prefix: everything before the first deleted token of the batch
        rows = []
        for j in batch:
            drop = p + j - lo
            rows.append(torch.cat([full[lo:lo + drop], full[lo + drop + 1:]]))
        suffix = torch.stack(rows)
        if settings.objective == ANSWER:
            logits = model(input_ids=suffix, cache=_prefix_cache(shared.cache, lo, len(batch)),
                           logits_to_keep=n_ans + 1).logits[:, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, suffix[:, -n_ans:, None])[..., 0]
            for j, s in zip(batch, lp.sum(1).tolist()):
                scores[j] = s
            continue
        logits = model(input_ids=suffix, cache=_prefix_cache(shared.cache, lo, len(batch)),
                       logits_to_keep=0).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, suffix[:, 1:, None])[..., 0].sum(1)
        first = shared.row_lp[batch[0]].gather(-1, suffix[:, 0])  # the row at lo - 1 predicts suffix[0]
        before = float(shared.chain_lp[:batch[0]].sum())
        for j, s in zip(batch, (lp + first + before).tolist()):
            scores[j] = s
    return [scores[j] for j in cands]


@_scoring
def prune(model, enc: Encoded, settings: PruneSettings | None = None, stop_at: int = 0) -> PruneResult:
    """Greedy deletion from the whole chain down to `stop_at` tokens (module doc)."""
    settings = settings or PruneSettings()
    n = len(enc.chain_ids)
    kept = list(range(n))
    order: list[int] = []
    curve: list[tuple[int, float]] = []
    scored = 0
    while True:
        shared = _shared_pass(model, enc, kept, settings)
        curve.append((len(kept), shared.score))
        if len(kept) <= stop_at:
            break
        if settings.mode == EXACT:
            cands, k = list(range(len(kept))), 1
        else:
            by_loss = sorted(range(len(kept)), key=lambda j: (-float(shared.chain_lp[j]), j))
            cands = sorted(by_loss[:settings.candidates])
            # at most half the scored candidates go per step, so the scores still choose (deleting all
            # of them would be plain surprisal order)
            k = max(1, min(math.ceil(settings.per_step * len(kept)), settings.candidates // 2))
        k = min(k, len(kept) - stop_at, len(cands))
        scores = score_candidates(model, enc, kept, cands, settings, shared)
        scored += len(cands)
        best = sorted(range(len(cands)), key=lambda i: (-scores[i], cands[i]))[:k]
        chosen = [cands[i] for i in best]
        order.extend(kept[j] for j in chosen)
        gone = set(chosen)
        kept = [pos for j, pos in enumerate(kept) if j not in gone]
    return PruneResult(order, curve, n, scored)


@_scoring
def surprisal_order(model, enc: Encoded) -> list[int]:
    """Baseline: chain positions by surprisal under the model in the full chain, lowest first
    (the most predictable tokens are deleted first; one forward, no re-scoring)."""
    shared = _shared_pass(model, enc, list(range(len(enc.chain_ids))), PruneSettings(mode=APPROX))
    lp = shared.chain_lp.tolist()
    return sorted(range(len(lp)), key=lambda j: (-lp[j], j))


def random_order(n: int, seed: int) -> list[int]:
    """Baseline: a uniformly random deletion order."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g).tolist()


def pruned_text(enc: Encoded, kept: list[int], tokenizer) -> str:
    """The kept chain tokens decoded together (what the SFT data holds)."""
    return tokenizer.decode([enc.chain_ids[i] for i in kept], skip_special_tokens=False)
