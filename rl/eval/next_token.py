"""`rl eval next-token`: next-token accuracy by entropy split, as in the RPT paper (arXiv 2506.08007, Table 1).

Positions of a held-out RPT dataset (rows from `rl data rpt`) are split by the proxy model's
next-token entropy into nested groups: easy = entropy > 0.5, medium = > 1.0, hard = > 1.5 (so
easy contains medium contains hard), plus "all". Two modes:

* `standard` (lines up with completion-format rows, and works on reasoning rows too): the model
  reads the raw `context` (plain text, its own tokenizer, no chat template); its argmax next
  token, decoded to text, is scored with Eq. 3 against (`continuation`, `boundaries`): with the
  tokenizer that built the data this is exactly "argmax token == ground-truth token". It also
  reports the expected accuracy at `temperature` (probability that one sampled token is rewarded)
  and the NLL of the true token (rl/eval/metrics.py). One left-padded batched forward per
  batch, only the last position's logits (`logits_to_keep=1` where the model accepts it).
* `reasoning` (reasoning-format rows only): the model answers the row's RPT `prompt` (chat
  template applied to messages), k samples per position, scored with `rpt_reward`; mean accuracy
  and the unbiased pass@k.

Each split reports count, accuracy and a 95% Wilson interval (over positions). A LoRA directory
(adapter_config.json) is loaded on its base model and merged. The result is a plain dict (JSON
ready); rl/eval/compare.py renders one model or two side by side with paired differences and CIs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rl.errors import UserError
from rl.signal.sampling import SamplingSettings, prompt_ids, sample
from rl.signal.scoring import text_prefix, token_texts
from rl.data.loading import read_dataset
from rl.runtime.assets import resolve_model

logger = logging.getLogger(__name__)

MODES = ("standard", "reasoning")
SPLIT_NAMES = ("easy", "medium", "hard")
DEFAULT_THRESHOLDS = (0.5, 1.0, 1.5)
Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ----------------------------------------------------------------------------------------------
# Statistics (pure)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, float, float]:
    """Three finite, strictly increasing entropy thresholds (easy, medium, hard), else UserError."""
    values = tuple(float(t) for t in thresholds)
    if len(values) != 3 or not all(math.isfinite(t) for t in values) or not values[0] < values[1] < values[2]:
        raise UserError(
            f"--thresholds: need three increasing numbers for easy,medium,hard (nats), got {list(thresholds)}; "
            "e.g. --thresholds 0.5,1.0,1.5"
        )
    return values  # type: ignore[return-value]


def split_indices(entropies: Sequence[float], thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, list[int]]:
    """Row indices per split: "all", then the nested easy/medium/hard (entropy strictly above each threshold)."""
    thresholds = check_thresholds(thresholds)
    out = {"all": list(range(len(entropies)))}
    for name, threshold in zip(SPLIT_NAMES, thresholds):
        out[name] = [i for i, e in enumerate(entropies) if e > threshold]
    return out


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion successes/n (None when n == 0).

    `successes` may be fractional (a per-position mean over samples); the interval then treats
    each position as one trial, which is the honest unit when samples of a position correlate.
    """
    if n <= 0:
        return None
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):  # product form avoids huge binomials
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def summarize_splits(scores: Sequence[float], entropies: Sequence[float],
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     passes: Sequence[float] | None = None,
                     extras: dict[str, Sequence[float | None]] | None = None) -> dict[str, dict]:
    """Per split: threshold, count, correct (sum of per-position scores), accuracy, ci95, [pass_at_k],
    and the mean of each `extras` list (e.g. expected_accuracy, nll; None values skipped)."""
    thresholds = check_thresholds(thresholds)
    limits = dict(zip(SPLIT_NAMES, thresholds))
    out = {}
    for name, idx in split_indices(entropies, thresholds).items():
        n = len(idx)
        correct = float(sum(scores[i] for i in idx))
        interval = wilson_interval(correct, n)
        entry = {"threshold": limits.get(name), "count": n, "correct": correct,
                 "accuracy": correct / n if n else None, "ci95": list(interval) if interval else None}
        if passes is not None:
            entry["pass_at_k"] = sum(passes[i] for i in idx) / n if n else None
        for key, values in (extras or {}).items():
            kept = [values[i] for i in idx if values[i] is not None]
            entry[key] = sum(kept) / len(kept) if kept else None
        out[name] = entry
    return out


# ----------------------------------------------------------------------------------------------
# Data and model loading


def load_eval_rows(data: Any, mode: str, limit: int | None = None) -> tuple[list[dict], str]:
    """Rows (dicts) of an RPT dataset given as a Dataset, a list of dicts, or a path; checked per row.

    Paths: a `datasets.save_to_disk` dir (a DatasetDict uses test, validation, eval or train,
    in that order), a .jsonl/.json or a .parquet file. Returns (rows, description).
    """
    where = "--data"
    if isinstance(data, (str, Path)):
        where = str(data)
        dataset = _read_dataset(Path(data))
    else:
        dataset = data
    if isinstance(dataset, list):
        rows = dataset[: limit if limit is not None else len(dataset)]
        columns = set(rows[0]) if rows else set()
    else:
        columns = set(dataset.column_names)
        if limit is not None and limit < len(dataset):
            dataset = dataset.select(range(limit))
        rows = dataset.to_list()
    needed = {"standard": ["context"], "reasoning": ["prompt"]}[mode] + ["continuation", "boundaries", "entropy"]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise UserError(
            f"{where}: {mode} mode needs column(s) {missing}, the data has {sorted(columns)}; "
            "build the data with `rl data rpt`"
        )
    if not rows:
        raise UserError(f"{where}: no rows to evaluate; check --data and --limit")
    if mode == "reasoning" and any(row.get("rpt_format") == "completion" for row in rows):
        raise UserError(f"{where}: the rows are completion-format RPT data (the prompt is the raw context, no "
                        "instruction): evaluate them with --mode standard, or rebuild with `--format reasoning`")
    for i, row in enumerate(rows):
        _check_row(where, i, row, mode)
    return rows, where if isinstance(data, (str, Path)) else f"{len(rows)} rows in memory"


def _read_dataset(path: Path):
    from datasets import DatasetDict

    data = read_dataset(str(path), field="--data")
    if isinstance(data, DatasetDict):
        name = next((s for s in ("test", "validation", "eval", "train") if s in data), list(data)[0])
        logger.info("%s: evaluating split %r", path, name)
        data = data[name]
    return data


def _check_row(where: str, i: int, row: dict, mode: str) -> None:
    fix = "rebuild it with `rl data rpt` or fix the row"
    entropy = row.get("entropy")
    if isinstance(entropy, bool) or not isinstance(entropy, (int, float)) or not math.isfinite(entropy):
        raise UserError(f"{where}: row {i}: `entropy` must be a finite number, got {entropy!r}; {fix}")
    cont, bounds = row.get("continuation"), row.get("boundaries")
    if not isinstance(cont, str) or not cont:
        raise UserError(f"{where}: row {i}: `continuation` must be a non-empty string; {fix}")
    ok = isinstance(bounds, (list, tuple)) and len(bounds) > 0
    ok = ok and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
    ok = ok and all(a < b for a, b in zip([0, *bounds], bounds)) and bounds[-1] <= len(cont.encode("utf-8"))
    if not ok:
        raise UserError(
            f"{where}: row {i}: `boundaries` must be increasing byte offsets within the continuation, got {bounds!r}; {fix}"
        )
    if mode == "standard" and (not isinstance(row.get("context"), str) or not row["context"]):
        raise UserError(f"{where}: row {i}: `context` must be a non-empty string; {fix}")
    prompt = row.get("prompt")
    if mode == "reasoning" and not (
        (isinstance(prompt, str) and prompt)
        or (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt))
    ):
        raise UserError(f"{where}: row {i}: `prompt` must be a string or a list of chat messages; {fix}")


def load_model(name_or_path: str, device: str | None = None):
    """(model, tokenizer) in eval mode: a checkpoint dir, hub id, `builtin:` name, or LoRA adapter dir.

    A LoRA dir (adapter_config.json) loads its `base_model_name_or_path` (builtin: names resolved),
    applies the adapter with peft and merges it (plain forward speed). The tokenizer comes from the
    adapter dir when it holds one (training saves it there), else from the base.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(str(name_or_path))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    adapter_cfg = Path(path) / "adapter_config.json"
    base = path
    if adapter_cfg.is_file():
        try:
            base_name = json.loads(adapter_cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError) as exc:
            raise UserError(f"{adapter_cfg}: cannot read ({exc.__class__.__name__}); re-save the adapter")
        if not base_name:
            raise UserError(f"{adapter_cfg}: no base_model_name_or_path; set it to the base model the adapter was trained on")
        base = resolve_model(str(base_name))
    has_tok = any((Path(path) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path if has_tok else base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        if base != path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model {name_or_path!r}: cannot load ({str(exc).splitlines()[0][:200]}); give a checkpoint dir "
            "(config.json), a LoRA dir (adapter_config.json) or a builtin: name"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


# ----------------------------------------------------------------------------------------------
# The two modes


def encode_contexts(tokenizer, contexts: list[str], max_tokens: int | None) -> list[list[int]]:
    """Token ids of each raw context as an LM prefix: the tokenizer's text prefix (its BOS when it adds
    one, rl.signal.scoring.text_prefix; never an EOS it may append: the model continues the text) and
    the context's own tokens, keeping the last `max_tokens` (the prefix stays)."""
    prefix = text_prefix(tokenizer)
    out = []
    for ids in tokenizer(contexts, add_special_tokens=False)["input_ids"]:
        ids = list(ids)
        if max_tokens and len(prefix) + len(ids) > max_tokens:
            ids = ids[len(ids) - max(1, max_tokens - len(prefix)):]
        out.append(prefix + ids if ids else [])
    return out


def _run_standard(model, tokenizer, rows, batch_size, max_context_tokens, temperature, progress) -> list[dict]:
    """Greedy top-1 (`score`, as in the RPT paper), expected accuracy at `temperature` and NLL per row
    (rl/eval/metrics.py), from the last-position logits of the raw context."""
    from rl.eval.metrics import position_metrics

    if max_context_tokens is None:
        max_context_tokens = getattr(model.config, "max_position_embeddings", None)
    seqs = encode_contexts(tokenizer, [r["context"] for r in rows], max_context_tokens)
    empty = [i for i, s in enumerate(seqs) if not s]
    if empty:
        raise UserError(f"--data: row {empty[0]}: the context encodes to no tokens; drop the row")
    per_row = []
    for start in range(0, len(rows), max(batch_size, 64)):  # chunks only to move the progress bar
        part = range(start, min(len(rows), start + max(batch_size, 64)))
        metrics = position_metrics(model, tokenizer, [seqs[i] for i in part],
                                   [(rows[i]["continuation"], rows[i]["boundaries"]) for i in part],
                                   temperature=temperature, batch_size=batch_size)
        for i, m in zip(part, metrics):
            row = rows[i]
            pred = token_texts(tokenizer, [m["argmax"]], skip_special_tokens=True)[0]  # `▁the` reads " the"
            target = row["continuation"].encode("utf-8")[: row["boundaries"][0]].decode("utf-8", "replace")
            per_row.append({"index": i, "entropy": float(row["entropy"]), "doc_id": row.get("doc_id"),
                            "prediction": pred, "target": target, "score": m["top1"], "expected": m["expected"],
                            "nll": m["nll"]})
        if progress is not None:
            progress.update(len(part))
    return per_row


def _run_reasoning(model, tokenizer, rows, settings: NextTokenSettings, progress) -> list[dict]:
    """k samples per row's RPT prompt from the one sampler (rl/signal/sampling.py: chat template for
    messages, BOS for text, shared prefill, seeded), each scored with `rpt_reward` on the text it adds
    after its prompt, as the trainer gives rewards (decoded alone, a SentencePiece first token loses
    its space and clean-up rewrites " ." to ".")."""
    from rewards.rpt import extract_prediction, rpt_reward

    k = settings.samples
    drawn = sample(model, tokenizer, [prompt_ids(tokenizer, row["prompt"]) for row in rows], settings.sampling(),
                   progress=progress.update if progress is not None else None)
    per_row = []
    for i, row in enumerate(rows):
        comps = [s.text for s in drawn[i * k:(i + 1) * k]]
        rewards = rpt_reward(comps, continuation=[row["continuation"]] * k, boundaries=[row["boundaries"]] * k)
        correct = sum(1 for r in rewards if r and r >= 1.0)
        per_row.append({"index": i, "entropy": float(row["entropy"]),
                        "predictions": [extract_prediction(c) for c in comps],
                        "rewards": rewards, "score": sum(r or 0.0 for r in rewards) / k,
                        "pass": pass_at_k(k, correct, settings.pass_k)})
    return per_row


@dataclass(frozen=True)
class NextTokenSettings:
    """What `rl eval next-token` measures and how: one field per flag (`--mode`, `--thresholds`, ...).
    `checked()` refuses bad values with the flag's name, before any rows or weights load."""

    mode: str = "standard"
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS
    batch_size: int = 8
    limit: int | None = None
    samples: int = 1  # reasoning mode: samples per position
    pass_k: int | None = None  # reasoning mode: k of pass@k (None: samples)
    max_new_tokens: int = 256
    temperature: float = 1.0  # standard: expected accuracy at T; reasoning: sampling T (0 = greedy)
    max_context_tokens: int | None = None
    seed: int = 0
    device: str | None = None

    def checked(self) -> "NextTokenSettings":
        """These settings with the thresholds as a tuple and pass_k resolved, or a UserError naming the flag."""
        if self.mode not in MODES:
            raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        thresholds = check_thresholds(self.thresholds)
        for name, value in (("--batch-size", self.batch_size), ("--samples", self.samples),
                            ("--max-new-tokens", self.max_new_tokens)):
            if int(value) < 1:
                raise UserError(f"{name}: must be at least 1, got {value}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit: must be at least 1, got {self.limit}")
        pass_k = self.samples if self.pass_k is None else self.pass_k
        if self.mode == "standard" and not self.temperature > 0:
            raise UserError(f"--temperature: standard mode reports the expected accuracy at this temperature; "
                            f"it must be > 0, got {self.temperature}")
        if self.mode == "reasoning":
            if not 1 <= pass_k <= self.samples:
                raise UserError(f"--pass-k: must be between 1 and --samples ({self.samples}), got {pass_k}")
            if self.temperature < 0 or (self.temperature == 0 and self.samples > 1):
                raise UserError("--temperature: must be > 0 to draw several --samples (0 = one greedy sample)")
        return dataclasses.replace(self, thresholds=thresholds, pass_k=pass_k)

    def sampling(self) -> SamplingSettings:
        """Reasoning mode's sampling: plain temperature sampling (no top-p/top-k), `batch_size` rows per call."""
        return SamplingSettings(samples=self.samples, max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature, top_p=1.0, top_k=0, batch_size=self.batch_size,
                                seed=self.seed)

    def record(self) -> dict[str, Any]:
        """The settings a result reports (the sampling ones in reasoning mode only)."""
        out: dict[str, Any] = {"batch_size": self.batch_size, "limit": self.limit,
                               "max_context_tokens": self.max_context_tokens, "temperature": self.temperature}
        if self.mode == "reasoning":
            out.update(samples=self.samples, pass_k=self.pass_k, max_new_tokens=self.max_new_tokens, seed=self.seed)
        return out


def evaluate_next_token(model_path: str, dataset_or_path: Any, settings: NextTokenSettings | None = None, *,
                        model=None, tokenizer=None, progress: bool = True, keep_rows: bool = True) -> dict:
    """Evaluate one model on an RPT dataset; returns the JSON-ready result dict (see module doc).

    `model`/`tokenizer` may be passed already loaded (then `model_path` is only the label).
    Keys: model, mode, data, rows, thresholds, settings, splits{all,easy,medium,hard}, seconds,
    positions_per_second, and per_row (when keep_rows).
    """
    from tqdm.auto import tqdm

    settings = (settings or NextTokenSettings()).checked()
    mode = settings.mode
    rows, data_desc = load_eval_rows(dataset_or_path, mode, settings.limit)
    if model is None:
        model, tokenizer = load_model(model_path, settings.device)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer together with a preloaded model")
    bar = tqdm(total=len(rows), desc=f"eval {mode}", unit="pos", disable=not progress)
    started = time.perf_counter()
    try:
        if mode == "standard":
            per_row = _run_standard(model, tokenizer, rows, settings.batch_size, settings.max_context_tokens,
                                    settings.temperature, bar)
        else:
            per_row = _run_reasoning(model, tokenizer, rows, settings, bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    scores = [r["score"] for r in per_row]
    entropies = [r["entropy"] for r in per_row]
    passes = [r["pass"] for r in per_row] if mode == "reasoning" else None
    extras = None
    if mode == "standard":
        extras = {"expected_accuracy": [r["expected"] for r in per_row], "nll": [r["nll"] for r in per_row]}
    result = {
        "model": str(model_path), "mode": mode, "data": data_desc, "rows": len(rows),
        "thresholds": dict(zip(SPLIT_NAMES, settings.thresholds)), "settings": settings.record(),
        "splits": summarize_splits(scores, entropies, settings.thresholds, passes, extras),
        "seconds": seconds, "positions_per_second": len(rows) / seconds if seconds > 0 else None,
    }
    if keep_rows:
        result["per_row"] = per_row
    return result
