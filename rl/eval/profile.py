"""`rl profile entropy`: how a model's next-token entropy is distributed, as in "Beyond the 80/20 Rule"
(arXiv 2506.01939), which found that most tokens are near-deterministic and a minority of
high-entropy "forking" tokens (wait, however, thus, suppose, ...) steer reasoning.

Two sources of tokens:

* a corpus (`--data`, read by rl.data.corpus.read_corpus, same formats and skip rules as
  `rl data rpt`): teacher-forced, the entropy of the model's distribution at every position of
  every document (overlapping windows, several per forward pass);
* the model's own samples (`--generate PROMPTS`): completions sampled at a temperature, then
  re-scored in one forward pass to get each generated token's entropy at that temperature (no
  per-step score tensors kept, so memory stays flat for long generations).

`entropy_profile_stats` turns (entropy, token text) pairs into the numbers (pure, tested on
hand-computed cases): share below 0.01 nats, percentiles (the 80th is the paper's forking
threshold), share of total entropy carried by the top 20% of tokens, the most frequent
high-entropy tokens, and token kinds of the high vs low groups. Plots are PNGs (Agg backend);
`--wandb` logs them with a table.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rl.errors import UserError
from rl.signal.entropy import token_entropy
from rl.signal.padding import left_pad
from rl.signal.sampling import SamplingSettings, pad_id, prompt_ids, sample
from rl.signal.scoring import logit_reader, scoring, text_prefix, token_texts
from rl.data.corpus import CorpusStats, read_corpus
from rl.eval.next_token import load_model
from rl.runtime.models import check_model_arg, quiet_long_input_warning
from rl.runtime.outputs import check_output_dir, replace_dir, written_files

logger = logging.getLogger(__name__)

PAPER = {"label": "paper (Qwen3-8B, AIME)", "share_below_0.01": 0.5064, "p80": 0.672}
LOW_ENTROPY = 0.01
PERCENTILES = (10, 20, 50, 80, 90, 95, 99)
KINDS = ("whitespace/punctuation", "function word", "word", "number", "math symbol", "other")
# Function words and reasoning connectives (the paper's forking tokens are mostly these).
FUNCTION_WORDS = frozenset(
    "the a an of and or nor so but yet thus hence therefore since because however although though wait "
    "then if else let suppose assume given which that this these those it its is are was were be been "
    "to in on at by for with from as into than not no also now first next finally maybe perhaps actually "
    "alternatively consider note recall similarly instead otherwise while when where whether we i you "
    "they he she there here what how why".split()
)
_MATH_CHARS = set("+-*/=<>^_|~%\\∑∏∫√∞≤≥≠≈±×÷·∂∇∈∉⊂⊆∪∩→⇒⇔")


def token_kind(text: str) -> str:
    """Classify one token's text: whitespace/punctuation, function word, word, number, math symbol, other.
    An empty text (a token holding the first bytes of a character another token completes, as
    `rl profile bits` gives its pieces) is "other"."""
    if not text:
        return "other"
    core = text.strip()
    if not core:
        return "whitespace/punctuation"
    if core.lower() in FUNCTION_WORDS:
        return "function word"
    if any(c.isdigit() for c in core) and all(c.isdigit() or c in ".," for c in core):
        return "number"
    if core[0] == "\\" and core[1:].isalpha() or all(c in _MATH_CHARS or unicodedata.category(c) == "Sm" for c in core):
        return "math symbol"  # operators, relations, LaTeX commands like \frac
    if all(unicodedata.category(c)[0] in "PZ" for c in core):
        return "whitespace/punctuation"
    if any(c.isalpha() for c in core):
        return "word"
    return "other"


def _share(counter: Counter, total: int) -> dict[str, float]:
    return {kind: (counter.get(kind, 0) / total if total else 0.0) for kind in KINDS}


def entropy_profile_stats(
    entropies: Sequence[float],
    token_texts: Sequence[str],
    *,
    top_fraction: float = 0.2,
    low: float = LOW_ENTROPY,
    top_tokens: int = 20,
) -> dict:
    """The profile numbers of a population of tokens (pure; entropies in nats).

    The high-entropy group is the top ceil(top_fraction x N) tokens by entropy (ties broken by
    position, earlier first), so its size is exact; the low group is the rest. Percentiles use
    linear interpolation (numpy's default).
    """
    import numpy as np

    if len(entropies) != len(token_texts):
        raise ValueError(f"{len(entropies)} entropies but {len(token_texts)} token texts")
    n = len(entropies)
    if n == 0:
        raise UserError("entropy profile: no tokens were scored; give more or longer documents / prompts")
    values = np.asarray(entropies, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    n_high = min(n, math.ceil(top_fraction * n - 1e-9))
    high = np.zeros(n, dtype=bool)
    high[order[:n_high]] = True
    total = float(values.sum())
    all_counts = Counter(token_texts)
    high_counts = Counter(t for t, h in zip(token_texts, high) if h)
    high_sum: dict[str, float] = {}
    for t, e, h in zip(token_texts, values, high):
        if h:
            high_sum[t] = high_sum.get(t, 0.0) + float(e)
    kinds = [token_kind(t) for t in token_texts]
    return {
        "tokens": n,
        "mean_entropy": float(values.mean()),
        f"share_below_{low:g}": float((values < low).mean()),
        "percentiles": {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES},
        "high_fraction": top_fraction,
        "high_tokens": int(n_high),
        "high_threshold": float(values[order[n_high - 1]]) if n_high else None,
        "high_entropy_share": float(values[high].sum() / total) if total > 0 else None,
        "top_forking_tokens": [
            {"token": t, "count": c, "occurrences": all_counts[t], "mean_entropy": high_sum[t] / c}
            for t, c in sorted(high_counts.items(), key=lambda kv: (-kv[1], -high_sum[kv[0]], kv[0]))[:top_tokens]
        ],
        "kinds": {
            "high": _share(Counter(k for k, h in zip(kinds, high) if h), int(n_high)),
            "low": _share(Counter(k for k, h in zip(kinds, high) if not h), n - int(n_high)),
        },
    }


# ----------------------------------------------------------------------------------------------
# Scoring tokens with a model


def _entropy_spans(model, ids, mask, pos, spans, temperature: float) -> list[list[float]]:
    """One scoring forward (eval mode, rl/signal/scoring.py); for row r, entropies of the distributions at
    sequence indices [a, b) = spans[r], of the model's real logits (soft-capping and logit scaling
    applied). The LM head runs per row in chunks, so no (batch x length x vocab) tensor."""
    import torch

    reader = logit_reader(model)
    out = []
    with scoring(model):
        states = reader.states(ids, mask, pos)
        for r, (a, b) in enumerate(spans):
            parts = []
            for s in range(a, b, 512):
                logits = reader.logits(states[r, s:min(b, s + 512)])
                parts.append(token_entropy(logits, temperature=temperature))
            out.append(torch.cat(parts).tolist() if parts else [])
    return out


def corpus_entropies(model, tokenizer, documents, *, window_tokens=1024, batch_size=4, max_documents=None,
                     max_tokens=None, temperature=1.0, progress=True) -> tuple[list[float], list[int], int]:
    """Teacher-forced entropy at every predicted position (token 1 onward) of each document.

    Returns (entropies, token ids of the tokens at those positions, documents read). Windows
    overlap by half (rl.data.rpt.window_plan) and each position is scored once; each window is read
    after the tokenizer's text prefix (BOS when it adds one; `window_tokens` counts it).
    """
    import torch
    from tqdm.auto import tqdm

    from rl.data.rpt import window_plan

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix = text_prefix(tokenizer)
    window = max(2, window_tokens - len(prefix))
    entropies: list[float] = []
    token_ids: list[int] = []
    queue: list[tuple[list[int], int, int, int]] = []  # (window ids, start, own_from, own_to)

    def flush():
        width = len(prefix) + max(len(w[0]) for w in queue)
        ids = torch.full((len(queue), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (w, *_rest) in enumerate(queue):
            n = len(prefix) + len(w)
            ids[r, :n], mask[r, :n] = torch.tensor(prefix + w), 1
        pos = torch.arange(width).expand(len(queue), -1)
        skip = len(prefix)
        spans = [(skip + own_from - start - 1, skip + own_to - start - 1) for _, start, own_from, own_to in queue]
        for (w, start, own_from, own_to), ent in zip(queue, _entropy_spans(
                model, ids.to(device), mask.to(device), pos.to(device), spans, temperature)):
            entropies.extend(ent)
            token_ids.extend(w[own_from - start:own_to - start])
        queue.clear()

    docs = 0
    bar = tqdm(documents, desc="profile", unit="doc", total=max_documents, disable=not progress)
    for doc in bar:
        if (max_documents is not None and docs >= max_documents) or (max_tokens and len(entropies) >= max_tokens):
            break
        docs += 1
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        for start, end, own_from, own_to in window_plan(len(ids), window):
            queue.append((ids[start:end], start, own_from, own_to))
            if len(queue) >= batch_size:
                flush()
        bar.set_postfix(tokens=len(entropies))
    if queue:
        flush()
    if max_tokens:
        entropies, token_ids = entropies[:max_tokens], token_ids[:max_tokens]
    return entropies, token_ids, docs


def read_prompts(path: str | Path, limit: int | None = None) -> list:
    """Prompts from a .txt (one per non-blank line) or .jsonl (`prompt`: a string or chat messages).

    Bad JSONL lines are skipped, counted and warned about (like corpus reading); a missing file,
    an unknown format or no prompt at all raises UserError.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--generate: {p} is not a file; give a .txt (one prompt per line) or .jsonl with `prompt`")
    if p.suffix not in (".txt", ".jsonl"):
        raise UserError(f"--generate: {p}: expected a .txt (one prompt per line) or a .jsonl with a `prompt` field")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--generate: {p}: cannot read as UTF-8 text ({exc.__class__.__name__}); save it as UTF-8")
    prompts: list = []
    skipped = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if p.suffix == ".txt":
            prompts.append(line)
            continue
        try:
            prompt = json.loads(line).get("prompt")
        except (ValueError, AttributeError):
            prompt = None
        ok = (isinstance(prompt, str) and prompt.strip()) or (
            isinstance(prompt, list) and prompt and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt))
        if not ok:
            skipped += 1
            logger.warning("%s:%d: skipped (not a JSON object with a `prompt` string or message list)", p, number)
            continue
        prompts.append(prompt)
    if not prompts:
        raise UserError(f"--generate: {p}: no usable prompts ({skipped} bad lines skipped); "
                        "one prompt per line (.txt) or {\"prompt\": ...} per line (.jsonl)")
    if skipped:
        logger.warning("%s: %d prompts read, %d bad lines skipped", p, len(prompts), skipped)
    return prompts[:limit] if limit else prompts


def generated_entropies(model, tokenizer, prompts, sampling: SamplingSettings, *,
                        progress=True) -> tuple[list[float], list[int], int]:
    """Completions from the one sampler (rl/signal/sampling.py; a string prompt is a user turn) and
    (entropy of each generated token at the sampling temperature, its id, completions). A completion
    ends before its EOS, not a text token. Each batch is re-scored in one forward (prompts left-padded,
    completions right-padded: no per-step score tensors kept, so memory stays flat)."""
    import torch
    from tqdm.auto import tqdm

    seqs = [prompt_ids(tokenizer, p, user_turn=True) for p in prompts]
    with tqdm(total=len(seqs), desc="generate", unit="prompt", disable=not progress) as bar:
        drawn = sample(model, tokenizer, seqs, sampling, progress=bar.update)
    device = next(model.parameters()).device
    entropies: list[float] = []
    token_ids: list[int] = []
    rows = sampling.batch_size * sampling.samples
    for start in range(0, len(drawn), rows):
        group = drawn[start:start + rows]
        ids, mask, _ = left_pad([seqs[s.prompt] for s in group], pad_id(tokenizer), device)
        width, longest = ids.shape[1], max(len(s.ids) for s in group)
        new = torch.full((len(group), longest), pad_id(tokenizer), dtype=ids.dtype)
        new_mask = torch.zeros_like(new)
        for r, s in enumerate(group):
            new[r, :len(s.ids)], new_mask[r, :len(s.ids)] = torch.tensor(s.ids, dtype=ids.dtype), 1
        full_mask = torch.cat([mask, new_mask.to(device)], dim=1)
        pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
        spans = [(width - 1, width - 1 + len(s.ids)) for s in group]
        for s, ent in zip(group, _entropy_spans(model, torch.cat([ids, new.to(device)], dim=1), full_mask, pos, spans,
                                                sampling.temperature or 1.0)):
            entropies.extend(ent)
            token_ids.extend(s.ids)
    return entropies, token_ids, len(drawn)


# ----------------------------------------------------------------------------------------------
# Report: table, plots, W&B


def _visible(token: str) -> str:
    return repr(token)[1:-1].replace(" ", "␣") or "∅"


def format_profile(result: dict) -> str:
    """Text report: comparison with the paper side by side, percentiles, top tokens, kinds."""
    s = result["stats"]
    p = s["percentiles"]
    rows = [("metric", "this model", PAPER["label"]),
            ("tokens with entropy < 0.01", f"{100 * s['share_below_0.01']:.2f}%", f"{100 * PAPER['share_below_0.01']:.2f}%"),
            ("80th percentile (nats)", f"{p['p80']:.3f}", f"{PAPER['p80']:.3f}")]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines = [f"entropy profile of {result['model']} on {result['source']['path']} "
             f"({result['source']['kind']}; {s['tokens']} tokens)"]
    lines += [f"{a.ljust(w0)} | {b.ljust(w1)} | {c}" for a, b, c in rows]
    lines.append("percentiles (nats): " + ", ".join(f"{k}={v:.3f}" for k, v in p.items()))
    if s["high_entropy_share"] is not None:
        lines.append(f"top {100 * s['high_fraction']:.0f}% of tokens (entropy >= {s['high_threshold']:.3f}) carry "
                     f"{100 * s['high_entropy_share']:.1f}% of the total entropy; mean entropy {s['mean_entropy']:.3f}")
    top = ", ".join(f"{_visible(t['token'])} {t['count']}" for t in s["top_forking_tokens"][:15])
    lines.append(f"most frequent high-entropy tokens: {top or 'none'}")
    lines.append(f"{'token kind (share of group)'.ljust(28)} {'high':>7} {'low':>7}")
    for kind in KINDS:
        lines.append(f"{kind.ljust(28)} {100 * s['kinds']['high'][kind]:6.1f}% {100 * s['kinds']['low'][kind]:6.1f}%")
    return "\n".join(lines)


def save_plots(entropies: Sequence[float], stats: dict, out_dir: Path, title: str) -> dict[str, str]:
    """entropy_histogram.png (log x axis, 80th percentile marked) and forking_tokens.png; returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    floor = 1e-5
    values = np.clip(np.asarray(entropies, dtype=np.float64), floor, None)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(values, bins=np.logspace(math.log10(floor), math.log10(max(values.max(), 10 * floor)) + 1e-6, 60),
            color="#4C72B0")
    ax.set_xscale("log")
    p80 = stats["percentiles"]["p80"]
    ax.axvline(max(p80, floor), color="#C44E52", linestyle="--", label=f"80th percentile = {p80:.3f}")
    ax.axvline(LOW_ENTROPY, color="gray", linestyle=":", label=f"0.01 ({100 * stats['share_below_0.01']:.1f}% below)")
    ax.set_xlabel(f"next-token entropy (nats, log scale; values < {floor:g} drawn at {floor:g})")
    ax.set_ylabel("tokens")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    hist_path = out_dir / "entropy_histogram.png"
    fig.savefig(hist_path, dpi=110)
    plt.close(fig)

    top = stats["top_forking_tokens"][:20][::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(top) + 1)))
    ax.barh([_visible(t["token"]) for t in top], [t["count"] for t in top], color="#DD8452")
    ax.set_xlabel(f"count among the top {100 * stats['high_fraction']:.0f}% highest-entropy tokens")
    ax.set_title(f"most frequent forking tokens: {title}")
    fig.tight_layout()
    bar_path = out_dir / "forking_tokens.png"
    fig.savefig(bar_path, dpi=110)
    plt.close(fig)
    return {"histogram": str(hist_path), "forking_tokens": str(bar_path)}


def log_to_wandb(result: dict, project: str, run_name: str | None = None) -> str:
    """Log the plots, a table of forking tokens and the summary numbers to one W&B run.

    The mode comes from the environment (WANDB_MODE=offline writes a local run, no network).
    Returns the run's directory.
    """
    import wandb

    s = result["stats"]
    try:
        run = wandb.init(project=project, name=run_name, job_type="entropy-profile",
                         config={"model": result["model"], "source": result["source"], "settings": result["settings"]})
    except Exception as exc:  # wandb raises UsageError/CommError with long messages
        raise UserError(f"--wandb: cannot start a W&B run ({str(exc).splitlines()[0][:160]}); "
                        "run `wandb login` or set WANDB_MODE=offline")
    table = wandb.Table(columns=["token", "count", "occurrences", "mean_entropy"],
                        data=[[t["token"], t["count"], t["occurrences"], t["mean_entropy"]] for t in s["top_forking_tokens"]])
    run.log({"entropy_histogram": wandb.Image(result["files"]["histogram"]),
             "forking_tokens": wandb.Image(result["files"]["forking_tokens"]),
             "forking_tokens_table": table})
    run.summary.update({"tokens": s["tokens"], "share_below_0.01": s["share_below_0.01"],
                        "high_entropy_share": s["high_entropy_share"], "mean_entropy": s["mean_entropy"],
                        **{f"entropy_{k}": v for k, v in s["percentiles"].items()}})
    run_dir = run.dir
    run.finish()
    return run_dir


PROFILE_COMMAND = "rl profile entropy"
# Files of a profile written before the rl-output.json marker existed (rl/runtime/outputs.py `legacy`).
PROFILE_FILES = ("entropy_profile.json", "entropy_histogram.png", "forking_tokens.png")


@dataclass(frozen=True)
class ProfileSettings:
    """What `rl profile entropy` reads and writes: one field per flag; `check()` names the bad flag."""

    data: str | None = None  # a corpus (teacher-forced), or
    generate: str | None = None  # prompts whose completions the model samples
    output_dir: str | Path = "runs/entropy-profile"
    window_tokens: int = 1024
    batch_size: int = 4
    max_documents: int | None = None
    max_tokens: int | None = None
    limit: int | None = None
    samples: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    seed: int = 0
    device: str | None = None
    wandb_project: str | None = None
    overwrite: bool = False
    text_field: str = "text"

    def check(self) -> None:
        """Temperature: corpus mode computes the entropy of softmax(logits/T) and needs T > 0; generate
        mode with T = 0 takes one greedy sample per prompt and scores it at T = 1."""
        if (self.data is None) == (self.generate is None):
            raise UserError("rl profile entropy: give exactly one of --data CORPUS or --generate PROMPTS")
        for name, value in (("--window-tokens", self.window_tokens), ("--batch-size", self.batch_size),
                            ("--samples", self.samples), ("--max-new-tokens", self.max_new_tokens)):
            if value < (2 if name == "--window-tokens" else 1):
                raise UserError(f"{name}: too small ({value})")
        if self.temperature < 0:
            raise UserError(f"--temperature: must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.data is not None:
            raise UserError("--temperature: 0 has no entropy to measure on a corpus (softmax(logits/0) is one-hot); "
                            "use T > 0 (1.0 = the model's own distribution)")
        if self.temperature == 0 and self.samples > 1:
            raise UserError("--temperature: must be > 0 to draw several --samples (0 = one greedy sample)")
        for name, value in (("--max-tokens", self.max_tokens), ("--max-documents", self.max_documents),
                            ("--limit", self.limit)):
            if value is not None and value < 1:
                raise UserError(f"{name}: must be at least 1 (or omit it for no limit), got {value}")

    def sampling(self) -> SamplingSettings:  # plain temperature sampling, `batch_size` prompts per call
        return SamplingSettings(samples=self.samples, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=1.0, top_k=0, batch_size=self.batch_size, seed=self.seed)

    def record(self) -> dict:  # the settings the JSON reports
        return {"temperature": self.temperature, "entropy_temperature": self.temperature or 1.0,
                "window_tokens": self.window_tokens, "samples": self.samples,
                "max_new_tokens": self.max_new_tokens, "max_tokens": self.max_tokens, "seed": self.seed}


def profile_entropy(model_path: str, settings: ProfileSettings, *, model=None, tokenizer=None,
                    progress: bool = True) -> dict:
    """Score tokens (corpus or own samples), compute the stats, write JSON + PNGs, optionally log to W&B.

    The output dir is checked before any work (rl/runtime/outputs.py: a new dir or a previous profile,
    else `overwrite`) and replaced atomically; `result["written"]` lists every file written.
    `settings.entropy_temperature` in the result records the temperature the entropies are at."""
    s = settings
    s.check()

    def check_out():
        return check_output_dir(s.output_dir, "--output-dir", PROFILE_COMMAND, overwrite=s.overwrite,
                                inputs={"--data": s.data, "--generate": s.generate, "--model": model_path},
                                containers={"--data": s.data}, legacy=PROFILE_FILES)

    check_out()
    if model is None:
        check_model_arg(model_path, "--model")
    corpus_stats = CorpusStats()
    documents = (read_corpus(s.data, stats=corpus_stats, text_field=s.text_field)  # spec errors before loading
                 if s.data is not None else None)
    prompts = read_prompts(s.generate, s.limit) if s.generate is not None else None
    if model is None:
        model, tokenizer = load_model(model_path, s.device)
    quiet_long_input_warning(tokenizer)  # corpus documents are scored in windows, never whole
    if documents is not None:
        ents, ids, units = corpus_entropies(model, tokenizer, documents, window_tokens=s.window_tokens,
                                            batch_size=s.batch_size, max_documents=s.max_documents or s.limit,
                                            max_tokens=s.max_tokens, temperature=s.temperature or 1.0,
                                            progress=progress)
        source = {"kind": "corpus (teacher-forced)", "path": s.data, "documents": units,
                  "corpus": corpus_stats.summary()}
    else:
        ents, ids, units = generated_entropies(model, tokenizer, prompts, s.sampling(), progress=progress)
        source = {"kind": "generated", "path": s.generate, "prompts": len(prompts), "completions": units}
    distinct = sorted(set(ids))  # each token's text as it reads after other text (`▁the` is " the")
    cache = dict(zip(distinct, token_texts(tokenizer, distinct)))
    stats = entropy_profile_stats(ents, [cache[t] for t in ids])
    out = Path(s.output_dir)
    result = {"model": str(model_path), "written_by": PROFILE_COMMAND, "source": source, "settings": s.record(),
              "stats": stats, "paper": PAPER}
    with replace_dir(out, PROFILE_COMMAND, recheck=check_out) as tmp:
        files = save_plots(ents, stats, tmp, f"{Path(str(model_path)).name}, {source['kind']}")
        files["json"] = str(tmp / "entropy_profile.json")
        result["files"] = files
        if s.wandb_project:
            result["wandb_dir"] = log_to_wandb(result, s.wandb_project)
        result["files"] = {k: str(out / Path(v).name) for k, v in files.items()}
        (tmp / "entropy_profile.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    result["written"] = written_files(out)
    return result
