"""Temperature-fair evidence in the learning report (rl/eval/learning_report.py): a pure temperature
change reads as no gain, the sharpening share, each split printed once, and an independent
recomputation of the calibrated NLL and top-1 from two saved models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rl.eval.learning_report import build_report, compare_tokens, learning_line, model_values
from rl.eval.metrics import distribution_stats, fit_temperature, nll_at_temperature, temperature_grid
from rl.eval.stats import paired_bootstrap
from tests.rl.eval.test_learning_report import LINE


def _doc_arrays(logits, targets, temperature, t_cal, grid=None):
    """What `token_metrics` keeps per token, computed from given logits."""
    entropy, expected = distribution_stats(logits, targets, temperature)
    out = {"top1": (logits.argmax(-1) == targets).double().numpy(),
           "nll": nll_at_temperature(logits, targets, 1.0).numpy(),
           "nll_cal": nll_at_temperature(logits, targets, t_cal).numpy(),
           "expected": expected.double().numpy(), "entropy": entropy.double().numpy()}
    if grid:
        stats = [distribution_stats(logits, targets, t) for t in grid]
        out["grid_entropy"] = torch.stack([e for e, _ in stats]).double().numpy()
        out["grid_expected"] = torch.stack([x for _, x in stats]).double().numpy()
    return out


def _synthetic(seed, n, v=30):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn((n, v), generator=gen)
    return logits, torch.multinomial(torch.softmax(logits / 1.2, -1), 1, generator=gen)[:, 0]


def test_a_pure_temperature_change_reads_as_no_fair_gain_and_all_sharpening():
    """Trained = base logits / 0.7 (sharper). Temperatures fitted on separate calibration units;
    held-out: 5 documents. Top-1 and calibrated NLL do not move, expected accuracy at T = 0.8 does,
    and the sharpening match puts the base at T = 0.8 * 0.7 with nothing left over."""
    c, temperature = 0.7, 0.8
    cal_logits, cal_targets = _synthetic(0, 300)
    t_base = fit_temperature(cal_logits, cal_targets)
    t_sharp = fit_temperature(cal_logits / c, cal_targets)
    grid = temperature_grid(temperature, step=0.02)
    before, after, proxy = [], [], []
    for doc in range(5):
        logits, targets = _synthetic(10 + doc, 60)
        before.append(_doc_arrays(logits, targets, temperature, t_base, grid))
        after.append(_doc_arrays(logits / c, targets, temperature, t_sharp))
        proxy.append(distribution_stats(logits, targets, 1.0)[0].numpy())
    splits = compare_tokens(before, after, proxy, grid=grid)
    for split in ("all", "hard"):
        metrics = splits[split]["metrics"]
        assert metrics["top1"].diff == 0.0
        assert metrics["nll_cal"].diff == pytest.approx(0.0, abs=1e-6)
        assert metrics["expected"].diff > 0.01 and metrics["expected"].excludes_zero  # the sharpening
        sharp = splits[split]["sharpening"]
        assert sharp["entropy_match_temperature"] == pytest.approx(temperature * c, rel=2e-3)
        assert sharp["gain_over_matched"].diff == pytest.approx(0.0, abs=5e-4)
        assert sharp["share"] == pytest.approx(1.0, abs=0.02)
        assert sharp["accuracy_match_temperature"] == pytest.approx(temperature * c, rel=5e-3)


def _report(proxy_values):
    rng = np.random.default_rng(0)
    docs = []
    for values in proxy_values:
        n = len(values)
        docs.append({"top1": (rng.random(n) < 0.5).astype(float), "nll": rng.random(n), "nll_cal": rng.random(n),
                     "expected": rng.random(n), "entropy": rng.random(n), "proxy_entropy": np.asarray(values)})
    values = {"calibrated_temperature": 1.0, "calibration_units": 10, "tokens": docs, "grid": None,
              "positions": [{"top1": 1.0, "nll": 1.0, "nll_cal": 1.0, "expected": 0.5}] * 4}
    rows = [{"entropy": e, "doc_id": f"d{i % 2}"} for i, e in enumerate([1.2, 1.3, 1.7, 2.0])]
    return build_report(before=values, after=values, heldout_rows=rows, proxy_entropy=None, temperature=0.8,
                        probe=paired_bootstrap([0.1, 0.2], [0.3, 0.2]), probe_rows=2, probe_samples=1)


def test_each_split_is_printed_once():
    """Every token and RPT position has entropy > 1 (as in the demo): all, easy and medium are the
    same units; easy and medium say so instead of repeating all's numbers."""
    text = _report([[1.2, 1.8, 2.5, 1.1], [1.6, 1.05, 3.0]]).format()
    assert "held-out tokens, easy: same as all" in text and "held-out tokens, medium: same as all" in text
    assert "held-out tokens, hard (proxy entropy > 1.5, 4 tokens):" in text
    assert "held-out RPT positions, easy: same as all" in text and "held-out RPT positions, medium: same as all" in text
    assert "held-out RPT positions, hard (2 positions):" in text
    assert text.count("temperature-fair: top-1") == 4  # all + hard tokens, all + hard positions
    # a split that differs is printed in full
    text = _report([[0.2, 0.7, 1.2, 1.8]]).format()
    assert "same as" not in text.split("RPT positions")[0]


# ---- an independent recomputation from two saved models --------------------------------------

DOCS = ["The cat sat on the mat and the dog sat on the log, then both of them went to sleep in the sun.",
        "One two three four five six seven eight nine ten, and then we count again from one to ten.",
        "Water boils at one hundred degrees and freezes at zero, which is why the pond is ice in winter.",
        "She opened the door, looked at the rain, and decided that the walk could wait until tomorrow."]


def _rows(tokenizer, texts, doc_ids, every=3):
    from rl.data.boundaries import split_at_token

    rows = []
    for text, doc_id in zip(texts, doc_ids):
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        for p in range(3, len(offsets) - 3, every):
            cut = split_at_token(text, offsets, p, 3, 64)
            if cut is not None:
                rows.append({"context": cut.context, "continuation": cut.continuation,
                             "boundaries": list(cut.boundaries), "entropy": 2.0, "doc_id": doc_id})
    return rows


def _first_token_ids(tokenizer):
    """bytes -> vocabulary ids decoding to them, by decoding every id (not through rl.eval.metrics)."""
    table: dict[bytes, list[int]] = {}
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if text and "\ufffd" not in text:
            table.setdefault(text.encode("utf-8"), []).append(i)
    return table


def _fit_by_bisection(logits, sets):
    """The calibrated temperature by bisection on the derivative of the mean NLL in beta = 1/T
    (float64; a different algorithm from the report's grid + golden section)."""
    z = logits.double()

    def slope(beta):
        total = 0.0
        for row, ids in enumerate(sets):
            p = torch.softmax(beta * z[row], -1)
            q = torch.softmax(beta * z[row, ids], -1)
            total += float((p * z[row]).sum() - (q * z[row, ids]).sum())
        return total

    lo, hi = 1 / 20.0, 1 / 0.05
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 1 / math.sqrt(lo * hi)


def _direct(model, tokenizer, cal_rows, texts, table, cal_texts):
    """Calibrated T on the calibration rows (RPT positions) and on every token of `cal_texts` (held-out
    tokens), then per held-out token top-1, NLL at that T and the renormalised top-16 entropy, each
    from one plain forward over the whole document."""
    contexts, sets = [], []
    for row in cal_rows:
        ids = table.get(row["continuation"].encode("utf-8")[: row["boundaries"][0]], [])
        if ids:
            contexts.append(tokenizer(row["context"])["input_ids"])
            sets.append(ids)
    with torch.no_grad():
        logits = torch.stack([model(torch.tensor([c])).logits[0, -1].float() for c in contexts])
    t_cal = _fit_by_bisection(logits, sets)
    tok_logits, tok_sets = [], []
    for text in cal_texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            tok_logits.append(model(torch.tensor([ids])).logits[0, :-1].float())
        tok_sets += [[i] for i in ids[1:]]
    t_tok = _fit_by_bisection(torch.cat(tok_logits), tok_sets)
    docs = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            z = model(torch.tensor([ids])).logits[0, :-1].double()
        target = torch.tensor(ids[1:])
        top = torch.softmax(torch.topk(z, 16, dim=-1).values, -1)
        docs.append({"top1": (z.argmax(-1) == target).double(),
                     "nll_cal": -torch.log_softmax(z / t_tok, -1).gather(1, target[:, None])[:, 0],
                     "proxy": -(top * top.log()).sum(-1)})
    return t_cal, docs, t_tok


@pytest.mark.slow
def test_an_independent_recomputation_from_the_saved_models_agrees(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.kit import build_sharp_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    paths = {"before": build_sharp_model(tiny_model_dir, tmp_path / "base", scale=6.0),
             "after": build_sharp_model(tiny_model_dir, tmp_path / "trained", scale=9.0)}
    cal_rows = _rows(tokenizer, DOCS[:2], ["t0", "t1"])
    held_rows = _rows(tokenizer, DOCS[2:], ["h0", "h1"], every=4)
    texts = DOCS[2:]
    values, models = {}, {}
    for label, path in paths.items():
        models[label] = AutoModelForCausalLM.from_pretrained(path).eval()
        values[label] = model_values(models[label], tokenizer, calibration_rows=cal_rows, heldout_rows=held_rows,
                                     texts=texts, temperature=0.8, max_context_tokens=64,
                                     grid=temperature_grid(0.8) if label == "before" else None,
                                     proxy=("topk", 16) if label == "before" else None,
                                     calibration_texts=DOCS[:2])
    report = build_report(before=values["before"], after=values["after"], heldout_rows=held_rows,
                          proxy_entropy=None, temperature=0.8, probe=paired_bootstrap([0.1, 0.2], [0.2, 0.2]),
                          probe_rows=2, probe_samples=1)
    assert LINE.match(learning_line(report)), learning_line(report)

    table = _first_token_ids(tokenizer)
    direct = {label: _direct(models[label], tokenizer, cal_rows, texts, table, DOCS[:2]) for label in paths}
    for label in paths:
        assert values[label]["calibrated_temperature"] == pytest.approx(direct[label][0], rel=1e-4)
        assert values[label]["token_calibrated_temperature"] == pytest.approx(direct[label][2], rel=1e-4)
        assert values[label]["token_calibration_on"] == "training-document tokens"
        assert values[label]["calibration_units"] == sum(
            1 for r in cal_rows if table.get(r["continuation"].encode()[: r["boundaries"][0]]))
    proxy = [d["proxy"] for d in direct["before"][1]]
    for split, threshold in (("all", None), ("hard", 1.5)):
        masks = [torch.ones_like(p, dtype=torch.bool) if threshold is None else p > threshold for p in proxy]
        n = sum(int(m.sum()) for m in masks)
        entry = report.token_splits[split]
        assert entry["count"] == n and n > 0
        for key in ("top1", "nll_cal"):
            means = {label: sum(float(d[key][m].sum()) for d, m in zip(direct[label][1], masks)) / n
                     for label in paths}
            got = entry["metrics"][key]
            assert got.before == pytest.approx(means["before"], rel=1e-5, abs=1e-7)
            assert got.after == pytest.approx(means["after"], rel=1e-5, abs=1e-7)
    assert report.token_splits["hard"]["count"] < report.token_splits["all"]["count"]
