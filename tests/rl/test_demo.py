"""`make demo`'s pipeline end to end on a tiny local model: train, measure, report (slow)."""

from __future__ import annotations

import json
import re

import pytest

from tests.rl.eval.test_learning_report import LINE

DOCS = [f"Problem {i}: add {i} and {i + 1}. Solution: {i} plus {i + 1} is {2 * i + 1}, so the answer is {2 * i + 1}."
        for i in range(16)]


@pytest.mark.slow
def test_demo_trains_measures_and_prints_the_learning_line(tmp_path, tiny_model_dir, capsys):
    from rl.demo import main

    corpus = tmp_path / "corpus.jsonl"
    # stable document ids (not the tmp path): the held-out split by doc_id is the same on every run
    corpus.write_text("".join(json.dumps({"id": f"doc{i}", "text": d}) + "\n" for i, d in enumerate(DOCS)),
                      encoding="utf-8")
    out = tmp_path / "run"
    code = main(["--model_name_or_path", str(tiny_model_dir), "--corpus", str(corpus), "--output_dir", str(out),
                 "--rpt_min_entropy", "0", "--rpt_max_per_doc", "3", "--rpt_min_context_tokens", "4",
                 "--rpt_max_documents", "16", "--rpt_id_field", "id", "--max_steps", "2", "--save_steps", "2", "--report_to", "none",
                 "--signal_check", "warn"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert LINE.match(lines[-1]), lines[-1]  # the scripts' line is the very last one
    summary = json.loads((out / "demo_summary.json").read_text())
    assert len(summary["batch_rewards"]) == 2
    assert summary["probe_rows"] > 0 and summary["heldout_documents"] > 0
    tokens = summary["heldout_tokens"]["expected"]
    assert tokens["units"] > 0 and tokens["ci95"][0] <= tokens["diff"] <= tokens["ci95"][1]
    assert set(summary["heldout_positions"]["all"]) == {"expected", "top1", "nll", "nll_cal"}
    cal = summary["calibration"]
    assert cal["before"] > 0 and cal["after"] > 0 and cal["units"] > 0 and cal["on"] == "training-document tokens"
    assert cal["positions"]["before"] > 0 and cal["positions"]["units"] > 0
    splits = summary["heldout_token_splits"]
    assert splits["all"]["count"] == tokens["units"] and set(splits["all"]["metrics"]) == {"top1", "nll_cal",
                                                                                             "expected", "nll"}
    assert "entropy_match_temperature" in splits["all"]["sharpening"]
    # each split once: a split with the same tokens as an earlier one says so instead of repeating it
    for split in ("easy", "medium", "hard"):
        same = [e for e in ("all", "easy", "medium") if e != split and splits[e]["count"] == splits[split]["count"]]
        if same and splits[split]["count"]:
            assert any(line.strip().startswith(f"held-out tokens, {split}: same as") for line in lines)
    assert (out / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert any(re.match(r"probe reward \(\d+ training rows x 16 samples", line) for line in lines)
