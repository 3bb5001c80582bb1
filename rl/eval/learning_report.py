"""Did the run learn? Paired before/after measurements with 95% CIs (used by `make demo` and bench/).

Every measurement is paired (the same units scored with the base model and the trained one) and its
interval is a paired bootstrap over documents (rl/eval/stats.py). Two kinds of metric:

* temperature-fair (a pure change of temperature, logits / c, cannot improve them): greedy top-1,
  and the calibrated NLL: each model's temperature is fitted to minimise its NLL on training data
  (never held-out data; rl/eval/metrics.py `fit_temperature`) and applied on held-out: for held-out
  tokens on tokens of training documents, for held-out RPT positions on the training RPT rows. The
  fitted temperature is treated as fixed: the paired CI does not include its estimation noise, so
  a small calibration set (a few dozen rows) can move the calibrated NLL by itself.
* sharpening-inclusive: the probe reward (training rows, `samples` completions each from both
  models with the run's sampling settings and seed, scored with the run's rewards), the expected
  accuracy of the true token at the sampling temperature, and the NLL at T = 1. Sharpening a
  distribution where its top token is usually right raises the first two without teaching anything.

Units: held-out RPT positions (rows of documents never trained on) and every token of the held-out
documents, each by nested entropy split (all, easy > 0.5, medium > 1.0, hard > 1.5 nats). The token
splits use the proxy's entropy at each token (the model that chose the RPT positions, recomputed
teacher-forced), so the hard split has hundreds of tokens where the RPT rows have dozens. A split
whose units are the same as an earlier split's is printed as "same as ...".

The sharpening share: the base model at the temperature T* at which its mean entropy over a split
equals the trained model's at the sampling temperature (found on a log-T grid, interpolated), its
expected accuracy there, and the trained model's gain over that (paired CI); the share of the
fixed-T gain that sharpening alone gives is (base at T* - base at T) / (trained at T - base at T).

`learning_line` is the one line scripts read (format in its docstring). The batch-reward curve of
the run is drawn to a PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rl.eval.stats import PairedDiff, paired_bootstrap, paired_bootstrap_sums
from rl.eval.next_token import encode_contexts

SPLITS = (("all", None), ("easy", 0.5), ("medium", 1.0), ("hard", 1.5))
FAIR_SPLIT = "hard"  # the split the learning line's temperature-fair clause reports ("all" when it is empty)
# (key, label, scale, unit) of each metric, temperature-fair first
FAIR_METRICS = (("top1", "top-1", 100.0, " pts"), ("nll_cal", "calibrated NLL", 1.0, ""))
SHARP_METRICS = (("expected", "expected acc. at T={T:g}", 100.0, " pts"), ("nll", "NLL at T=1", 1.0, ""))


@dataclass
class LearningReport:
    probe: PairedDiff | None = None
    positions: dict[str, dict[str, PairedDiff]] = field(default_factory=dict)  # split -> metric -> diff
    tokens: dict[str, PairedDiff] = field(default_factory=dict)  # metric -> diff over all held-out tokens
    token_splits: dict[str, dict] = field(default_factory=dict)  # split -> {threshold, count, metrics, sharpening}
    temperature: float = 1.0
    calibration: dict = field(default_factory=dict)  # {"before": T, "after": T, "units": n, "on": what}
    probe_rows: int = 0
    probe_samples: int = 0
    heldout_documents: int = 0

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature, "probe_rows": self.probe_rows, "probe_samples": self.probe_samples,
            "heldout_documents": self.heldout_documents, "calibration": self.calibration,
            "probe_reward": self.probe.as_dict() if self.probe else None,
            "heldout_positions": {s: {m: d.as_dict() for m, d in ms.items()} for s, ms in self.positions.items()},
            "heldout_tokens": {m: d.as_dict() for m, d in self.tokens.items()},
            "heldout_token_splits": {
                s: {"threshold": e["threshold"], "count": e["count"],
                    "metrics": {m: d.as_dict() for m, d in e["metrics"].items()},
                    "sharpening": _sharpening_dict(e.get("sharpening"))}
                for s, e in self.token_splits.items()},
        }

    def format(self) -> str:
        lines = []
        if self.probe is not None:
            lines.append(f"probe reward ({self.probe_rows} training rows x {self.probe_samples} samples, paired): "
                         + _fmt(self.probe, 1.0, ""))
        cal = self.calibration
        if cal.get("before") is not None and cal.get("after") is not None:
            line = (f"temperatures: sampling T={self.temperature:g}; NLL-calibrated T (never fitted on held-out data) "
                    f"for held-out tokens, on {cal['units']} {cal.get('on', 'training RPT positions')}: base "
                    f"{cal['before']:.3f}, trained {cal['after']:.3f}")
            rows = cal.get("positions") or {}
            if rows.get("before") is not None and rows.get("after") is not None and rows.get("on") != cal.get("on"):
                line += (f"; for RPT positions, on {rows['units']} {rows['on']}: base {rows['before']:.3f}, "
                         f"trained {rows['after']:.3f}")
            lines.append(line)
        if not (self.token_splits or self.positions):
            return "\n".join(lines)
        lines.append("held-out, base -> trained (diff, 95% CI from a paired bootstrap over documents); "
                     "temperature-fair metrics cannot gain from a pure temperature change, sharpening-inclusive ones can:")
        printed: dict[tuple, str] = {}
        for split, entry in self.token_splits.items():
            label = (f"all {entry['count']} tokens of {self.heldout_documents} held-out documents" if split == "all"
                     else f"held-out tokens, {split} (proxy entropy > {entry['threshold']:g}, {entry['count']} tokens)")
            key = ("tokens", entry["count"])
            if not entry["count"]:
                limit = "" if entry["threshold"] is None else f" (proxy entropy > {entry['threshold']:g})"
                lines.append(f"  held-out tokens, {split}{limit}: no tokens")
                continue
            if key in printed:
                lines.append(f"  held-out tokens, {split}: same as {printed[key]}")
                continue
            printed[key] = split
            lines.append(f"  {label}:")
            lines += ["    " + line for line in self._metric_lines(entry["metrics"])]
            if entry.get("sharpening"):
                lines.append("    " + _sharpening_line(entry["sharpening"], self.temperature))
        for split, metrics in self.positions.items():
            units = max((d.units for d in metrics.values()), default=0)
            key = ("positions", units)
            if key in printed:
                lines.append(f"  held-out RPT positions, {split}: same as {printed[key]}")
                continue
            printed[key] = split
            lines.append(f"  held-out RPT positions, {split} ({units} positions):")
            lines += ["    " + line for line in self._metric_lines(metrics)]
        return "\n".join(lines)

    def _metric_lines(self, metrics: dict[str, PairedDiff]) -> list[str]:
        out = []
        for title, table in (("temperature-fair", FAIR_METRICS), ("sharpening-inclusive", SHARP_METRICS)):
            cells = [f"{name.format(T=self.temperature)} " + _fmt(metrics[key], scale, unit)
                     for key, name, scale, unit in table if key in metrics]
            if cells:
                out.append(f"{title}: " + "; ".join(cells))
        return out


def _fmt(d: PairedDiff, scale: float, unit: str) -> str:
    pct = "%" if unit else ""
    return (f"{scale * d.before:.3f}{pct} -> {scale * d.after:.3f}{pct} (diff {scale * d.diff:+.3f}{unit}, "
            f"95% CI [{scale * d.low:+.3f}, {scale * d.high:+.3f}])").replace(".000%", "%")


def _sharpening_dict(sharp: dict | None) -> dict | None:
    if not sharp:
        return None
    return {k: (v.as_dict() if isinstance(v, PairedDiff) else v) for k, v in sharp.items()}


def _sharpening_line(sharp: dict, temperature: float) -> str:
    if sharp.get("entropy_match_temperature") is None:
        return (f"sharpening: the base's mean entropy does not reach the trained model's "
                f"({sharp['trained_entropy']:.3f} nats at T={temperature:g}) on the temperature grid")
    gain = sharp["gain_over_matched"]
    share = sharp.get("share")
    acc_t = sharp.get("accuracy_match_temperature")
    return (f"sharpening: the base at T={sharp['entropy_match_temperature']:.3f} has the trained model's mean "
            f"entropy at T={temperature:g} ({sharp['trained_entropy']:.3f} nats) and expected acc. "
            f"{100 * gain.before:.2f}%; trained minus that {100 * gain.diff:+.2f} pts "
            f"(95% CI [{100 * gain.low:+.2f}, {100 * gain.high:+.2f}]); share of the fixed-T gain that sharpening "
            f"alone gives: {'n/a' if share is None else f'{100 * share:.0f}%'}; the base matches the trained "
            f"model's expected acc. at T={'n/a (outside the grid)' if acc_t is None else f'{acc_t:.3f}'}")


def fair_clause_split(report: LearningReport) -> str | None:
    """The token split the learning line's temperature-fair clause reports: FAIR_SPLIT, or "all"
    when the hard split has no tokens (None when no token split was measured)."""
    splits = report.token_splits
    if splits.get(FAIR_SPLIT, {}).get("count"):
        return FAIR_SPLIT
    return "all" if splits.get("all", {}).get("count") else None


def learning_line(report: LearningReport) -> str:
    """The summary's last line, for scripts. Exact format (one line; S is `hard` or `all`):

    `learning: temperature-fair (held-out S tokens[, proxy entropy > X], n=N): top-1 A% -> B% (diff D pts,
    95% CI [L, H]), calibrated NLL A -> B (diff D, 95% CI [L, H]); sharpening-inclusive (all N held-out
    tokens): expected accuracy at T=T A% -> B% (diff D pts, 95% CI [L, H]), probe reward A -> B (diff D,
    95% CI [L, H])`

    The first clause is the temperature-fair gain (greedy top-1 and calibrated NLL on the hard split
    of all held-out tokens, `all` when that split is empty); the second keeps the sharpening-inclusive
    figures. Percentages and points have 2 decimals, NLL and reward 3, signed diffs and bounds.
    A calibrated NLL that could not be fitted reads `calibrated NLL n/a`."""
    p = report.probe
    split = fair_clause_split(report)
    if p is None or split is None or "expected" not in report.tokens:
        return "learning: not measured (no probe rows or no held-out documents)"
    entry = report.token_splits[split]
    top1, cal = entry["metrics"]["top1"], entry["metrics"].get("nll_cal")
    where = f"held-out {split} tokens" + (f", proxy entropy > {entry['threshold']:g}" if entry["threshold"] else "")
    cal_text = "calibrated NLL n/a" if cal is None else f"calibrated NLL {_pair(cal, 1.0, '', 3)}"
    t = report.tokens["expected"]
    return (f"learning: temperature-fair ({where}, n={entry['count']}): top-1 {_pair(top1, 100.0, ' pts', 2)}, "
            f"{cal_text}; sharpening-inclusive (all {t.units} held-out tokens): expected accuracy at "
            f"T={report.temperature:g} {_pair(t, 100.0, ' pts', 2)}, probe reward {_pair(p, 1.0, '', 3)}")


def _pair(d: PairedDiff, scale: float, unit: str, digits: int) -> str:
    pct = "%" if unit else ""
    f = f"{{:.{digits}f}}"
    g = f"{{:+.{digits}f}}"
    return (f"{f.format(scale * d.before)}{pct} -> {f.format(scale * d.after)}{pct} (diff {g.format(scale * d.diff)}"
            f"{unit}, 95% CI [{g.format(scale * d.low)}, {g.format(scale * d.high)}])")


def position_values(model, tokenizer, rows: list[dict], temperature: float, max_context_tokens: int | None,
                    batch_size: int = 8, calibrated_temperature: float | None = None) -> list[dict]:
    from rl.eval.metrics import position_metrics

    seqs = encode_contexts(tokenizer, [r["context"] for r in rows], max_context_tokens)
    return position_metrics(model, tokenizer, seqs, [(r["continuation"], r["boundaries"]) for r in rows],
                            temperature=temperature, batch_size=batch_size,
                            calibrated_temperature=calibrated_temperature)


def calibration_temperature(model, tokenizer, rows: list[dict], max_context_tokens: int | None,
                            batch_size: int = 8) -> tuple[float | None, int]:
    """(T minimising the model's mean NLL of the first true token over `rows`, units with a target):
    the temperature the calibrated NLL applies on held-out data; (None, 0) without usable rows."""
    from rl.eval.metrics import fit_temperature, position_logits

    if not rows:
        return None, 0
    seqs = encode_contexts(tokenizer, [r["context"] for r in rows], max_context_tokens)
    logits, firsts = position_logits(model, tokenizer, seqs, [(r["continuation"], r["boundaries"]) for r in rows],
                                     batch_size=batch_size)
    units = sum(1 for f in firsts if f)
    return (fit_temperature(logits, firsts), units) if units else (None, 0)


def model_values(model, tokenizer, *, calibration_rows: list[dict], heldout_rows: list[dict], texts: list[str],
                 temperature: float, max_context_tokens: int | None, grid=None, proxy=None,
                 window: int = 512, calibration_texts: list[str] | None = None,
                 calibration_tokens: int = 1024) -> dict:
    """Everything the report needs from one model: its calibrated temperatures, its values at the
    held-out RPT positions and at every token of `texts` (rl/eval/metrics.py `token_metrics`, with
    `grid` for the base model's sharpening match and `proxy` = (kind, k) when this model is the proxy
    whose entropy splits the tokens).

    Calibration never sees held-out data: the RPT positions' temperature is fitted on
    `calibration_rows` (training rows); the tokens' on up to `calibration_tokens` tokens of
    `calibration_texts` (training documents: the same kind of text as the held-out tokens, where
    the high-entropy training rows would pick a temperature for hard positions only), or on the
    rows when no texts are given."""
    from rl.eval.metrics import fit_temperature, sample_token_logits, token_metrics

    t_cal, units = calibration_temperature(model, tokenizer, calibration_rows, max_context_tokens)
    t_tok, tok_units, tok_on = t_cal, units, "training RPT positions"
    if calibration_texts:
        logits, targets = sample_token_logits(model, tokenizer, calibration_texts, max_tokens=calibration_tokens,
                                              window=window)
        if len(targets):
            t_tok, tok_units, tok_on = fit_temperature(logits, targets), int(len(targets)), "training-document tokens"
        del logits
    return {
        "calibrated_temperature": t_cal, "calibration_units": units,
        "token_calibrated_temperature": t_tok, "token_calibration_units": tok_units, "token_calibration_on": tok_on,
        "positions": position_values(model, tokenizer, heldout_rows, temperature, max_context_tokens,
                                     calibrated_temperature=t_cal) if heldout_rows else [],
        "tokens": token_metrics(model, tokenizer, texts, temperature=temperature, calibrated_temperature=t_tok,
                                grid=grid, proxy=proxy, window=window) if texts else [],
        "grid": list(grid) if grid else None,
    }


def compare_positions(rows: list[dict], before: list[dict], after: list[dict], *, seed: int = 0) -> dict:
    """split -> metric -> PairedDiff for held-out RPT positions (nested entropy splits)."""
    out: dict[str, dict[str, PairedDiff]] = {}
    for split, threshold in SPLITS:
        idx = [i for i, r in enumerate(rows) if threshold is None or r["entropy"] > threshold]
        if not idx:
            continue
        groups = [rows[i].get("doc_id", i) for i in idx]
        metrics = {}
        for key in ("top1", "nll_cal", "expected", "nll"):
            keep = [j for j, i in enumerate(idx) if before[i].get(key) is not None and after[i].get(key) is not None]
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


def compare_tokens(before: list[dict], after: list[dict], proxy_entropy: list, *, grid=None,
                   seed: int = 0) -> dict[str, dict]:
    """split -> {threshold, count, metrics: metric -> PairedDiff, sharpening} over every held-out token
    (per-token arrays from `token_metrics`, one list entry per document; `proxy_entropy` per document
    aligned with them). Tokens are split by the proxy's entropy; each document is one bootstrap
    group. `sharpening` (when the base has `grid_entropy`/`grid_expected` on `grid`): see the module doc."""
    import numpy as np

    out: dict[str, dict] = {}
    docs = [d for d in range(len(before)) if len(before[d].get("top1", ()))]
    have_proxy = proxy_entropy is not None and all(proxy_entropy[d] is not None for d in docs)
    for split, threshold in SPLITS:
        if threshold is not None and not have_proxy:  # no proxy entropy: only the `all` split
            continue
        masks = {d: (np.ones(len(before[d]["top1"]), dtype=bool) if threshold is None
                     else np.asarray(proxy_entropy[d]) > threshold) for d in docs}
        kept = [d for d in docs if masks[d].any()]
        count = int(sum(masks[d].sum() for d in kept))
        if not count:
            out[split] = {"threshold": threshold, "count": 0, "metrics": {}, "sharpening": None}
            continue
        counts = [int(masks[d].sum()) for d in kept]
        metrics = {}
        for key in ("top1", "nll_cal", "expected", "nll"):
            if all(key in before[d] and key in after[d] for d in kept):
                metrics[key] = paired_bootstrap_sums([float(before[d][key][masks[d]].sum()) for d in kept],
                                                     [float(after[d][key][masks[d]].sum()) for d in kept],
                                                     counts, seed=seed)
        sharpening = None
        if grid and all("grid_entropy" in before[d] for d in kept):
            sharpening = sharpening_share(
                grid, [before[d]["grid_entropy"][:, masks[d]].sum(axis=1) for d in kept],
                [before[d]["grid_expected"][:, masks[d]].sum(axis=1) for d in kept],
                [float(after[d]["entropy"][masks[d]].sum()) for d in kept],
                [float(after[d]["expected"][masks[d]].sum()) for d in kept],
                [float(before[d]["expected"][masks[d]].sum()) for d in kept], counts, seed=seed)
        out[split] = {"threshold": threshold, "count": count, "metrics": metrics, "sharpening": sharpening}
    return out


def sharpening_share(grid, base_entropy_sums, base_expected_sums, trained_entropy_sums, trained_expected_sums,
                     base_expected_at_t, counts, *, seed: int = 0) -> dict:
    """How much of a fixed-T expected-accuracy gain sharpening alone gives (per-document sums over
    the split's tokens; the base's on `grid`, the trained model's at the sampling temperature):
    entropy_match_temperature T* (the base's mean entropy there equals the trained model's),
    gain_over_matched (PairedDiff: base at T* -> trained), share, accuracy_match_temperature."""
    import numpy as np

    from rl.eval.metrics import at_match, match_temperature, matched_temperature

    total = float(sum(counts))
    base_h = np.sum(base_entropy_sums, axis=0) / total  # mean entropy at each grid temperature
    base_x = np.sum(base_expected_sums, axis=0) / total
    trained_h = sum(trained_entropy_sums) / total
    trained_x = sum(trained_expected_sums) / total
    out = {"trained_entropy": trained_h, "entropy_match_temperature": None, "gain_over_matched": None,
           "share": None, "accuracy_match_temperature": None}
    acc_match = match_temperature(grid, list(base_x), trained_x)
    if acc_match is not None:
        out["accuracy_match_temperature"] = matched_temperature(grid, acc_match)
    match = match_temperature(grid, list(base_h), trained_h)
    if match is None:
        return out
    at_star = [float(at_match(list(doc), match)) for doc in base_expected_sums]
    out["entropy_match_temperature"] = matched_temperature(grid, match)
    out["gain_over_matched"] = paired_bootstrap_sums(at_star, trained_expected_sums, counts, seed=seed)
    base_t = sum(base_expected_at_t) / total
    fixed_gain = trained_x - base_t
    if abs(fixed_gain) > 1e-12:
        out["share"] = (sum(at_star) / total - base_t) / fixed_gain
    return out


def build_report(*, before: dict, after: dict, heldout_rows: list[dict], proxy_entropy: list | None,
                 temperature: float, probe: PairedDiff | None = None, probe_rows: int = 0, probe_samples: int = 0,
                 calibration_on: str = "training RPT positions", seed: int = 0) -> LearningReport:
    """The report from two `model_values` results (base = before, trained = after). `proxy_entropy`
    (per held-out document, aligned with the token arrays) splits the tokens; None: the base's own
    `proxy_entropy` arrays."""
    report = LearningReport(temperature=temperature, probe=probe, probe_rows=probe_rows, probe_samples=probe_samples,
                            heldout_documents=len(before["tokens"]))
    report.calibration = {
        "before": before.get("token_calibrated_temperature", before["calibrated_temperature"]),
        "after": after.get("token_calibrated_temperature", after["calibrated_temperature"]),
        "units": min(before.get("token_calibration_units", before["calibration_units"]),
                     after.get("token_calibration_units", after["calibration_units"])),
        "on": before.get("token_calibration_on", calibration_on),
        "positions": {"before": before["calibrated_temperature"], "after": after["calibrated_temperature"],
                      "units": min(before["calibration_units"], after["calibration_units"]), "on": calibration_on}}
    if heldout_rows:
        report.positions = compare_positions(heldout_rows, before["positions"], after["positions"], seed=seed)
    if before["tokens"]:
        if proxy_entropy is None:
            proxy_entropy = [d.get("proxy_entropy") for d in before["tokens"]]
        report.token_splits = compare_tokens(before["tokens"], after["tokens"], proxy_entropy, grid=before["grid"],
                                             seed=seed)
        report.tokens = dict(report.token_splits["all"]["metrics"])
    return report


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
