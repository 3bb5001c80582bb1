"""Did the run learn? Paired before/after measurements with 95% CIs (used by `make demo` and bench/).

Three measurements, each paired (the same units scored with the base model and the trained one):

* probe reward: a fixed set of training rows, `samples` completions each from both models with the
  run's own sampling settings and seed, scored with the run's rewards (TRL's weighted sum);
  unit = one sample, grouped by document for the bootstrap.
* held-out RPT positions (documents never trained on): expected accuracy at the sampling
  temperature, greedy top-1 and NLL of the true token, by entropy split (rl/eval/metrics.py).
* all tokens of the held-out documents: the same three metrics at every token.

Intervals: paired bootstrap over documents (rl/eval/stats.py). `learning_line` is the one line scripts
read. The batch-reward curve of the run is drawn to a PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rl.eval.stats import PairedDiff, paired_bootstrap, paired_bootstrap_sums

SPLITS = (("all", None), ("easy", 0.5), ("medium", 1.0), ("hard", 1.5))


@dataclass
class LearningReport:
    probe: PairedDiff | None = None
    positions: dict[str, dict[str, PairedDiff]] = field(default_factory=dict)  # split -> metric -> diff
    tokens: dict[str, PairedDiff] = field(default_factory=dict)  # metric -> diff over all held-out tokens
    temperature: float = 1.0
    probe_rows: int = 0
    probe_samples: int = 0
    heldout_documents: int = 0

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature, "probe_rows": self.probe_rows, "probe_samples": self.probe_samples,
            "heldout_documents": self.heldout_documents,
            "probe_reward": self.probe.as_dict() if self.probe else None,
            "heldout_positions": {s: {m: d.as_dict() for m, d in ms.items()} for s, ms in self.positions.items()},
            "heldout_tokens": {m: d.as_dict() for m, d in self.tokens.items()},
        }

    def format(self) -> str:
        lines = []
        if self.probe is not None:
            lines.append(f"probe reward ({self.probe_rows} training rows x {self.probe_samples} samples, paired): "
                         + _fmt(self.probe, 1.0, ""))
        rows = [("held-out RPT positions, " + split, metrics) for split, metrics in self.positions.items()]
        if self.tokens:
            rows.append((f"all tokens of {self.heldout_documents} held-out documents", self.tokens))
        if rows:
            lines.append(f"held-out, base -> trained (diff, 95% CI from a paired bootstrap over documents); "
                         f"expected accuracy at T={self.temperature:g}:")
            for label, metrics in rows:
                units = next(iter(metrics.values())).units if metrics else 0
                cells = [f"{name} " + _fmt(metrics[key], scale, unit) for key, name, scale, unit in
                         (("expected", "expected acc.", 100.0, " pts"), ("top1", "top-1", 100.0, " pts"),
                          ("nll", "NLL", 1.0, "")) if key in metrics]
                lines.append(f"  {label} ({units} positions): " + "; ".join(cells))
        return "\n".join(lines)


def _fmt(d: PairedDiff, scale: float, unit: str) -> str:
    pct = "%" if unit else ""
    return (f"{scale * d.before:.3f}{pct} -> {scale * d.after:.3f}{pct} (diff {scale * d.diff:+.3f}{unit}, "
            f"95% CI [{scale * d.low:+.3f}, {scale * d.high:+.3f}])").replace(".000%", "%")


def learning_line(report: LearningReport) -> str:
    """The summary's last line, for scripts (exact format; see the RPT completion-format issue)."""
    p = report.probe
    t = report.tokens.get("expected") or report.positions.get("all", {}).get("expected")
    if p is None or t is None:
        return "learning: not measured (no probe rows or no held-out documents)"
    return (f"learning: probe reward {p.before:.3f} -> {p.after:.3f} (diff {p.diff:+.3f}, 95% CI "
            f"[{p.low:+.3f}, {p.high:+.3f}]); held-out expected accuracy {100 * t.before:.1f}% -> "
            f"{100 * t.after:.1f}% (diff {100 * t.diff:+.2f} pts, 95% CI [{100 * t.low:+.2f}, {100 * t.high:+.2f}])")


def probe_rewards(model, tokenizer, rows: list[dict], reward_funcs, reward_weights, *, samples: int,
                  max_new_tokens: int, temperature: float, top_p: float = 1.0, top_k: int | None = 0,
                  seed: int = 0) -> list[float]:
    """Total reward of `samples` completions per row (row-major), sampled and scored as the run does."""
    from rl.train.signal_check import combine_rewards, sample_completions, score_completions

    prompts = [row["prompt"] for row in rows]
    completions, completion_ids = sample_completions(model, tokenizer, prompts, samples, max_new_tokens=max_new_tokens,
                                                     temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    return combine_rewards(score_completions(rows, completions, completion_ids, reward_funcs), reward_weights)


def position_values(model, tokenizer, rows: list[dict], temperature: float, max_context_tokens: int | None,
                    batch_size: int = 8) -> list[dict]:
    from rl.eval.next_token import encode_contexts
    from rl.eval.metrics import position_metrics

    seqs = encode_contexts(tokenizer, [r["context"] for r in rows], max_context_tokens)
    return position_metrics(model, tokenizer, seqs, [(r["continuation"], r["boundaries"]) for r in rows],
                            temperature=temperature, batch_size=batch_size)


def compare_positions(rows: list[dict], before: list[dict], after: list[dict], *, seed: int = 0) -> dict:
    """split -> metric -> PairedDiff for held-out RPT positions (nested entropy splits)."""
    out: dict[str, dict[str, PairedDiff]] = {}
    for split, threshold in SPLITS:
        idx = [i for i, r in enumerate(rows) if threshold is None or r["entropy"] > threshold]
        if not idx:
            continue
        groups = [rows[i].get("doc_id", i) for i in idx]
        metrics = {}
        for key in ("expected", "top1", "nll"):
            keep = [j for j, i in enumerate(idx) if before[i][key] is not None and after[i][key] is not None]
            if keep:
                metrics[key] = paired_bootstrap([before[idx[j]][key] for j in keep], [after[idx[j]][key] for j in keep],
                                                [groups[j] for j in keep], seed=seed)
        out[split] = metrics
    return out


def compare_documents(before: list[dict], after: list[dict], *, seed: int = 0) -> dict[str, PairedDiff]:
    """metric -> PairedDiff over every token of the held-out documents (per-document sums from
    `document_metrics`; each document is one bootstrap group)."""
    counts = [d["tokens"] for d in before]
    return {key: paired_bootstrap_sums([d[key] for d in before], [d[key] for d in after], counts, seed=seed)
            for key in ("expected", "top1", "nll")}


def plot_rewards(log_history: list[dict], path: Path, title: str = "batch reward per step") -> Path | None:
    """PNG of the mean batch reward at each logged training step (None when nothing was logged)."""
    points = [(e["step"], e["reward"]) for e in log_history if "reward" in e and "train_runtime" not in e]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rewards = zip(*points)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot(steps, rewards, marker="o", markersize=3, linewidth=1, label="batch mean")
    if len(rewards) >= 5:
        width = max(3, len(rewards) // 8)
        smooth = [sum(rewards[max(0, i - width + 1):i + 1]) / len(rewards[max(0, i - width + 1):i + 1])
                  for i in range(len(rewards))]
        ax.plot(steps, smooth, linewidth=2, label=f"running mean ({width} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_report(report: LearningReport, path: Path, extra: dict | None = None) -> None:
    payload = {**(extra or {}), **report.as_dict()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
