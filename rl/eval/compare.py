"""`rl eval next-token --compare`: two models on the same rows, side by side, with paired differences.

Each model alone keeps its 95% Wilson interval (rl/eval/next_token.py). The difference of the two is a
paired comparison (same positions), so its interval comes from the paired bootstrap of
rl/eval/stats.py, resampling whole documents (`doc_id`) when the rows have them, else positions.
"""

from __future__ import annotations

from pathlib import Path

from rl.eval.next_token import split_indices

# Per-row values compared, with the label the table gives them.
METRICS = (("score", "accuracy"), ("expected", "expected_accuracy"), ("nll", "nll"))


def compare_results(a: dict, b: dict, *, n_boot: int = 4000, seed: int = 0) -> dict:
    """Per split: accuracy (and pass@k) of a minus b; when both kept their rows (same rows), how many
    positions only a / only b got right, and the paired difference with its 95% CI for accuracy,
    expected accuracy and NLL (`paired`: {metric: {before, after, diff, ci95, groups, units}},
    where "after" is a and "before" is b)."""
    from rl.eval.stats import paired_bootstrap

    diff = {}
    for name, split in a["splits"].items():
        other = b["splits"].get(name, {})
        entry = {"accuracy": _sub(split.get("accuracy"), other.get("accuracy"))}
        if "pass_at_k" in split and "pass_at_k" in other:
            entry["pass_at_k"] = _sub(split["pass_at_k"], other["pass_at_k"])
        diff[name] = entry
    rows_a = {r["index"]: r for r in a.get("per_row", [])}
    rows_b = {r["index"]: r for r in b.get("per_row", [])}
    if not rows_a or rows_a.keys() != rows_b.keys():
        return diff
    idx = split_indices([r["entropy"] for r in a["per_row"]], tuple(a["thresholds"].values()))
    for name, members in idx.items():
        diff[name]["only_first_correct"] = sum(1 for i in members if rows_a[i]["score"] >= 1 > rows_b[i]["score"])
        diff[name]["only_second_correct"] = sum(1 for i in members if rows_b[i]["score"] >= 1 > rows_a[i]["score"])
        paired = {}
        for key, label in METRICS:
            both = [i for i in members if rows_a[i].get(key) is not None and rows_b[i].get(key) is not None]
            if not both:
                continue
            groups = [rows_a[i].get("doc_id") if rows_a[i].get("doc_id") is not None else f"row{i}" for i in both]
            paired[label] = paired_bootstrap([rows_b[i][key] for i in both], [rows_a[i][key] for i in both], groups,
                                             n_boot=n_boot, seed=seed).as_dict()
        diff[name]["paired"] = paired
    return diff


def _sub(x, y):
    return None if x is None or y is None else x - y


def _label(name: str, width: int = 28) -> str:
    if len(name) <= width:
        return name
    tail = "/".join(Path(name).parts[-2:])
    return tail if len(tail) <= width else "…" + tail[-(width - 1):]


def _acc_cell(split: dict, k=None) -> str:
    if not split.get("count"):
        return "n/a"
    lo, hi = split["ci95"]
    cell = f"{100 * split['accuracy']:5.1f}% [{100 * lo:4.1f}, {100 * hi:4.1f}]"
    if split.get("pass_at_k") is not None:
        cell += f"  pass@{k} {100 * split['pass_at_k']:5.1f}%"
    return cell


def _diff_cell(paired: dict | None, fallback, scale: float = 100.0, unit: str = " pts") -> str:
    if paired:
        lo, hi = paired["ci95"]
        return f"{scale * paired['diff']:+.1f}{unit} [{scale * lo:+.1f}, {scale * hi:+.1f}]"
    return "n/a" if fallback is None else f"{scale * fallback:+.1f}{unit}"


def _grid(cols: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in lines)) for i, c in enumerate(cols)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [fmt(cols), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines]


def format_table(results: dict, compare: dict | None = None) -> str:
    """The per-split table: count, accuracy with its 95% Wilson interval (and pass@k in reasoning
    mode); with `compare`, a second model's columns and the paired difference (results − compare)
    with its 95% bootstrap CI. Standard mode adds expected accuracy at T and NLL per split."""
    mode = results["mode"]
    head = f"next-token accuracy ({mode} mode, {results['rows']} positions of {results['data']})"
    settings = results["settings"]
    if mode == "reasoning":
        head += f"; {settings['samples']} sample(s), pass@{settings['pass_k']}, T={settings['temperature']}"
    cols = ["split", "entropy", "count", _label(results["model"])]
    diff = None
    if compare is not None:
        cols += [_label(compare["model"]), "difference [95% CI]"]
        diff = compare_results(results, compare)
    lines = []
    for name, split in results["splits"].items():
        limit = "any" if split["threshold"] is None else f"> {split['threshold']!r}"
        cells = [name, limit, str(split["count"]), _acc_cell(split, settings.get("pass_k"))]
        if diff is not None:
            cells.append(_acc_cell(compare["splits"][name], compare["settings"].get("pass_k")))
            cells.append(_diff_cell(diff[name].get("paired", {}).get("accuracy"), diff[name]["accuracy"]))
        lines.append(cells)
    out = [head] + _grid(cols, lines)
    if mode == "standard" and "expected_accuracy" in next(iter(results["splits"].values())):
        out += ["", f"expected accuracy at T={settings.get('temperature')} (probability that one sampled token "
                "is right) and NLL of the true token (nats)"]
        cols2 = ["split", "entropy", "count", "expected acc.", "NLL"]
        if diff is not None:
            cols2 += ["other: expected acc.", "NLL", "difference expected [95% CI]", "difference NLL [95% CI]"]
        lines2 = []
        for name, split in results["splits"].items():
            limit = "any" if split["threshold"] is None else f"> {split['threshold']!r}"
            cells = [name, limit, str(split["count"]), _pct(split.get("expected_accuracy")), _num(split.get("nll"))]
            if diff is not None:
                other = compare["splits"][name]
                paired = diff[name].get("paired", {})
                cells += [_pct(other.get("expected_accuracy")), _num(other.get("nll")),
                          _diff_cell(paired.get("expected_accuracy"),
                                     _sub(split.get("expected_accuracy"), other.get("expected_accuracy"))),
                          _diff_cell(paired.get("nll"), _sub(split.get("nll"), other.get("nll")), 1.0, "")]
            lines2.append(cells)
        out += _grid(cols2, lines2)
    note = "accuracy: greedy top-1, mean over positions, [95% Wilson interval]; splits are nested (easy ⊇ medium ⊇ hard)"
    if compare is not None:
        note += ("; difference: first model minus second (points), 95% CI from a paired bootstrap over documents")
    out.append(note)
    return "\n".join(out)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
