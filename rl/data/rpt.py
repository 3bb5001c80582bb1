"""`rl data rpt`: turn a text corpus into Reinforcement Pre-Training tasks (arXiv 2506.08007).

Each document is tokenized once with the proxy model's tokenizer. The proxy model runs over the
document in overlapping windows (one batched forward pass per window, never one per position) and
gives the next-token entropy at every position, of its real logits, in eval mode, each window read
as the model reads text (the tokenizer's BOS first when it adds one; rl/signal/scoring.py). Positions,
offsets and boundaries stay on the document's own tokens. Positions whose entropy is at least
`min_entropy` are candidates ("hard" tokens carry the signal); up to `max_per_doc` are sampled per
document. `select_by` can pick positions by what actually surprised the proxy instead (Titans,
arXiv 2501.00663; rl/signal/surprise.py): `surprisal` (-log p of the true token >= `min_surprise`) or
`surprise` (the cross-entropy's gradient norm ||softmax(z) - onehot(y)||, in [0, sqrt 2], >=
`min_surprise`), or `random` (every position is a candidate: the control). The same context
filters, per-document cap and seeded sampling apply whichever criterion chooses. Each kept
position becomes one row:

    prompt · rpt_format · context · continuation · boundaries · entropy · doc_id · position

`rpt_format` says how the prompt was made (`make_prompt`): `reasoning` (instruction + box, the
paper's) or `completion` (the raw context; the completion is the guess).

`context` ends exactly where the target token begins (so a leading-space token keeps its space in
the continuation), `continuation` is the next `continuation_tokens` tokens cut back to a whole
character, and `boundaries` are the byte offsets where those ground-truth tokens end
(rl/data/boundaries.py), which is what `rewards.rpt.rpt_reward` scores against.

Documents are processed in blocks of `block_documents` (rl/data/shards.py): a block's windows go to
the proxy sorted by length (little padding), `proxy_batch_size` at a time, and its rows are written to
disk as soon as the block is done, so memory stays flat; shards, progress and resume work in blocks.
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from pathlib import Path
from typing import Iterator

from rl.data.proxy import load_proxy
from rl.data.settings import RPTBuildConfig
from rl.data.summary import BuildSummary
from rl.signal.entropy import token_entropy, topk_entropy
from rl.signal.scoring import logit_reader, scoring, text_prefix
from rl.signal.surprise import momentary_surprise, surprisal
from rl.data.boundaries import split_at_token
from rl.data.corpus import CorpusStats, read_corpus
from rl.data.shards import (
    ShardPlan, ShardsNotReady, blocks, check_shards, check_siblings, create_shard, merge_shards, merged_config, open_shard, run_shard, shards_root,
)
from rl.runtime.outputs import check_output_dir, written_files

logger = logging.getLogger(__name__)
# Logits held at once while scoring one window (elements): 2^26 = 128 MiB in bf16, 256 MiB in float32.
LOGIT_ELEMENTS = 1 << 26


def format_prompt(template: str, context: str) -> str:
    """Fill `{context}` (plain replace: contexts are full of braces, str.format would break)."""
    return template.replace("{context}", context)


def make_prompt(fmt: str, template: str, context: str, use_chat: bool):
    """The row's `prompt` in its format.

    reasoning: the instruction template around the context, as one chat user message when
    `use_chat` (TRL applies the chat template) or as plain text.
    completion: the raw context as a plain string, for every model, chat models included: TRL
    tokenizes a string prompt without the chat template, so the model just continues the text
    (measured on SmolLM2-135M-Instruct at 64 high-entropy CHAMP positions: top-1 right at 41% on
    the raw context vs 6% under the reasoning instruction in its chat template).
    """
    if fmt == "completion":
        return context
    if fmt == "rlp":  # chat: `template` (must hold {context}) or RLP's own instruction; base: context + " <think>"
        from rewards.rlp import rlp_prompt

        return rlp_prompt(context, use_chat, template if "{context}" in (template or "") else None)
    content = format_prompt(template, context)
    return [{"role": "user", "content": content}] if use_chat else content


def uses_chat(chat: str, tokenizer) -> bool:
    """Whether rows get chat prompts: the build's `chat` setting (yes | no | auto: the policy tokenizer
    has a chat template). The builder and `rl train --dry-run`'s prompt bound both read it here."""
    return chat == "yes" or (chat == "auto" and bool(getattr(tokenizer, "chat_template", None)))


def window_plan(n_tokens: int, window: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows over a document of `n_tokens` tokens.

    Returns (start, end, own_from, own_to): the window covers tokens [start, end) and is
    responsible for the entropies of predicted positions [own_from, own_to) (position p is the
    distribution over token p given tokens < p, read from the logits at p - 1). Windows after the
    first overlap the previous by half, so every owned position sees at least half a window of
    context; the owned ranges tile [1, n_tokens) exactly once.
    """
    if n_tokens < 2:
        return []
    stride = max(1, window // 2)
    plans = [(0, min(n_tokens, window), 1, min(n_tokens, window))]
    start = stride
    while plans[-1][1] < n_tokens:
        end = min(n_tokens, start + window)
        own_from = plans[-1][3]
        plans.append((start, end, own_from, end))
        start += stride
    return plans


def _forward_entropies(model, batch_ids: list[list[int]], pad_id: int, cfg: RPTBuildConfig, prefix=()):
    """One batched scoring forward over windows (eval mode, rl/signal/scoring.py); returns per-window
    (entropy list, score list), the score being what `cfg.select_by` ranks (the entropy itself unless
    surprisal/surprise).

    Each window is read as `prefix + window` (the tokenizer's BOS when it adds one: the text as the
    model sees text); entry j of the lists is for the distribution predicting window token j + 1.
    The model's real logits (rl.signal.scoring.logit_reader: soft-capping and logit scaling applied)
    are read `LOGIT_ELEMENTS // vocab` positions at a time from the backbone's hidden states at the
    rows' real positions (inference mode, the model's dtype), so no (batch x window x vocab) logits
    tensor, and no float32 copy of one, ever exists.
    """
    import torch

    prefix = list(prefix)
    skip = len(prefix)
    rows_ids = [prefix + list(ids) for ids in batch_ids]
    longest = max(len(ids) for ids in rows_ids)
    input_ids = torch.full((len(rows_ids), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows_ids), longest), dtype=torch.long)
    for row, ids in enumerate(rows_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    device = next(model.parameters()).device
    input_ids, attention = input_ids.to(device), attention.to(device)
    reader = logit_reader(model)
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 65536)
    chunk = max(1, LOGIT_ELEMENTS // vocab)  # positions whose logits exist at once (model dtype)
    spans = [(row, skip, len(ids) - 1) for row, ids in enumerate(rows_ids)]  # states read per row
    with scoring(model):
        states = reader.states(input_ids, attention)
        # every row's real positions in one (positions x hidden) matrix: no padding is projected, and
        # the head runs on large chunks of positions across rows
        flat = torch.cat([states[row, lo:hi] for row, lo, hi in spans])
        targets = torch.cat([input_ids[row, lo + 1: hi + 1] for row, lo, hi in spans])
        ents, scores = [], []
        for lo in range(0, flat.shape[0], chunk):
            logits = reader.logits(flat[lo: lo + chunk])
            ent = topk_entropy(logits, k=cfg.top_k) if cfg.entropy == "topk" else token_entropy(logits)
            ents.append(ent.float())
            if cfg.select_by == "surprisal":
                scores.append(surprisal(logits, targets[lo: lo + chunk]).float())
            elif cfg.select_by == "surprise":
                scores.append(momentary_surprise(logits, targets[lo: lo + chunk]).float())
    sizes = [hi - lo for _, lo, hi in spans]
    ent_rows = [t.tolist() for t in torch.cat(ents).cpu().split(sizes)]
    score_rows = [t.tolist() for t in torch.cat(scores).cpu().split(sizes)] if scores else ent_rows
    return list(zip(ent_rows, score_rows))


class RowMaker:
    """Turns one block of documents into its rows: tokenize, score every window (sorted by length,
    `proxy_batch_size` per forward), choose positions, cut rows. The same block gives the same rows
    in whichever process and run it is built (what shards and resume rely on)."""

    def __init__(self, cfg: RPTBuildConfig, model, tokenizer):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.use_chat = uses_chat(cfg.chat, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self.prefix = text_prefix(tokenizer)  # BOS when the tokenizer adds one: the proxy reads text as trained
        self.window = max(2, cfg.window_tokens - len(self.prefix))  # document tokens per window (prefix counted)
        self.tokens_scored = 0

    def features(self):
        """The datasets Features of the rows (the prompt is chat messages or text), fixed before any row."""
        from datasets import Features, List, Value

        prompt = make_prompt(self.cfg.format, self.cfg.prompt_template, "x", self.use_chat)
        prompt_type = List({"role": Value("string"), "content": Value("string")}) if isinstance(prompt, list) \
            else Value("string")
        return Features({"prompt": prompt_type, "rpt_format": Value("string"), "context": Value("string"),
                         "continuation": Value("string"), "boundaries": List(Value("int64")),
                         "entropy": Value("float64"), "doc_id": Value("string"), "position": Value("int64")})

    def block(self, docs: list) -> tuple[list[dict], BuildSummary]:
        cfg, summary = self.cfg, BuildSummary()
        texts = [doc.text for doc in docs]
        enc = self.tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False) if texts else None
        pending, windows = [], []
        for i, doc in enumerate(docs):
            summary.documents += 1
            ids, offsets = list(enc["input_ids"][i]), [tuple(o) for o in enc["offset_mapping"][i]]
            summary.tokens += len(ids)
            if len(ids) < cfg.min_context_tokens + 1:
                summary.documents_too_short += 1
                continue
            entry = {"doc": doc, "ids": ids, "offsets": offsets, "entropy": [0.0] * len(ids), "score": [0.0] * len(ids)}
            pending.append(entry)
            for start, end, own_from, own_to in window_plan(len(ids), self.window):
                windows.append((entry, start, own_from, own_to, ids[start:end]))
        order = sorted(range(len(windows)), key=lambda w: (-len(windows[w][4]), w))  # by length: little padding
        for at in range(0, len(order), cfg.proxy_batch_size):
            batch = [windows[w] for w in order[at: at + cfg.proxy_batch_size]]
            scored = _forward_entropies(self.model, [w[4] for w in batch], self.pad_id, cfg, self.prefix)
            for (entry, start, own_from, own_to, _), (ent, score) in zip(batch, scored):
                for p in range(own_from, own_to):
                    entry["entropy"][p] = ent[p - start - 1]
                    entry["score"][p] = score[p - start - 1]
                self.tokens_scored += own_to - own_from
        rows = []
        for entry in pending:
            rows += self._doc_rows(entry, summary)
        return rows, summary

    def _doc_rows(self, entry: dict, summary: BuildSummary) -> list[dict]:
        """The kept positions of one scored document, as rows in position order."""
        cfg = self.cfg
        entropy, score = entry["entropy"], entry["score"]  # at predicted position p (index 0 unused)
        threshold = cfg.min_entropy if cfg.select_by == "entropy" else cfg.min_surprise
        ids, offsets, doc = entry["ids"], entry["offsets"], entry["doc"]
        candidates = []
        for p in range(max(1, cfg.min_context_tokens), len(ids)):
            summary.candidate_positions += 1
            summary.add_entropy(entropy[p])
            if cfg.select_by == "random" or score[p] >= threshold:
                candidates.append(p)
        summary.positions_above_threshold += len(candidates)
        rng = random.Random(cfg.seed * 1_000_003 + zlib.crc32(doc.doc_id.encode("utf-8")))
        rng.shuffle(candidates)
        chosen = []
        for p in candidates:
            if len(chosen) >= cfg.max_per_doc:
                break
            cut = split_at_token(doc.text, offsets, p, cfg.continuation_tokens, cfg.max_context_tokens)
            if cut is not None and cut.context.strip():
                chosen.append((p, cut))
        rows = []
        for p, cut in sorted(chosen, key=lambda item: item[0]):
            summary.positions_kept += 1
            rows.append({
                "prompt": make_prompt(cfg.format, cfg.prompt_template, cut.context, self.use_chat),
                "rpt_format": cfg.format,
                "context": cut.context,
                "continuation": cut.continuation,
                "boundaries": list(cut.boundaries),
                "entropy": float(entropy[p]),
                "doc_id": doc.doc_id,
                "position": int(p),
            })
        return rows


def iter_rpt_rows(cfg: RPTBuildConfig, model, tokenizer, documents, summary: BuildSummary) -> Iterator[dict]:
    """Yield RPT rows for `documents` (an iterable of rl.data.corpus.Document), block by block, in memory
    (`build_rpt_dataset` writes them to disk instead); `summary` gets the counts."""
    maker = RowMaker(cfg, model, tokenizer)
    for docs in blocks(documents, cfg.block_documents, cfg.max_documents):
        rows, block_summary = maker.block(docs)
        summary.add(block_summary)
        yield from rows


class _Progress:
    """The shard's progress line: documents built, tokens scored per second, rows kept, ETA when the
    number of documents is known (max_documents)."""

    def __init__(self, maker: RowMaker, plan: ShardPlan, total: int | None):
        from tqdm.auto import tqdm

        self.maker, self.start, self.kept = maker, time.monotonic(), 0
        name = "rpt data" if plan.num_shards == 1 else f"rpt data {plan.name}"
        self.bar = tqdm(desc=name, unit="doc", total=total, dynamic_ncols=True)

    def __call__(self, docs):
        rows, summary = self.maker.block(docs)
        rate = self.maker.tokens_scored / max(1e-9, time.monotonic() - self.start)
        self.bar.update(len(docs))
        self.kept += len(rows)
        self.bar.set_postfix(tok_s=f"{rate:,.0f}", rows=self.kept, refresh=False)
        return rows, summary


def saved_build_config(output_dir: str | Path) -> dict | None:
    """The build settings saved next to a dataset built by `build_rpt_dataset`, or None."""
    path = Path(output_dir) / "rpt_build.json"
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None


# Files of an RPT output written before the rl-output.json marker existed (rl/runtime/outputs.py `legacy`).
RPT_LEGACY_FILES = ("data-*.arrow", "dataset_info.json", "state.json", "rpt_build.json")
RPT_COMMAND = "rl data rpt"


def build_command(cfg: RPTBuildConfig) -> str:
    """The command an output of `cfg` belongs to (its rl-output.json marker): `rl data rlp` for RLP rows,
    else `rl data rpt`; one command never replaces the other's output without --overwrite."""
    return "rl data rlp" if cfg.format == "rlp" else RPT_COMMAND


def check_rpt_output(cfg: RPTBuildConfig, output_dir: str | Path, flag: str = "--output", overwrite: bool = False,
                     overwrite_flag: str | None = "--overwrite") -> Path:
    """Refuse an RPT output path that is dangerous or holds what `rl data rpt` did not write (rl/runtime/outputs.py)."""
    return check_output_dir(output_dir, flag, build_command(cfg), overwrite=overwrite,
                            inputs={"corpus": cfg.corpus, "proxy model": cfg.proxy_model},
                            containers={"corpus": cfg.corpus},
                            legacy=RPT_LEGACY_FILES if cfg.format != "rlp" else (), overwrite_flag=overwrite_flag)


def no_rows_reason(cfg: RPTBuildConfig, summary: BuildSummary) -> str:
    """Why a build kept no position, naming the real cause (no documents, all too short, threshold, cuts)."""
    where = f"{cfg.corpus}: no RPT positions kept ({summary.documents} documents, {summary.tokens} tokens)"
    if summary.documents == 0:
        return f"{where}; no document was read (check max_documents / --max-documents and the corpus)"
    if summary.documents_too_short == summary.documents:
        return (f"{where}; every document is shorter than min_context_tokens + 1 = {cfg.min_context_tokens + 1} "
                "tokens: use longer documents or lower min_context_tokens (--min-context-tokens)")
    if summary.positions_above_threshold == 0 and cfg.select_by in ("surprisal", "surprise"):
        return (f"{where}; no position's {cfg.select_by} reaches min_surprise {cfg.min_surprise}: lower min_surprise "
                "(--min-surprise)")
    if summary.positions_above_threshold == 0:
        top = max(summary.percentiles().values(), default=None)
        seen = f" (99th percentile {top:.3f} nats)" if top is not None else ""
        return (f"{where}; no position reaches min_entropy {cfg.min_entropy}{seen}: lower min_entropy "
                "(--min-entropy)")
    return (f"{where}; {summary.positions_above_threshold} positions pass min_entropy but none leaves a non-empty "
            f"context and a whole-character continuation; lower min_context_tokens (now {cfg.min_context_tokens}) "
            "or use longer documents")


def build_rpt_dataset(cfg: RPTBuildConfig, output_dir: str | Path, jsonl: bool = False, chat_tokenizer=None,
                      overwrite: bool = False, flag: str = "--output", proxy_flag: str = "--proxy-model",
                      plan: ShardPlan = ShardPlan(), device: str | None = None, proxy=None):
    """Build the RPT dataset (or this process's shard of it); returns (datasets.Dataset, BuildSummary), or
    (None, shard summary) when other shards are still to come or another process merges, or (None, None)
    when a shard finds OUTPUT merged already from the same settings and files.

    The output is checked before any work (rl/runtime/outputs.py: never over the user's files or an
    input; `overwrite` replaces a directory that is not a previous `rl data rpt` output). Rows are written
    block by block into the shard's directory (rl/data/shards.py); a killed build run again resumes at
    its next block; when every shard of `plan` is finished, they are merged into `output_dir`
    atomically, `jsonl` adding OUTPUT/rows.jsonl. `summary.files` lists every file written.
    `chat_tokenizer`: the policy's tokenizer, which decides (with `cfg.chat == "auto"`) whether prompts
    are chat messages; default the proxy's. `flag`/`proxy_flag`: names in errors. `device`: the proxy's
    device (default: the GPU when there is one). `proxy`: (model, tokenizer) already loaded from
    `cfg.proxy_model` (bench/rpt_build_speed.py), else loaded here.
    """
    cfg.validate()
    output_dir = Path(output_dir)
    check_rpt_output(cfg, output_dir, flag, overwrite)
    if chat_tokenizer is not None and cfg.chat == "auto":
        cfg.chat = "yes" if getattr(chat_tokenizer, "chat_template", None) else "no"
    fingerprint = cfg.fingerprint()  # the inputs as they are when reading starts
    command = build_command(cfg)
    if plan.num_shards > 1 and merged_config(output_dir) == fingerprint:
        return None, None  # merged already: this shard is not built again
    inputs = {"corpus": cfg.corpus, "proxy model": cfg.proxy_model}
    shard_flag = f"{flag} (its shard {shards_root(output_dir).name}/{plan.name})"
    check_siblings(output_dir, plan, fingerprint)
    shard_dir, progress = open_shard(output_dir, plan, fingerprint, command, flag=shard_flag, inputs=inputs,
                                     overwrite=overwrite)
    if not progress["done"]:
        stats = CorpusStats()
        # Read up to the first usable document before the proxy model loads and anything is written: a
        # corpus that is wrong or all bad (empty, binary, non-UTF-8 files) fails in seconds, leaving nothing.
        documents = read_corpus(cfg.corpus, stats=stats, text_field=cfg.text_field, id_field=cfg.id_field)
        first = next(documents)  # raises UserError when nothing usable is left
        model, tokenizer = proxy or load_proxy(cfg.proxy_model, device=device, flag=proxy_flag)
        if progress["next_block"]:
            logger.info("resuming %s at block %d (%d blocks of it built before are kept)", shard_dir,
                        progress["next_block"], progress["blocks_built"])
        create_shard(shard_dir, progress, command)
        maker = RowMaker(cfg, model, tokenizer)
        total = -(-cfg.max_documents // plan.num_shards) if cfg.max_documents else None
        bar = _Progress(maker, plan, total)
        documents = _chain_first(first, documents)
        run_shard(shard_dir, progress, plan, documents, cfg.block_documents, cfg.max_documents, bar,
                  maker.features(), command, describe_corpus=stats.summary)
        bar.bar.close()
    else:
        logger.info("%s is finished already; not built again", shard_dir)
    _remove_legacy_tmp(output_dir)
    dataset, summary = merge_rpt_shards(output_dir, plan.num_shards, cfg, jsonl=jsonl, overwrite=overwrite,
                                        flag=flag, expected=fingerprint, missing_ok=plan.num_shards > 1)
    if dataset is None:
        shard_summary = BuildSummary()
        shard_summary.add(progress["summary"])
        return None, shard_summary
    return dataset, summary


def _chain_first(first, rest):
    yield first
    yield from rest


def merge_rpt_shards(output_dir: str | Path, num_shards: int, cfg: RPTBuildConfig | None = None, *, jsonl: bool = False,
                     overwrite: bool = False, flag: str = "--output", expected: dict | None = None,
                     missing_ok: bool = False):
    """Merge the finished shards of OUTPUT into OUTPUT (`rl data merge`, and the last shard of a build);
    returns (Dataset, BuildSummary), or (None, None) when `missing_ok` and shards are still to come, or
    another process merges. Without `cfg` the settings come from the shards' own record."""
    output_dir = Path(output_dir)
    if missing_ok:
        try:
            check_shards(output_dir, num_shards, expected)
        except ShardsNotReady as exc:
            logger.info("not merged yet: %s", exc)
            return None, None
    saved = read_shard_config(output_dir, num_shards) if cfg is None else None
    command = build_command(cfg) if cfg is not None else ("rl data rlp" if saved.get("format") == "rlp" else RPT_COMMAND)
    corpus = cfg.corpus if cfg is not None else saved.get("corpus")
    proxy = cfg.proxy_model if cfg is not None else saved.get("proxy_model")
    no_rows = (lambda s: no_rows_reason(cfg, s)) if cfg is not None else (
        lambda s: f"{shards_root(output_dir)}: the shards hold no rows ({s.documents} documents, {s.tokens} tokens)")
    dataset, summary = merge_shards(output_dir, num_shards, command, flag=flag,
                                    inputs={"corpus": corpus, "proxy model": proxy}, overwrite=overwrite, jsonl=jsonl,
                                    expected=expected, no_rows=no_rows,
                                    legacy=RPT_LEGACY_FILES if command == RPT_COMMAND else ())
    if dataset is not None:
        summary.files = written_files(output_dir)
    return dataset, summary


def read_shard_config(output_dir: Path, num_shards: int) -> dict:
    """The build fingerprint recorded by shard 0 of `num_shards` (`rl data merge` has no settings of its own)."""
    return check_shards(output_dir, num_shards)[0][1]["config"]


def _remove_legacy_tmp(output_dir: Path) -> None:
    """`OUT.tmp` left by a failed build of an older version: removed (never merged) when it holds only
    what such a build writes; anything else there is the user's and stays."""
    import shutil

    legacy = output_dir.with_name(output_dir.name + ".tmp")
    if legacy.is_dir() and not legacy.is_symlink():
        files = [f for f in legacy.rglob("*") if f.is_file()]
        if all(any(f.match(g) for g in RPT_LEGACY_FILES) for f in files):
            shutil.rmtree(legacy)
            logger.info("removed %s, a stale temp dir of an earlier failed build", legacy)
