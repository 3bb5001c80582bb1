"""`rl profile entropy`: the pure statistics on hand-computed cases, teacher-forced and generated
entropies against direct computations, plots, W&B offline logging, prompts files and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from rl.signal.entropy import token_entropy
from rl.errors import UserError
from rl.eval.profile import (
    ProfileSettings,
    corpus_entropies,
    entropy_profile_stats,
    format_profile,
    generated_entropies,
    profile_entropy,
    read_prompts,
    token_kind,
)
from rl.signal.sampling import SamplingSettings

DOCS = [
    "Let x be a number. Suppose x squared is four; then x is two or minus two. However, wait: check the sign.",
    "The derivative of x squared is two x, so the slope at one is two.",
]


def test_stats_match_a_hand_computed_case():
    ent = [0, 0, 0, 0, 0, 0.005, 0.1, 0.5, 1.0, 2.0]
    texts = [" the", ",", " 2", " =", "\n", " cat", " x", " so", " so", " wait"]
    s = entropy_profile_stats(ent, texts)
    assert s["tokens"] == 10 and s["mean_entropy"] == pytest.approx(0.3605)
    assert s["share_below_0.01"] == pytest.approx(0.6)
    p = s["percentiles"]
    # linear interpolation: p80 sits at rank 0.8 * 9 = 7.2 -> 0.5 + 0.2 * (1.0 - 0.5)
    assert p["p80"] == pytest.approx(0.6) and p["p50"] == pytest.approx(0.0025) and p["p90"] == pytest.approx(1.1)
    assert p["p10"] == 0.0 and set(p) == {"p10", "p20", "p50", "p80", "p90", "p95", "p99"}
    assert s["high_tokens"] == 2 and s["high_threshold"] == 1.0
    assert s["high_entropy_share"] == pytest.approx(3.0 / 3.605)
    assert s["top_forking_tokens"] == [
        {"token": " wait", "count": 1, "occurrences": 1, "mean_entropy": 2.0},
        {"token": " so", "count": 1, "occurrences": 2, "mean_entropy": 1.0},
    ]
    assert s["kinds"]["high"]["function word"] == 1.0
    low = s["kinds"]["low"]
    assert (low["function word"], low["whitespace/punctuation"], low["number"], low["math symbol"], low["word"],
            low["other"]) == (0.25, 0.25, 0.125, 0.125, 0.25, 0.0)
    json.dumps(s)


def test_high_group_size_is_exact_with_ties():
    s = entropy_profile_stats([1.0] * 5, list("abcde"))
    assert s["high_tokens"] == 1 and [t["token"] for t in s["top_forking_tokens"]] == ["a"]
    assert entropy_profile_stats([0.5] * 10, ["x"] * 10)["high_tokens"] == 2
    assert entropy_profile_stats([0.5] * 7, ["x"] * 7)["high_tokens"] == 2  # ceil(1.4)
    s = entropy_profile_stats([0.0] * 4, ["a"] * 4)
    assert s["high_entropy_share"] is None and s["share_below_0.01"] == 1.0
    with pytest.raises(UserError, match="no tokens"):
        entropy_profile_stats([], [])


@pytest.mark.parametrize("text,kind", [
    (" the", "function word"), (" Wait", "function word"), (" however", "function word"), (",", "whitespace/punctuation"),
    ("\n\n", "whitespace/punctuation"), (" ", "whitespace/punctuation"), (" 42", "number"), ("3.14", "number"),
    (" =", "math symbol"), ("\\frac", "math symbol"), ("≤", "math symbol"), (" cat", "word"), ("ing", "word"),
    ("#@", "whitespace/punctuation"), ("$", "other"),
])
def test_token_kinds(text, kind):
    assert token_kind(text) == kind


# ---------------------------------------------------------------------------------------------- model scoring


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model with its final norm scaled x5: a random model is otherwise near-uniform
    everywhere (entropy ~ log V at every position), which would hide position mix-ups."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(5.0)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _docs():
    from rl.data.corpus import Document

    return [Document(f"d{i}", t) for i, t in enumerate(DOCS)]


def test_corpus_entropies_equal_a_plain_forward(tiny):
    model, tok = tiny
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    with torch.no_grad():
        ref = [token_entropy(model(input_ids=torch.tensor([x])).logits[0, :-1]).tolist() for x in ids]
    ents, toks, docs = corpus_entropies(model, tok, _docs(), window_tokens=64, batch_size=2, progress=False)
    assert docs == 2 and toks == ids[0][1:] + ids[1][1:]
    assert ents == pytest.approx(ref[0] + ref[1], abs=1e-4)  # right padding across documents changes nothing
    # small overlapping windows: every position scored once, the first window sees the same context
    ents, toks, _ = corpus_entropies(model, tok, _docs(), window_tokens=8, batch_size=3, progress=False)
    assert toks == ids[0][1:] + ids[1][1:] and ents[:7] == pytest.approx(ref[0][:7], abs=1e-4)
    ents, toks, _ = corpus_entropies(model, tok, _docs(), window_tokens=8, max_tokens=10, progress=False)
    assert len(ents) == len(toks) == 10


def test_generated_entropies_equal_an_unpadded_rescoring(tiny, monkeypatch):
    """Entropies of sampled completions (left-padded batch, chat template, T=0.7) == a plain forward
    of each prompt + completion alone, at the same temperature; EOS and what follows are dropped."""
    model, tok = tiny
    prompts = ["Two plus two is", [{"role": "user", "content": "Name a color, then explain why it is nice."}]]
    outputs = []
    real_generate = model.generate

    def spy(**kw):
        outputs.append((kw["input_ids"], kw["attention_mask"], real_generate(**kw)))
        assert kw["temperature"] == 0.7 and kw["do_sample"] and kw["input_ids"].shape[0] == 4  # 2 prompts x 2
        return outputs[-1][2]

    monkeypatch.setattr(model, "generate", spy)
    ents, toks, n = generated_entropies(model, tok, prompts, SamplingSettings(samples=2, max_new_tokens=8,
                                                                              temperature=0.7, batch_size=2),
                                        progress=False)
    (ids, mask, out), = outputs
    ref_ents, ref_toks = [], []
    with torch.no_grad():
        for row in range(out.shape[0]):
            prompt_ids = ids[row][mask[row].bool()].tolist()
            new = out[row, ids.shape[1]:].tolist()
            keep = next((i for i, t in enumerate(new) if t == tok.eos_token_id), len(new))
            full = torch.tensor([prompt_ids + new[:keep]])
            logits = model(input_ids=full).logits[0, len(prompt_ids) - 1:-1]
            ref_ents += token_entropy(logits, temperature=0.7).tolist()
            ref_toks += new[:keep]
    templated = tok.apply_chat_template([{"role": "user", "content": "Two plus two is"}], add_generation_prompt=True)
    assert ids[0][mask[0].bool()].tolist() == list(getattr(templated, "input_ids", templated))
    assert n == 4 and toks == ref_toks and len(toks) > 8 and max(ref_ents) - min(ref_ents) > 0.1
    assert ents == pytest.approx(ref_ents, abs=1e-3)


# ---------------------------------------------------------------------------------------------- outputs


def _corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS) + "{broken\n", encoding="utf-8")
    return path


def test_profile_writes_json_pngs_and_logs_to_wandb_offline(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    res = profile_entropy(str(tiny_model_dir), ProfileSettings(data=str(_corpus(tmp_path)), output_dir=tmp_path / "out",
                                                               window_tokens=16, device="cpu",
                                                               wandb_project="entropy-rl-test"), progress=False)
    for key in ("histogram", "forking_tokens"):
        assert open(res["files"][key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "out" / "entropy_profile.json").read_text())
    assert saved["stats"]["tokens"] == res["stats"]["tokens"] > 20
    assert "skipped 1" in saved["source"]["corpus"] and saved["source"]["documents"] == 2
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    report = format_profile(res)
    assert "this model" in report and "paper (Qwen3-8B, AIME)" in report and "50.64%" in report and "0.672" in report


def test_read_prompts(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\n  \nsecond prompt\n", encoding="utf-8")
    assert read_prompts(txt) == ["first prompt", "second prompt"] and read_prompts(txt, limit=1) == ["first prompt"]
    jl = tmp_path / "p.jsonl"
    msgs = [{"role": "user", "content": "hi"}]
    jl.write_text(json.dumps({"prompt": "a"}) + "\nnot json\n" + json.dumps({"prompt": msgs}) + "\n"
                  + json.dumps({"text": "no prompt"}) + "\n", encoding="utf-8")
    assert read_prompts(jl) == ["a", msgs]
    (tmp_path / "bad.jsonl").write_text("nope\n")
    for path, match in [(tmp_path / "bad.jsonl", "no usable prompts"), (tmp_path / "missing.txt", "not a file"),
                        (_corpus(tmp_path).with_suffix(".jsonl"), "no usable prompts")]:
        with pytest.raises(UserError, match=match):
            read_prompts(path)
    (tmp_path / "p.csv").write_text("a\n")
    with pytest.raises(UserError, match="expected a .txt"):
        read_prompts(tmp_path / "p.csv")


def _cli(argv, monkeypatch):
    from rl import cli

    return cli.main(argv)


def test_cli_generate_and_bad_corpus(tiny_model_dir, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2+2?\nWhy is the sky blue?\n")
    rc = _cli(["profile", "entropy", "--model", str(tiny_model_dir), "--generate", str(prompts), "--samples", "2",
               "--max-new-tokens", "4", "-o", str(tmp_path / "gen"), "--device", "cpu"], monkeypatch)
    out = capsys.readouterr().out
    assert rc == 0 and "paper (Qwen3-8B, AIME)" in out and (tmp_path / "gen" / "forking_tokens.png").exists()
    assert json.loads((tmp_path / "gen" / "entropy_profile.json").read_text())["source"]["completions"] == 4
    rc = _cli(["profile", "entropy", "--model", str(tiny_model_dir), "--data", str(tmp_path / "nope.jsonl")],
              monkeypatch)
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert rc == 2 and len(errors) == 1 and "nope.jsonl" in errors[0]
    # --data and --generate are exclusive: an argparse error, one line naming the subcommand
    assert _cli(["profile", "entropy", "--model", "m", "--data", "a", "--generate", "b"], monkeypatch) == 2
    assert "error: rl profile entropy: argument --generate" in capsys.readouterr().err
