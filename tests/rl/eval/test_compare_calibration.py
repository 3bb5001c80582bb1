"""`rl eval next-token --compare` reports temperature-fair metrics (rl/eval/compare.py): the calibrated
NLL at each model's own fitted temperature, cross-fitted or fitted on --calibration-data; a model
that is the base with its logits divided by a constant gains nothing on top-1 or calibrated NLL."""

from __future__ import annotations

import json

import pytest
import torch

from tests.kit import write_jsonl
from tests.rl.eval.test_learning_report_fair import DOCS, _rows


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """(base dir, scaled dir): the scaled model's LM head is the base's divided by c = 0.5 (untied),
    so its logits are exactly the base's / 0.5: a pure temperature change (sharper)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.kit import build_sharp_model

    root = tmp_path_factory.mktemp("compare-cal")
    base = build_sharp_model(tiny_model_dir, root / "base", scale=6.0)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.config.tie_word_embeddings = False
    weight = model.get_input_embeddings().weight.detach().clone() / 0.5
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(root / "scaled")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "scaled")
    return base, root / "scaled"


def _data(tmp_path, tokenizer, base_dir):
    """Rows at positions of DOCS whose true next token is drawn from the base model at T = 1.3, so
    each model's NLL-optimal temperature is inside the search range (a random tiny model knows
    nothing about real text: its best temperature would be the edge of the range, uniform)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i, row in enumerate(_rows(tokenizer, DOCS, [f"doc{i}" for i in range(len(DOCS))], every=1)):
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer(row["context"])["input_ids"]])).logits[0, -1]
        for _ in range(20):
            token = int(torch.multinomial(torch.softmax(logits / 1.3, -1), 1, generator=gen))
            text = tokenizer.decode([token])
            if text.strip() and "\ufffd" not in text:
                break
        rows.append(dict(row, continuation=text, boundaries=[len(text.encode("utf-8"))],
                         entropy=[0.3, 0.8, 1.2, 2.0][i % 4]))
    heldout = [r for r in rows if r["doc_id"] in ("doc2", "doc3")]
    train = [r for r in rows if r["doc_id"] in ("doc0", "doc1")]
    return write_jsonl(tmp_path / "heldout.jsonl", heldout), write_jsonl(tmp_path / "train.jsonl", train), heldout


def test_scaled_logits_are_exactly_a_temperature_change(models):
    from transformers import AutoModelForCausalLM

    base, scaled = (AutoModelForCausalLM.from_pretrained(p).eval() for p in models)
    ids = torch.tensor([[10, 200, 3000, 42]])
    with torch.no_grad():
        assert torch.allclose(scaled(ids).logits, base(ids).logits / 0.5, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("with_calibration_data", [False, True])
def test_compare_shows_no_fair_gain_for_a_pure_temperature_change(models, tmp_path, tokenizer, capsys,
                                                                   with_calibration_data):
    from rl.cli import main

    base, scaled = models
    heldout, train, rows = _data(tmp_path, tokenizer, base)
    out = tmp_path / "cmp.json"
    argv = ["eval", "next-token", "--model", str(scaled), "--compare", str(base), "--data", str(heldout),
            "--temperature", "0.8", "--output", str(out)]
    if with_calibration_data:
        argv += ["--calibration-data", str(train)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "temperature-fair" in text and "sharpening-inclusive" in text
    payload = json.loads(out.read_text())
    cal_a, cal_b = payload["model"]["calibration"], payload["compare"]["calibration"]
    assert cal_a["method"] == ("calibration data" if with_calibration_data else "cross-fitted")
    for t_a, t_b in zip(cal_a["temperatures"], cal_b["temperatures"]):
        assert t_a == pytest.approx(t_b / 0.5, rel=1e-5)  # the scaled model's T undoes the scaling
        assert 0.3 < t_b < 10  # inside the search range
    for split, entry in payload["difference"].items():
        paired = entry["paired"]
        assert paired["accuracy"]["diff"] == 0.0
        assert paired["calibrated_nll"]["diff"] == pytest.approx(0.0, abs=1e-5)
        assert abs(paired["nll"]["diff"]) > 1e-3  # NLL at T = 1 moves with sharpening
        assert paired["expected_accuracy"]["diff"] != 0.0  # so does expected accuracy at T = 0.8
    assert payload["model"]["splits"]["all"]["calibrated_nll"] is not None
    # the sharpening share: the base at T = 0.8 * 0.5 has the scaled model's distributions at 0.8
    sharp = payload["difference"]["all"]["sharpening"]
    assert sharp["entropy_match_temperature"] == pytest.approx(0.4, rel=1e-2)
    assert sharp["gain_over_matched"]["diff"] == pytest.approx(0.0, abs=1e-5)
    assert "sharpening, all: the second model at T=0.4" in text or "sharpening, all: the second model at T=0.39" in text, \
        [line for line in text.splitlines() if "sharpening" in line]


def test_calibrate_rows_cross_fits_by_document(models, tokenizer, tmp_path):
    """Each half of the documents gets the temperature fitted on the other half only."""
    from transformers import AutoModelForCausalLM

    from rl.eval.compare import calibrate_rows, crossfit_folds
    from rl.eval.metrics import fit_temperature, nll_at_temperature, position_logits
    from rl.eval.next_token import encode_contexts

    _, _, rows = _data(tmp_path, tokenizer, models[0])
    model = AutoModelForCausalLM.from_pretrained(models[0]).eval()
    got = calibrate_rows(model, tokenizer, rows)
    assert got["method"] == "cross-fitted" and len(got["temperatures"]) == 2
    seqs = encode_contexts(tokenizer, [r["context"] for r in rows], None)
    logits, firsts = position_logits(model, tokenizer, seqs, [(r["continuation"], r["boundaries"]) for r in rows])
    fold = crossfit_folds(rows)
    assert sorted({(r["doc_id"], f) for r, f in zip(rows, fold)}, key=lambda x: x[1])[0][1] == 0 and 1 in fold
    for k, temperature in zip((0, 1), got["temperatures"]):
        fit = [i for i in range(len(rows)) if fold[i] != k and firsts[i]]
        assert temperature == pytest.approx(fit_temperature(logits[fit], [firsts[i] for i in fit]), rel=1e-9)
        for i in (i for i in range(len(rows)) if fold[i] == k and firsts[i]):
            ref = float(nll_at_temperature(logits[i:i + 1], [firsts[i]], temperature)[0])
            assert got["nll_cal"][i] == pytest.approx(ref, rel=1e-9)
    one_doc = [dict(r, doc_id="same") for r in rows]
    assert calibrate_rows(model, tokenizer, one_doc)["method"] is None  # nothing to cross-fit on
