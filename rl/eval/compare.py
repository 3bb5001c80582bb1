"""`rl eval next-token --compare`: two models on the same rows, side by side, with paired differences.

Each model alone keeps its 95% Wilson interval (rl/eval/next_token.py). The difference of the two is a
paired comparison (same positions), so its interval comes from the paired bootstrap of
rl/eval/stats.py, resampling whole documents (`doc_id`) when the rows have them, else positions.

Temperature-fair metrics (standard mode; a pure change of temperature cannot improve them): greedy
top-1 (`accuracy`), and the calibrated NLL: each model's temperature fitted to minimise its NLL of
the first true token on rows that are not the ones it is applied to (rl/eval/metrics.py
`fit_temperature`): on `--calibration-data` (e.g. the training rows) when given, else cross-fitted
over two halves of the evaluated documents (each half's rows get the temperature fitted on the
other half). Expected accuracy at T and NLL at T = 1 are shown too, marked as sharpening-inclusive,
with the sharpening share per split: the second model (before) at the temperature where its mean
entropy equals the first's at T (per-row entropy and expected accuracy on a log-T grid, from the
logits the calibration holds), and the first model's gain over that with its paired CI.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rl.eval.learning_report import sharpening_share
from rl.eval.next_token import (
    NextTokenSettings, encode_contexts, evaluate_next_token, load_eval_rows, load_model, split_indices,
)
from rl.eval.stats import group_sums, paired_bootstrap

# Per-row values compared, with the label the table gives them.
METRICS = (("score", "accuracy"), ("expected", "expected_accuracy"), ("nll", "nll"), ("nll_cal", "calibrated_nll"))
CALIBRATION_MAX_FLOATS = 2 ** 28  # logits held at once for a temperature fit (1 GiB of float32)


def calibrate_rows(model, tokenizer, rows: list[dict], calibration_rows: list[dict] | None = None, *,
                   max_context_tokens: int | None = None, batch_size: int = 8,
                   temperature: float | None = None) -> dict:
    """Calibrated NLL of the first true token of each row: {"method", "temperatures", "units",
    "nll_cal": per row (None without a single-token target), "note"}. With `calibration_rows` the
    temperature is fitted on them (at most CALIBRATION_MAX_FLOATS logits, rows evenly sampled);
    without, 2-fold cross-fitting by document (`doc_id`, else row). method None (and a note) when it
    cannot be done: one document only, or too many rows to hold their logits. With `temperature`,
    also "grid": per row the entropy and expected accuracy at each temperature of
    `temperature_grid(temperature)` (for the sharpening share of `compare_results`)."""
    from rl.eval.metrics import (distribution_stats, fit_temperature, nll_at_temperature, position_logits,
                                 temperature_grid, token_bytes_index, token_candidates)

    grid = temperature_grid(temperature) if temperature else None
    index = token_bytes_index(tokenizer)
    stats: dict = {"temperatures": grid, "entropy": [None] * len(rows), "expected": [None] * len(rows)}

    def grid_stats(logits, row_ids):
        if grid is None:
            return
        rewarded = [token_candidates(index, rows[i]["continuation"], rows[i]["boundaries"])[1] for i in row_ids]
        per_t = [distribution_stats(logits, rewarded, t) for t in grid]
        for j, i in enumerate(row_ids):
            stats["entropy"][i] = [float(e[j]) for e, _ in per_t]
            stats["expected"][i] = [float(x[j]) if rewarded[j] else 0.0 for _, x in per_t]

    def with_grid(result):
        if grid is not None and all(v is not None for v in stats["entropy"]):
            result["grid"] = stats
        return result

    if max_context_tokens is None:
        max_context_tokens = getattr(model.config, "max_position_embeddings", None)
    vocab = int(model.get_output_embeddings().weight.shape[0])

    def logits_of(subset):
        seqs = encode_contexts(tokenizer, [r["context"] for r in subset], max_context_tokens)
        return position_logits(model, tokenizer, seqs, [(r["continuation"], r["boundaries"]) for r in subset],
                               batch_size=batch_size)

    def nll_list(values):
        return [None if v != v else float(v) for v in values.tolist()]  # NaN: no target

    cap = max(1, CALIBRATION_MAX_FLOATS // vocab)
    if calibration_rows is not None:
        picked = calibration_rows if len(calibration_rows) <= cap else [
            calibration_rows[int(i * len(calibration_rows) / cap)] for i in range(cap)]
        logits, firsts = logits_of(picked)
        units = sum(1 for f in firsts if f)
        if not units:
            return {"method": None, "note": "no calibration row has a single-token target", "nll_cal": [None] * len(rows)}
        fitted = fit_temperature(logits, firsts)
        del logits
        out: list = []
        for start in range(0, len(rows), cap):
            part, part_firsts = logits_of(rows[start:start + cap])
            out += nll_list(nll_at_temperature(part, part_firsts, fitted))
            grid_stats(part, list(range(start, start + len(part_firsts))))
        return with_grid({"method": "calibration data", "temperatures": [fitted], "units": units, "nll_cal": out,
                          "note": f"T fitted on {units} calibration rows"})
    if len(rows) > cap:
        return {"method": None, "nll_cal": [None] * len(rows),
                "note": f"{len(rows)} rows x {vocab} logits are too many to hold for cross-fitting; "
                        "give --calibration-data (e.g. training rows) or --limit"}
    fold = crossfit_folds(rows)
    if len(set(fold)) < 2:
        return {"method": None, "nll_cal": [None] * len(rows),
                "note": "one document only: nothing to cross-fit a temperature on; give --calibration-data"}
    logits, firsts = logits_of(rows)
    out = [None] * len(rows)
    temperatures, units = [], 0
    for k in (0, 1):
        fit_idx = [i for i in range(len(rows)) if fold[i] != k and firsts[i]]
        apply_idx = [i for i in range(len(rows)) if fold[i] == k]
        if not fit_idx:
            return {"method": None, "nll_cal": [None] * len(rows),
                    "note": "a half of the documents has no single-token target; give --calibration-data"}
        fitted = fit_temperature(logits[fit_idx], [firsts[i] for i in fit_idx])
        temperatures.append(fitted)
        units += len(fit_idx)
        values = nll_list(nll_at_temperature(logits[apply_idx], [firsts[i] for i in apply_idx], fitted))
        for i, v in zip(apply_idx, values):
            out[i] = v
    grid_stats(logits, list(range(len(rows))))
    return with_grid({"method": "cross-fitted", "temperatures": temperatures, "units": units, "nll_cal": out,
                      "note": "T per half of the documents, fitted on the other half"})


def crossfit_folds(rows: list[dict]) -> list[int]:
    """Fold 0 or 1 per row: documents (`doc_id`, else each row its own) ordered by a hash of their
    id and dealt alternately, so the halves differ by at most one document and never depend on
    row order."""
    keys = [str(r.get("doc_id")) if r.get("doc_id") is not None else f"row{i}" for i, r in enumerate(rows)]
    order = sorted(set(keys), key=lambda k: (hashlib.sha256(k.encode("utf-8")).hexdigest(), k))
    fold_of = {k: n % 2 for n, k in enumerate(order)}
    return [fold_of[k] for k in keys]


def add_calibration(result: dict, calibration: dict) -> dict:
    """Put `calibrate_rows`'s values into an evaluate_next_token result: per_row nll_cal, each split's
    mean (`calibrated_nll`) and result["calibration"] (method, temperatures, note)."""
    values = calibration["nll_cal"]
    grid = calibration.get("grid")
    for row in result.get("per_row", []):
        row["nll_cal"] = values[row["index"]]
        if grid is not None:
            row["grid_entropy"] = grid["entropy"][row["index"]]
            row["grid_expected"] = grid["expected"][row["index"]]
    idx = split_indices([r["entropy"] for r in result["per_row"]], tuple(result["thresholds"].values())) \
        if result.get("per_row") else {}
    for name, members in idx.items():
        kept = [values[i] for i in members if values[i] is not None]
        result["splits"][name]["calibrated_nll"] = sum(kept) / len(kept) if kept else None
    result["calibration"] = {k: v for k, v in calibration.items() if k not in ("nll_cal", "grid")}
    if grid is not None:
        result["calibration"]["grid_temperatures"] = grid["temperatures"]
    return result


def evaluate_pair(model_path: str, compare_path: str, data, calibration_data=None,
                  settings=None) -> tuple[dict, dict]:
    """Both models of `--compare` on the same rows (standard mode), each loaded once: the next-token
    evaluation, then its calibrated NLL (`calibrate_rows`: on `calibration_data` rows, else
    cross-fitted); `settings` is the evaluation's NextTokenSettings."""
    settings = settings or NextTokenSettings()
    calibration_rows = None
    if calibration_data is not None:
        calibration_rows, _ = load_eval_rows(calibration_data, "standard")
    out = []
    for path in (model_path, compare_path):
        model, tokenizer = load_model(path, settings.device)
        result = evaluate_next_token(path, data, settings, model=model, tokenizer=tokenizer)
        rows, _ = load_eval_rows(data, "standard", settings.limit)
        calibration = calibrate_rows(model, tokenizer, rows, calibration_rows,
                                     max_context_tokens=settings.max_context_tokens,
                                     batch_size=settings.batch_size, temperature=settings.temperature)
        out.append(add_calibration(result, calibration))
        del model
    return out[0], out[1]


def compare_results(a: dict, b: dict, *, n_boot: int = 4000, seed: int = 0) -> dict:
    """Per split: accuracy (and pass@k) of a minus b; when both kept their rows (same rows), how many
    positions only a / only b got right, and the paired difference with its 95% CI for accuracy,
    expected accuracy and NLL (`paired`: {metric: {before, after, diff, ci95, groups, units}},
    where "after" is a and "before" is b)."""
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
        grid = (a.get("calibration") or {}).get("grid_temperatures")
        if grid and members and all(rows_a[i].get("grid_entropy") and rows_b[i].get("grid_entropy") for i in members):
            diff[name]["sharpening"] = _sharpening(grid, a["settings"]["temperature"], members, rows_a, rows_b, seed)
    return diff


def _sharpening(grid, temperature, members, rows_a, rows_b, seed) -> dict:
    """The sharpening share over `members` (rl/eval/learning_report.py `sharpening_share`): the
    second model (before) at the temperature where its mean entropy equals the first's at T."""
    import numpy as np

    center = min(range(len(grid)), key=lambda k: abs(grid[k] - temperature))
    groups = [rows_a[i].get("doc_id") if rows_a[i].get("doc_id") is not None else f"row{i}" for i in members]
    keys = list(dict.fromkeys(groups))
    where = {k: [j for j, g in enumerate(groups) if g == k] for k in keys}

    def per_doc(rows, field, k=None):
        return [np.sum([np.asarray(rows[members[j]][field]) if k is None else rows[members[j]][field][k]
                        for j in where[key]], axis=0) for key in keys]

    _, _, counts = group_sums([0.0] * len(groups), groups)
    out = sharpening_share(grid, per_doc(rows_b, "grid_entropy"), per_doc(rows_b, "grid_expected"),
                           [float(v) for v in per_doc(rows_a, "grid_entropy", center)],
                           [float(v) for v in per_doc(rows_a, "grid_expected", center)],
                           [float(v) for v in per_doc(rows_b, "grid_expected", center)], counts, seed=seed)
    return {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in out.items()}


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
    first_split = next(iter(results["splits"].values()))
    if mode == "standard" and "calibrated_nll" in first_split:
        out += ["", "temperature-fair (a pure change of temperature cannot improve these): greedy top-1 (above) and "
                "the calibrated NLL of the true token (nats) at each model's own fitted temperature: "
                + _calibration_note(results, compare)]
        cols3 = ["split", "entropy", "count", "calibrated NLL"]
        if diff is not None:
            cols3 += ["other: calibrated NLL", "difference [95% CI]"]
        lines3 = []
        for name, split in results["splits"].items():
            limit = "any" if split["threshold"] is None else f"> {split['threshold']!r}"
            cells = [name, limit, str(split["count"]), _num(split.get("calibrated_nll"))]
            if diff is not None:
                other = compare["splits"][name]
                cells += [_num(other.get("calibrated_nll")),
                          _diff_cell(diff[name].get("paired", {}).get("calibrated_nll"),
                                     _sub(split.get("calibrated_nll"), other.get("calibrated_nll")), 1.0, "")]
            lines3.append(cells)
        out += _grid(cols3, lines3)
    if mode == "standard" and "expected_accuracy" in first_split:
        out += ["", f"sharpening-inclusive: expected accuracy at T={settings.get('temperature')} (probability that one "
                "sampled token is right; sharpening alone raises it) and NLL of the true token at T=1 (nats)"]
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
        shown: dict[int, str] = {}
        for name, split in results["splits"].items():
            sharp = (diff or {}).get(name, {}).get("sharpening")
            if not sharp:
                continue
            if split["count"] in shown:
                out.append(f"sharpening, {name}: same as {shown[split['count']]}")
                continue
            shown[split["count"]] = name
            out.append(f"sharpening, {name}: " + _sharpening_text(sharp, settings.get("temperature")))
    note = "accuracy: greedy top-1, mean over positions, [95% Wilson interval]; splits are nested (easy ⊇ medium ⊇ hard)"
    if compare is not None:
        note += ("; difference: first model minus second (points), 95% CI from a paired bootstrap over documents")
    out.append(note)
    return "\n".join(out)


def _sharpening_text(sharp: dict, temperature) -> str:
    if sharp.get("entropy_match_temperature") is None:
        return "the second model's mean entropy does not reach the first's on the temperature grid"
    gain = sharp["gain_over_matched"]
    share = sharp.get("share")
    return (f"the second model at T={sharp['entropy_match_temperature']:.3f} has the first's mean entropy at "
            f"T={temperature} ({sharp['trained_entropy']:.3f} nats), expected acc. {100 * gain['before']:.1f}%; first "
            f"minus that {100 * gain['diff']:+.1f} pts [{100 * gain['ci95'][0]:+.1f}, {100 * gain['ci95'][1]:+.1f}]; "
            f"share of the fixed-T difference from sharpening alone: {'n/a' if share is None else f'{100 * share:.0f}%'}")


def _calibration_note(*results) -> str:
    notes = []
    for result in results:
        if result is None:
            continue
        cal = result.get("calibration") or {}
        temps = ", ".join(f"{t:.3f}" for t in cal.get("temperatures", []))
        what = f"T {temps} ({cal.get('note')})" if cal.get("method") else f"n/a ({cal.get('note')})"
        notes.append(f"{_label(result['model'])}: {what}")
    return "; ".join(notes)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
