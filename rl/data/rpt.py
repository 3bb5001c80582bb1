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
"""

from __future__ import annotations

import json
import logging
import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rl.data.proxy import load_proxy
from rl.data.settings import RPTBuildConfig
from rl.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    documents: int = 0
    documents_too_short: int = 0
    tokens: int = 0
    candidate_positions: int = 0
    positions_above_threshold: int = 0
    positions_kept: int = 0
    entropy_percentiles: dict = field(default_factory=dict)
    corpus_summary: str = ""
    files: list = field(default_factory=list)  # every file written (set by build_rpt_dataset)

    def format(self) -> str:
        pct = ", ".join(f"p{k}={v:.3f}" for k, v in self.entropy_percentiles.items())
        return (
            f"documents: {self.documents} read, {self.documents_too_short} too short for one task\n"
            f"tokens: {self.tokens}; positions scored: {self.candidate_positions}; "
            f"at/above min entropy: {self.positions_above_threshold}; kept: {self.positions_kept}\n"
            f"entropy percentiles (nats): {pct or 'n/a'}\n"
            f"corpus: {self.corpus_summary}"
        )


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
    are read row by row from the backbone's hidden states, so the full (batch x window x vocab)
    logits tensor never exists at once.
    """
    import torch

    from rl.signal.scoring import logit_reader, scoring
    from rl.signal.surprise import momentary_surprise, surprisal
    from rl.signal.entropy import token_entropy, topk_entropy

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
    results = []
    with scoring(model):
        states = reader.states(input_ids, attention)
        for row, ids in enumerate(rows_ids):
            logits = reader.logits(states[row, skip: len(ids) - 1])
            if cfg.entropy == "topk":
                ent = topk_entropy(logits, k=cfg.top_k)
            else:
                ent = token_entropy(logits)
            target = input_ids[row, skip + 1: len(ids)]
            if cfg.select_by == "surprisal":
                score = surprisal(logits, target)
            elif cfg.select_by == "surprise":
                score = momentary_surprise(logits, target)
            else:
                score = ent
            results.append((ent.float().cpu().tolist(), score.float().cpu().tolist()))
    return results


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for q in (10, 50, 80, 90, 99):
        out[q] = ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
    return out


def iter_rpt_rows(cfg: RPTBuildConfig, model, tokenizer, documents, summary: BuildSummary) -> Iterator[dict]:
    """Yield RPT rows for `documents` (an iterable of rl.data.corpus.Document)."""
    from tqdm.auto import tqdm

    from rl.data.boundaries import split_at_token
    from rl.signal.scoring import text_prefix

    use_chat = uses_chat(cfg.chat, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    prefix = text_prefix(tokenizer)  # BOS when the tokenizer adds one: the proxy reads text as it was trained to
    window = max(2, cfg.window_tokens - len(prefix))  # document tokens per window, prefix included in window_tokens
    all_entropies: list[float] = []
    pending: dict[int, dict[str, Any]] = {}
    queue: list[tuple[int, int, list[int], int]] = []  # (doc_key, window idx, ids, offset)

    def finish_doc(key: int) -> Iterator[dict]:
        doc = pending.pop(key)
        entropy = doc["entropy"]  # entropy[p] for predicted position p (index 0 unused)
        score = doc["score"]  # the select_by score at p (the entropy when select_by is entropy)
        threshold = cfg.min_entropy if cfg.select_by == "entropy" else cfg.min_surprise
        ids, offsets, text = doc["ids"], doc["offsets"], doc["text"]
        n = len(ids)
        candidates = []
        for p in range(max(1, cfg.min_context_tokens), n):
            summary.candidate_positions += 1
            all_entropies.append(entropy[p])
            if cfg.select_by == "random" or score[p] >= threshold:
                candidates.append(p)
        summary.positions_above_threshold += len(candidates)
        rng = random.Random(cfg.seed * 1_000_003 + zlib.crc32(doc["doc_id"].encode("utf-8")))
        rng.shuffle(candidates)
        chosen = []
        for p in candidates:
            if len(chosen) >= cfg.max_per_doc:
                break
            cut = split_at_token(text, offsets, p, cfg.continuation_tokens, cfg.max_context_tokens)
            if cut is not None and cut.context.strip():
                chosen.append((p, cut))
        for p, cut in sorted(chosen, key=lambda item: item[0]):
            summary.positions_kept += 1
            yield {
                "prompt": make_prompt(cfg.format, cfg.prompt_template, cut.context, use_chat),
                "rpt_format": cfg.format,
                "context": cut.context,
                "continuation": cut.continuation,
                "boundaries": list(cut.boundaries),
                "entropy": float(entropy[p]),
                "doc_id": doc["doc_id"],
                "position": int(p),
            }

    def flush() -> Iterator[dict]:
        if not queue:
            return
        ents = _forward_entropies(model, [item[2] for item in queue], pad_id, cfg, prefix)
        for (key, _, _ids, start), (ent, score) in zip(queue, ents):
            doc = pending[key]
            own_from, own_to = doc["plans_owned"].pop(start)
            for p in range(own_from, own_to):
                doc["entropy"][p] = ent[p - start - 1]
                doc["score"][p] = score[p - start - 1]
            doc["windows_left"] -= 1
            scored[0] += own_to - own_from
        queue.clear()
        # progress inside a long document too (the bar itself counts documents)
        progress.set_postfix(tokens_scored=scored[0], kept=summary.positions_kept)
        for key in [k for k, d in pending.items() if d["windows_left"] == 0]:
            yield from finish_doc(key)

    min_tokens = cfg.min_context_tokens + 1
    scored = [0]
    progress = tqdm(documents, desc="rpt data", unit="doc", total=cfg.max_documents)
    for key, doc in enumerate(progress):
        if cfg.max_documents is not None and key >= cfg.max_documents:
            break
        summary.documents += 1
        enc = tokenizer(doc.text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        summary.tokens += len(ids)
        if len(ids) < min_tokens:
            summary.documents_too_short += 1
            continue
        plans = window_plan(len(ids), window)
        pending[key] = {
            "doc_id": doc.doc_id,
            "text": doc.text,
            "ids": ids,
            "offsets": offsets,
            "entropy": [0.0] * len(ids),
            "score": [0.0] * len(ids),
            "windows_left": len(plans),
            "plans_owned": {start: (own_from, own_to) for start, _, own_from, own_to in plans},
        }
        for idx, (start, end, _, _) in enumerate(plans):
            queue.append((key, idx, ids[start:end], start))
            if len(queue) >= cfg.proxy_batch_size:
                yield from flush()
        progress.set_postfix(tokens_scored=scored[0], kept=summary.positions_kept)
    yield from flush()
    summary.entropy_percentiles = _percentiles(all_entropies)


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
    from rl.runtime.outputs import check_output_dir

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
        top = max(summary.entropy_percentiles.values(), default=None)
        seen = f" (99th percentile {top:.3f} nats)" if top is not None else ""
        return (f"{where}; no position reaches min_entropy {cfg.min_entropy}{seen}: lower min_entropy "
                "(--min-entropy)")
    return (f"{where}; {summary.positions_above_threshold} positions pass min_entropy but none leaves a non-empty "
            f"context and a whole-character continuation; lower min_context_tokens (now {cfg.min_context_tokens}) "
            "or use longer documents")


def build_rpt_dataset(cfg: RPTBuildConfig, output_dir: str | Path, jsonl: bool = False, chat_tokenizer=None,
                      overwrite: bool = False, flag: str = "--output", proxy_flag: str = "--proxy-model"):
    """Build and save the RPT dataset; returns (datasets.Dataset, BuildSummary).

    The output is checked before any work (rl/runtime/outputs.py: never over the user's files or an input;
    `overwrite` replaces a directory that is not a previous `rl data rpt` output) and written
    atomically; `jsonl` also writes OUTPUT/rows.jsonl inside it. `summary.files` lists every file
    written. `chat_tokenizer`: the policy's tokenizer, which decides (with `cfg.chat == "auto"`)
    whether prompts are chat messages; default the proxy's. `flag`/`proxy_flag`: names in errors.
    """
    from datasets import Dataset

    from rl.data.corpus import CorpusStats, read_corpus
    from rl.runtime.outputs import replace_dir, written_files

    import itertools

    cfg.validate()
    output_dir = Path(output_dir)
    check_rpt_output(cfg, output_dir, flag, overwrite)
    fingerprint = cfg.fingerprint()  # the inputs as they are when reading starts
    stats = CorpusStats()
    # Read up to the first usable document before the proxy model loads: a corpus that is wrong or
    # all bad (empty, binary, non-UTF-8 files) fails in seconds, not after the model is in memory.
    documents = read_corpus(cfg.corpus, stats=stats, text_field=cfg.text_field, id_field=cfg.id_field)
    first = next(documents)  # raises UserError when nothing usable is left
    model, tokenizer = load_proxy(cfg.proxy_model, flag=proxy_flag)
    if chat_tokenizer is not None and cfg.chat == "auto":
        cfg.chat = "yes" if getattr(chat_tokenizer, "chat_template", None) else "no"
        fingerprint["chat"] = cfg.chat
    summary = BuildSummary()
    rows = list(iter_rpt_rows(cfg, model, tokenizer, itertools.chain([first], documents), summary))
    summary.corpus_summary = stats.summary()
    if not rows:
        raise UserError(no_rows_reason(cfg, summary))
    dataset = Dataset.from_list(rows)
    _remove_legacy_tmp(output_dir)
    with replace_dir(output_dir, build_command(cfg), recheck=lambda: check_rpt_output(cfg, output_dir, flag, overwrite)) as tmp:
        dataset.save_to_disk(str(tmp))
        record = {k: v for k, v in asdict(summary).items() if k != "files"}
        (tmp / "rpt_build.json").write_text(
            json.dumps({"config": fingerprint, "summary": record}, indent=2, default=str)
        )
        if jsonl:
            with open(tmp / "rows.jsonl", "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary.files = written_files(output_dir)
    return dataset, summary


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
