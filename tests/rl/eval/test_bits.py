"""`rl profile bits` end to end on the tiny model, its stats against plain recomputation, and
output safety (rl/runtime/outputs.py, as `rl profile entropy`)."""

from __future__ import annotations

import json

import pytest
import torch

from rl.cli import main
from rl.eval.patch_report import disagreement, score_documents, top_mask

DOCS = ["The sea and the sky are blue today, and the wind is calm. " * 6,
        "Suppose x + 2 = 5; then x = 3. Wait, check: 3 + 2 = 5. " * 5]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    return path


def test_scores_equal_a_plain_forward(tiny_model_dir, corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.data.corpus import Document
    from rl.signal.surprise import momentary_surprise, surprisal
    from rl.signal.entropy import token_entropy

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    docs = score_documents(model, tok, [Document(text=d, doc_id=str(i)) for i, d in enumerate(DOCS)],
                           window_tokens=16, batch_size=3, progress=False)  # many overlapping windows
    for d, text in zip(docs, DOCS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert d["ids"] == ids[1:] and sum(d["bytes"]) + len(tok.decode(ids[:1]).encode()) == len(text.encode())
        # the first window (16 tokens) owns positions 1..15: a plain forward over it gives them exactly
        with torch.no_grad():
            first = model(torch.tensor([ids[:16]])).logits[0, :-1].float()
        target = torch.tensor(ids[1:16])
        assert d["entropy"][:15] == pytest.approx(token_entropy(first).tolist(), abs=1e-4)
        assert d["surprisal"][:15] == pytest.approx(surprisal(first, target).tolist(), abs=1e-4)
        assert d["surprise"][:15] == pytest.approx(momentary_surprise(first, target).tolist(), abs=1e-4)
        assert d["argmax"][:15] == first.argmax(-1).tolist()


def test_disagreement_examples_are_the_extremes():
    docs = [{"ids": [1, 2, 3, 4, 5], "starts": [0, 1, 2, 3, 4], "text": "abcde", "argmax": [0] * 5,
             "entropy": [0.1, 2.0, 0.5, 1.0, 0.2], "surprisal": [3.0, 0.1, 0.5, 1.0, 0.2]}]
    dis = disagreement(docs, list("bcdef"), examples=1)
    assert dis["high_surprise_low_entropy"][0]["token"] == "b"  # sure (0.1) and wrong (3.0)
    assert dis["high_entropy_low_surprise"][0]["token"] == "c"  # unsure (2.0), right (0.1)
    assert dis["overlap_share"] == 0.0 and top_mask([1, 3, 3, 0, 2]) == [False, True, False, False, False]


def test_cli_end_to_end(tiny_model_dir, corpus, capsys):
    rc = main(["profile", "bits", "--model", str(tiny_model_dir), "--data", str(corpus), "-o", "bits",
               "--window-tokens", "32", "--device", "cpu", "--max-patch-length", "8"])
    out = capsys.readouterr().out
    assert rc == 0 and "patches/token" in out and "surprised but confident" in out
    saved = json.loads((corpus.parent / "bits" / "bits_profile.json").read_text())
    s = saved["stats"]
    assert [m["mode"] for m in s["patches"]] == ["global", "monotonic", "threshold_add", "topk"]
    for m in s["patches"]:
        assert 0 < m["patches_per_token"] <= 1 and m["max_patch_tokens"] <= 8
        assert m["patches_per_token"] == pytest.approx(m["patches"] / s["tokens"])
        assert m["mean_patch_tokens"] == pytest.approx(s["tokens"] / m["patches"])
        assert m["mean_patch_bytes"] == pytest.approx(s["bytes"] / m["patches"])
    for name in ("patch_trace.png", "patch_lengths.png"):
        assert (corpus.parent / "bits" / name).read_bytes()[:4] == b"\x89PNG"
    # bisection: the byte target is met by every threshold mode
    assert main(["profile", "bits", "--model", str(tiny_model_dir), "--data", str(corpus), "-o", "bits",
                 "--target-bytes-per-patch", "12", "--device", "cpu"]) == 0
    s = json.loads((corpus.parent / "bits" / "bits_profile.json").read_text())["stats"]
    assert all(m["mean_patch_bytes"] >= 12 for m in s["patches"][:3])


@pytest.mark.parametrize("argv, match", [
    (["-o", "."], "is the current directory"), (["-o", "mine"], "not written by `rl profile bits`"),
    (["-o", "corpus.jsonl"], "is the --data itself"),
    (["--threshold", "1", "--target-bytes-per-patch", "4"], "give one"),
    (["--max-patch-length", "0"], "--max-patch-length: must be at least 1"), (["--eta", "2"], "must be in [0, 1]"),
])
def test_refusals_are_one_line_and_touch_nothing(tiny_model_dir, corpus, capsys, monkeypatch, argv, match):
    import transformers

    (corpus.parent / "mine").mkdir()
    (corpus.parent / "mine" / "thesis.tex").write_text("years of work")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded before the check")))
    before = {p: p.read_bytes() for p in corpus.parent.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["profile", "bits", "--model", str(tiny_model_dir), "--data", str(corpus), "--device", "cpu",
                 *argv]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and match in err[0], err
    assert {p: p.read_bytes() for p in corpus.parent.rglob("*") if p.is_file()} == before


def test_generated_completions_are_scored_at_their_own_tokens(tiny_model_dir, corpus, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.eval.patch_report import generated_documents
    from rl.signal.sampling import SamplingSettings

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    docs = generated_documents(model, tok, ["What is 2+2?"], SamplingSettings(max_new_tokens=6, temperature=0),
                               progress=False)
    d = docs[0]
    assert d["argmax"] == d["ids"]  # greedy: each completion token is the scored distribution's argmax
    assert len(d["entropy"]) == len(d["ids"]) == len(d["bytes"]) and sum(d["bytes"]) == len(d["text"].encode())
    (corpus.parent / "p.txt").write_text("What is 2+2?\nWhy is the sky blue?\n")
    assert main(["profile", "bits", "--model", str(tiny_model_dir), "--generate", "p.txt", "--samples", "2",
                 "--max-new-tokens", "5", "-o", "gen", "--device", "cpu"]) == 0
    saved = json.loads((corpus.parent / "gen" / "bits_profile.json").read_text())
    assert saved["source"]["prompts"] == 2 and 1 <= saved["source"]["completions"] <= 4
