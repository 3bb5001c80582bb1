"""Before/after evidence (rl/eval/learning_report.py): document-level CIs, the scripts' line, the curve."""

from __future__ import annotations

import re

import pytest

from rl.eval.learning_report import (LearningReport, compare_documents, compare_positions, learning_line,
                                plot_rewards)
from rl.eval.stats import paired_bootstrap

# The learning line (rl/eval/learning_report.py `learning_line`), as scripts parse it.
_PTS = r"(\d+\.\d{2})% -> (\d+\.\d{2})% \(diff ([+-]\d+\.\d{2}) pts, 95% CI \[([+-]\d+\.\d{2}), ([+-]\d+\.\d{2})\]\)"
_NUM = r"(\d+\.\d{3}) -> (\d+\.\d{3}) \(diff ([+-]\d+\.\d{3}), 95% CI \[([+-]\d+\.\d{3}), ([+-]\d+\.\d{3})\]\)"
LINE = re.compile(r"^learning: temperature-fair \(held-out (hard|all) tokens(?:, proxy entropy > ([\d.]+))?, n=(\d+)\): "
                  rf"top-1 {_PTS}, calibrated NLL {_NUM}; sharpening-inclusive \(all (\d+) held-out tokens\): "
                  rf"expected accuracy at T=([\d.]+) {_PTS}, probe reward {_NUM}$")


def _docs(values):
    return [{"tokens": n, "expected": e * n, "top1": t * n, "nll": l * n} for n, e, t, l in values]


def test_compare_documents_is_a_ratio_of_sums_with_a_document_bootstrap():
    before = _docs([(10, 0.5, 0.5, 2.0), (30, 0.4, 0.3, 2.5), (20, 0.6, 0.6, 1.5)])
    after = _docs([(10, 0.55, 0.5, 1.9), (30, 0.45, 0.4, 2.4), (20, 0.62, 0.6, 1.45)])
    out = compare_documents(before, after)
    exp = out["expected"]
    assert exp.before == pytest.approx((5 + 12 + 12) / 60) and exp.after == pytest.approx((5.5 + 13.5 + 12.4) / 60)
    assert exp.units == 60 and exp.groups == 3
    assert exp.low > 0 and exp.excludes_zero  # every document gained
    assert out["nll"].high < 0


def test_compare_positions_splits_by_entropy_and_groups_by_document():
    rows = [{"entropy": e, "doc_id": d} for e, d in [(0.2, "a"), (0.7, "a"), (1.2, "b"), (1.8, "c")]]
    before = [{"expected": 0.1, "top1": 0.0, "nll": 2.0}] * 4
    after = [{"expected": 0.3, "top1": 1.0, "nll": None}] + [{"expected": 0.2, "top1": 0.0, "nll": 1.0}] * 3
    out = compare_positions(rows, before, after)
    assert set(out) == {"all", "easy", "medium", "hard"}
    assert out["all"]["expected"].units == 4 and out["all"]["expected"].groups == 3
    assert out["hard"]["expected"].units == 1
    assert out["all"]["nll"].units == 3  # a None NLL (no single token decodes to the target) is left out


def _token_docs(seed=0, docs=4, n=30, gain=0.0):
    """Per-token arrays as `token_metrics` gives them, before and after (after = before + gain on top-1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    before, after, proxy = [], [], []
    for _ in range(docs):
        top1 = (rng.random(n) < 0.4).astype(float)
        base = {"top1": top1, "nll": rng.random(n) + 1, "nll_cal": rng.random(n) + 1, "expected": rng.random(n) * 0.5,
                "entropy": rng.random(n) + 1}
        before.append(base)
        after.append({**base, "top1": np.maximum(top1, (rng.random(n) < gain).astype(float)),
                      "expected": base["expected"] + 0.05})
        proxy.append(rng.random(n) * 3)
    return before, after, proxy


def test_learning_line_has_the_exact_format_scripts_parse():
    from rl.eval.learning_report import compare_tokens

    report = LearningReport(temperature=0.8)
    report.probe = paired_bootstrap([0.2, 0.3, 0.4], [0.5, 0.5, 0.6])
    before, after, proxy = _token_docs(gain=0.3)
    report.token_splits = compare_tokens(before, after, proxy)
    report.tokens = report.token_splits["all"]["metrics"]
    report.heldout_documents = 4
    line = learning_line(report)
    match = LINE.match(line)
    assert match, line
    hard = report.token_splits["hard"]
    assert match.group(1) == "hard" and float(match.group(2)) == 1.5 and int(match.group(3)) == hard["count"]
    assert 0 < hard["count"] < 120 and int(match.group(14)) == 120  # hard tokens vs all tokens
    assert float(match.group(6)) == pytest.approx(100 * hard["metrics"]["top1"].diff, abs=0.006)
    assert float(match.group(15)) == 0.8
    assert float(match.group(21)) == pytest.approx(0.3) and float(match.group(22)) == pytest.approx(0.533, abs=1e-3)
    assert "learning:" in learning_line(LearningReport())  # nothing measured: still one line, says so
    assert "probe reward" in report.format()
    # no token above the hard threshold: the clause reports the `all` split and says so
    for doc in proxy:
        doc[:] = 0.1
    report.token_splits = compare_tokens(before, after, proxy)
    match = LINE.match(learning_line(report))
    assert match and match.group(1) == "all" and match.group(2) is None and int(match.group(3)) == 120


def test_plot_rewards_writes_a_png(tmp_path):
    history = [{"step": i, "reward": 0.1 * i} for i in range(1, 9)] + [{"train_runtime": 1.0, "reward": 9}]
    path = plot_rewards(history, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_rewards([{"step": 1, "loss": 0.1}], tmp_path / "none.png") is None
