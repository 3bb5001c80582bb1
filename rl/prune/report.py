"""Statistics and files of `rl prune`: SFT rows per keep ratio, the likelihood curve, category survival.

Survival of a token = (its deletion step + 1) / chain length, in (0, 1]: the fraction of the deletion
process it outlived (1 = deleted last). A category's survival curve gives, at each keep ratio r, the
fraction of its tokens still in the chain after pruning every chain to round(n * r) tokens. The paper
(arXiv 2601.03066) finds symbolic-math tokens survive longest and grammar and meta-discourse go first;
`PAPER_ORDER` is that ordering (longest-surviving first) as far as the paper states it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rl.prune.categories import CATEGORIES

PAPER_ORDER = "symbolic_math survives longest; function_grammar and meta_discourse are deleted first"
GRID = [i / 20 for i in range(21)]


def survival(ranks: list[int]) -> list[float]:
    n = len(ranks)
    return [(r + 1) / n for r in ranks]


def kept_mask(ranks: list[int], keep: float) -> list[bool]:
    """Which tokens survive pruning to round(n * keep) tokens (rank = deletion step)."""
    from rl.prune.pruner import keep_count

    n = len(ranks)
    return [r >= n - keep_count(n, keep) for r in ranks]


def category_stats(chains: list[dict], keeps: list[float]) -> dict:
    """Per category: token count, mean survival, kept fraction at each of `keeps` and over GRID.
    `chains`: dicts with `ranks` and `categories` (one per token)."""
    stats = {c: {"tokens": 0, "survival_sum": 0.0, "kept": {str(k): 0 for k in keeps}, "curve": [0] * len(GRID)}
             for c in CATEGORIES}
    for ch in chains:
        surv = survival(ch["ranks"])
        masks = {str(k): kept_mask(ch["ranks"], k) for k in keeps}
        grid = [kept_mask(ch["ranks"], r) for r in GRID]
        for i, cat in enumerate(ch["categories"]):
            s = stats[cat]
            s["tokens"] += 1
            s["survival_sum"] += surv[i]
            for k, m in masks.items():
                s["kept"][k] += m[i]
            for g, m in enumerate(grid):
                s["curve"][g] += m[i]
    out = {}
    for cat, s in stats.items():
        n = s["tokens"]
        out[cat] = {"tokens": n, "mean_survival": s["survival_sum"] / n if n else None,
                    "kept_fraction": {k: v / n if n else None for k, v in s["kept"].items()},
                    "survival_curve": [v / n if n else None for v in s["curve"]]}
    return out


def survival_table(stats: dict, keeps: list[float]) -> str:
    """Categories by mean survival (longest-surviving first), with the paper's ordering below."""
    rows = sorted(((c, s) for c, s in stats.items() if s["tokens"]), key=lambda cs: -cs[1]["mean_survival"])
    head = f"{'category':<17} {'tokens':>7} {'mean survival':>14} " + " ".join(f"kept@{k:g}".rjust(9) for k in keeps)
    lines = [head]
    for cat, s in rows:
        kept = " ".join(f"{s['kept_fraction'][str(k)]:9.2f}" for k in keeps)
        lines.append(f"{cat:<17} {s['tokens']:>7} {s['mean_survival']:>14.3f} {kept}")
    lines.append(f"ours (longest first): {' > '.join(c for c, _ in rows)}")
    lines.append(f"paper: {PAPER_ORDER}")
    return "\n".join(lines)


def sft_name(keep: float) -> str:
    """The SFT file of a keep ratio, relative to the output dir (two decimals: `rl prune` refuses ratios
    that would share one name)."""
    return f"sft/keep-{keep:.2f}.jsonl"


def write_sft(directory: Path, keep: float, rows: list[dict]) -> Path:
    """One TRL-ready prompt/completion JSONL (`datasets.load_dataset("json", ...)` reads it)."""
    path = directory / sft_name(keep)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"prompt": row["prompt"], "completion": row["completion"]}, ensure_ascii=False) + "\n")
    return path


def plot_curves(directory: Path, curve: dict, stats: dict) -> list[Path]:
    """likelihood_curve.png (mean answer log-likelihood vs keep ratio) and survival.png (by category)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = sorted(float(k) for k in curve)
    ax.plot(xs, [curve[str(x)]["mean"] for x in xs], marker="o")
    ax.set_xlabel("keep ratio")
    ax.set_ylabel("mean log p(answer | question, pruned chain)")
    ax.set_title("answer log-likelihood after pruning")
    fig.tight_layout()
    paths.append(directory / "likelihood_curve.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for cat, s in stats.items():
        if s["tokens"]:
            ax.plot(GRID, s["survival_curve"], label=f"{cat} ({s['tokens']})")
    ax.set_xlabel("keep ratio")
    ax.set_ylabel("fraction of the category's tokens kept")
    ax.set_title("survival by token category")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(directory / "survival.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
