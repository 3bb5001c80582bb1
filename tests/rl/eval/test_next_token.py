"""`rl eval next-token`: splits, Wilson/pass@k, both modes on hand-made RPT rows, comparison,
LoRA directories and bad input (tiny local models, GPT-2 tokenizer)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rl.errors import UserError
from rl.eval.compare import compare_results, format_table
from rl.eval.next_token import (
    NextTokenSettings,
    evaluate_next_token,
    load_eval_rows,
    load_model,
    pass_at_k,
    split_indices,
    wilson_interval,
)

# (context, continuation, proxy entropy); GPT-2 tokenizes " mattress" and " matte" as single tokens,
# so predicting " mat" there stops inside a token and must score 0.
ROWS = [
    ("The cat sat on the", " mat.", 0.3),
    ("A dog slept on the", " mat today", 0.8),
    ("She put the book on the", " table.", 1.2),
    ("He wiped his feet on the", " mat and", 1.7),
    ("They slept on a", " mattress", 2.0),
    ("The rug by the door is a", " welcome mat", 0.6),
    ("The paint has a", " matte finish", 1.0),  # exactly 1.0: easy, not medium (strictly above)
]


def rpt_row(tokenizer, context, continuation, entropy, position=0):
    """One RPT row with boundaries from the GPT-2 tokenization of the continuation."""
    offsets = tokenizer(continuation, return_offsets_mapping=True)["offset_mapping"]
    boundaries = [len(continuation[:end].encode("utf-8")) for _, end in offsets]
    return {"prompt": [{"role": "user", "content": f"Predict the next token.\n\n{context}"}], "context": context,
            "continuation": continuation, "boundaries": boundaries, "entropy": entropy, "doc_id": "d",
            "position": position}


@pytest.fixture()
def rows(tokenizer):
    return [rpt_row(tokenizer, c, n, e, i) for i, (c, n, e) in enumerate(ROWS)]


@pytest.fixture()
def dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def forced_model(model_dir, tokenizer, text):
    """The tiny model with an lm_head whose bias makes `text` (one token) the argmax everywhere."""
    from transformers import AutoModelForCausalLM

    (target,) = tokenizer(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[target] = 5.0
    model.lm_head = head
    return model


# ---------------------------------------------------------------------------------------------- statistics


def test_splits_are_nested_with_hand_counted_members():
    ent = [0.2, 0.5, 0.7, 1.0, 1.2, 1.5, 2.0]
    s = split_indices(ent)
    assert s == {"all": list(range(7)), "easy": [2, 3, 4, 5, 6], "medium": [4, 5, 6], "hard": [6]}
    assert split_indices(ent, (0.1, 0.6, 1.9)) == {"all": list(range(7)), "easy": [0, 1, 2, 3, 4, 5, 6],
                                                  "medium": [2, 3, 4, 5, 6], "hard": [6]}
    for bad in [(1.0, 0.5, 1.5), (0.5, 1.0), (0.5, 0.5, 1.0), (0.5, 1.0, float("nan"))]:
        with pytest.raises(UserError, match="thresholds"):
            split_indices(ent, bad)


def test_wilson_interval_matches_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_pass_at_k_is_the_unbiased_estimator():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


# ---------------------------------------------------------------------------------------------- standard mode


def test_standard_mode_with_forced_argmax_gives_hand_computed_splits(tiny_model_dir, tokenizer, dataset):
    model = forced_model(tiny_model_dir, tokenizer, " mat")
    res = evaluate_next_token("forced-mat", dataset, NextTokenSettings(batch_size=3), model=model, tokenizer=tokenizer,
                              progress=False)
    got = {name: (s["count"], s["correct"]) for name, s in res["splits"].items()}
    assert got == {"all": (7, 3), "easy": (6, 2), "medium": (3, 1), "hard": (2, 1)}
    assert res["splits"]["hard"]["accuracy"] == 0.5
    assert res["splits"]["all"]["ci95"] == pytest.approx(list(wilson_interval(3, 7)))
    assert [r["prediction"] for r in res["per_row"]] == [" mat"] * 7
    assert [r["score"] for r in res["per_row"]] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert res["per_row"][4]["target"] == " mattress"
    json.dumps(res)  # JSON-ready


def test_standard_mode_matches_an_unpadded_forward(tiny_model_dir, tokenizer, rows):
    """Batched left-padded last-position argmax == one plain forward per context."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    cases = []
    with torch.no_grad():
        for i, row in enumerate(rows):
            ids = torch.tensor([tokenizer(row["context"])["input_ids"]])
            tok = int(model(input_ids=ids).logits[0, -1].argmax())
            text = tokenizer.decode([tok])
            assert text  # the random model predicts a normal token here
            # even rows: the ground truth starts with the model's own argmax token -> correct
            other = "Q" if not text.startswith("Q") else "Z"
            cont = text + " and so on" if i % 2 == 0 else other + "xyz nothing"
            cases.append(rpt_row(tokenizer, row["context"], cont, row["entropy"], i))
    res = evaluate_next_token("tiny", cases, NextTokenSettings(batch_size=4), model=model, tokenizer=tokenizer,
                              progress=False)
    assert [r["score"] for r in res["per_row"]] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert res["splits"]["all"]["correct"] == 4


def test_left_pad_positions_fit_absolute_position_models(tokenizer):
    """GPT-2 (learned absolute positions): a left-padded row gives the unpadded row's logits only
    because left_pad numbers positions from the first real token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rl.signal.padding import left_pad

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).eval()
    seqs = [tokenizer(t)["input_ids"] for t in ("The cat sat on the", "Hi")]
    ids, mask, pos = left_pad(seqs, tokenizer.eos_token_id, "cpu")
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        alone = model(input_ids=torch.tensor([seqs[1]])).logits[0, -1]
        naive = model(input_ids=ids, attention_mask=mask).logits[1, -1]
    assert torch.allclose(batched[1], alone, atol=1e-5) and not torch.allclose(naive, alone, atol=1e-3)


def test_limit_and_compare_and_table(tiny_model_dir, tokenizer, dataset):
    mat = evaluate_next_token("mat", dataset, model=forced_model(tiny_model_dir, tokenizer, " mat"),
                              tokenizer=tokenizer, progress=False)
    table = evaluate_next_token("table", dataset, model=forced_model(tiny_model_dir, tokenizer, " table"),
                                tokenizer=tokenizer, progress=False)
    diff = compare_results(mat, table)
    assert diff["all"]["accuracy"] == pytest.approx(3 / 7 - 1 / 7)
    assert diff["easy"]["accuracy"] == pytest.approx(2 / 6 - 1 / 6)
    assert diff["medium"]["accuracy"] == pytest.approx(0.0)
    assert diff["hard"]["accuracy"] == pytest.approx(0.5)
    assert (diff["all"]["only_first_correct"], diff["all"]["only_second_correct"]) == (3, 1)
    text = format_table(mat, table)
    assert "mat" in text and "table" in text and "+28.6 pts" in text and "difference" in text
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines[3:7]] == ["all", "easy", "medium", "hard"]
    limited = evaluate_next_token("mat", dataset, NextTokenSettings(limit=2), model=forced_model(tiny_model_dir, tokenizer, " mat"),
                                  tokenizer=tokenizer, progress=False)
    assert limited["rows"] == 2 and limited["splits"]["all"]["correct"] == 2


def test_standard_mode_reports_expected_accuracy_nll_and_paired_cis(tiny_model_dir, tokenizer, rows):
    import math

    from datasets import Dataset

    for i, row in enumerate(rows):
        row["doc_id"] = f"doc{i % 3}"
    data = Dataset.from_list(rows)
    mat = evaluate_next_token("mat", data, NextTokenSettings(temperature=1.0),
                              model=forced_model(tiny_model_dir, tokenizer, " mat"), tokenizer=tokenizer, progress=False)
    table = evaluate_next_token("table", data, model=forced_model(tiny_model_dir, tokenizer, " table"),
                                tokenizer=tokenizer, progress=False)
    # the forced head puts logit 5 on one token and 0 on the other 50,256
    p_forced = math.exp(5) / (math.exp(5) + len(tokenizer) - 1)
    first = mat["per_row"][0]
    assert first["target"] == " mat" and first["expected"] == pytest.approx(p_forced, rel=1e-4)
    assert first["nll"] == pytest.approx(-math.log(p_forced), rel=1e-4)
    assert mat["splits"]["all"]["expected_accuracy"] == pytest.approx(
        sum(r["expected"] for r in mat["per_row"]) / len(rows))
    diff = compare_results(mat, table)
    paired = diff["all"]["paired"]
    assert paired["accuracy"]["diff"] == pytest.approx(3 / 7 - 1 / 7)
    assert paired["accuracy"]["groups"] == 3 and paired["accuracy"]["units"] == 7
    low, high = paired["accuracy"]["ci95"]
    assert low <= paired["accuracy"]["diff"] <= high
    assert set(paired) == {"accuracy", "expected_accuracy", "nll"}
    text = format_table(mat, table)
    assert "expected accuracy at T=1.0" in text and "paired bootstrap over documents" in text


def test_reasoning_mode_refuses_completion_format_rows(rows):
    for row in rows:
        row["rpt_format"] = "completion"
    with pytest.raises(UserError, match="completion-format RPT data.*--mode standard"):
        load_eval_rows(rows, "reasoning")
    assert load_eval_rows(rows, "standard")[0]  # standard mode is the one for them


def test_standard_mode_needs_a_positive_temperature(tiny_model_dir, dataset):
    with pytest.raises(UserError, match="--temperature: standard mode"):
        evaluate_next_token(str(tiny_model_dir), dataset, NextTokenSettings(temperature=0), progress=False)


# ---------------------------------------------------------------------------------------------- reasoning mode


def test_reasoning_mode_scores_samples_mean_and_pass_at_k(tiny_model_dir, tokenizer, rows, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = rows[:3]  # " mat.", " mat today", " table."
    answers = iter([
        "I think \\boxed{ mat}", "\\boxed{ rug}", "\\boxed{ mat}", "no box",             # row 0: 2 of 4
        "\\boxed{ mat today}", "\\boxed{ mat tod}", "\\boxed{mat}", "\\boxed{ sofa}",  # row 1: 1 of 4
        "\\boxed{ table.}", "\\boxed{ table}", "</think> \\boxed{ table}", "\\boxed{ table}",  # row 2: 4 of 4
    ])
    seen = {}

    def fake_generate(input_ids, attention_mask, num_return_sequences=1, **kw):  # the sampler repeats prompts itself
        seen.setdefault("prompts", []).extend(tokenizer.batch_decode(input_ids, skip_special_tokens=True))
        seen["kw"] = kw
        outs = [tokenizer(next(answers))["input_ids"] for _ in range(input_ids.shape[0] * num_return_sequences)]
        width = max(map(len, outs))
        new = torch.tensor([o + [tokenizer.eos_token_id] * (width - len(o)) for o in outs])
        return torch.cat([input_ids.repeat_interleave(num_return_sequences, 0), new], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    res = evaluate_next_token("tiny", rows, NextTokenSettings(mode="reasoning", samples=4, pass_k=2, batch_size=2,
                                                              temperature=0.7),
                              model=model, tokenizer=tokenizer, progress=False)
    assert [r["score"] for r in res["per_row"]] == [0.5, 0.25, 1.0]
    assert [r["pass"] for r in res["per_row"]] == pytest.approx([5 / 6, 0.5, 1.0])
    assert res["splits"]["all"]["accuracy"] == pytest.approx(1.75 / 3)
    assert res["splits"]["all"]["pass_at_k"] == pytest.approx((5 / 6 + 0.5 + 1.0) / 3)
    assert res["splits"]["easy"]["count"] == 2 and res["splits"]["easy"]["accuracy"] == pytest.approx(0.625)
    assert res["per_row"][0]["predictions"] == [" mat", " rug", " mat", None]
    assert seen["kw"]["temperature"] == 0.7 and seen["kw"]["do_sample"] is True
    assert all("<|im_start|>assistant" in p or "Predict the next token" in p for p in seen["prompts"])
    assert "pass@2" in format_table(res)


# How a prompt is rendered (chat template for messages only): tests/rl/signal/test_sampling.py.


def test_reasoning_mode_runs_real_generation(tiny_model_dir, dataset):
    res = evaluate_next_token(str(tiny_model_dir), dataset, NextTokenSettings(mode="reasoning", samples=2,
                                                                              max_new_tokens=4, batch_size=4),
                              progress=False)
    assert res["splits"]["all"]["count"] == 7
    assert all(len(r["rewards"]) == 2 for r in res["per_row"])
    assert 0.0 <= res["splits"]["all"]["accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------- loading


def _save_lora(base_dir, out_dir, tokenizer=None):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(1)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # random B: the adapter matters
    peft_model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return peft_model.eval()


def test_lora_directory_loads_base_applies_and_merges_adapter(tiny_model_dir, tokenizer, tmp_path, dataset):
    peft_model = _save_lora(tiny_model_dir, tmp_path / "lora")
    model, tok = load_model(str(tmp_path / "lora"), device="cpu")
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged
    ids = torch.tensor([tokenizer("The cat sat on the")["input_ids"]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        base = load_model(str(tiny_model_dir), device="cpu")[0](input_ids=ids).logits
        got = model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4) and not torch.allclose(got, base, atol=1e-3)
    res = evaluate_next_token(str(tmp_path / "lora"), dataset, NextTokenSettings(device="cpu"), progress=False)
    assert res["splits"]["all"]["count"] == 7


def test_lora_base_builtin_name_is_resolved(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    import rl.eval.next_token
    import rl.runtime.assets

    _save_lora(tiny_model_dir, tmp_path / "lora", tokenizer)
    cfg_path = tmp_path / "lora" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "builtin:smollm2-135m-instruct"
    cfg_path.write_text(json.dumps(cfg))
    calls = []
    real = rl.runtime.assets.resolve_model

    def fake(name):
        calls.append(name)
        return str(tiny_model_dir) if name.startswith("builtin:") else real(name)

    monkeypatch.setattr(rl.eval.next_token, "resolve_model", fake)  # where load_model looks it up
    model, _ = load_model(str(tmp_path / "lora"), device="cpu")
    assert "builtin:smollm2-135m-instruct" in calls and model.config.vocab_size == len(tokenizer)


# ---------------------------------------------------------------------------------------------- bad input and CLI


def test_bad_rows_and_paths_raise_user_errors(tmp_path, rows, tokenizer):
    with pytest.raises(UserError, match="does not exist"):
        load_eval_rows(str(tmp_path / "nope"), "standard")
    with pytest.raises(UserError, match=r"needs column\(s\) \['context'\]"):
        load_eval_rows([{k: v for k, v in r.items() if k != "context"} for r in rows], "standard")
    bad = [dict(r) for r in rows]
    bad[1]["boundaries"] = [4, 3]
    with pytest.raises(UserError, match="row 1: `boundaries`"):
        load_eval_rows(bad, "standard")
    bad[1] = dict(rows[1], entropy=None)
    with pytest.raises(UserError, match="row 1: `entropy`"):
        load_eval_rows(bad, "standard")
    with pytest.raises(UserError, match="--samples"):
        evaluate_next_token("x", rows, NextTokenSettings(mode="reasoning", samples=2, temperature=0.0), model=object(),
                            tokenizer=tokenizer)
    with pytest.raises(UserError, match="--pass-k"):
        evaluate_next_token("x", rows, NextTokenSettings(mode="reasoning", samples=2, pass_k=3), model=object(),
                            tokenizer=tokenizer)


def _cli(argv, monkeypatch):
    from rl import cli

    return cli.main(argv)


def test_cli_writes_json_with_comparison(tiny_model_dir, tiny_model_dir_plain, rows, tmp_path, monkeypatch, capsys):
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "res" / "results.json"
    rc = _cli(["eval", "next-token", "--model", str(tiny_model_dir), "--data", str(data), "--compare",
               str(tiny_model_dir_plain), "--output", str(out), "--batch-size", "3", "--device", "cpu"], monkeypatch)
    assert rc == 0
    payload = json.loads(out.read_text())
    assert set(payload) == {"version", "written_by", "model", "compare", "difference"}
    assert payload["model"]["splits"]["medium"]["count"] == 3 and payload["compare"]["rows"] == 7
    # the two fixtures are the same random weights: identical predictions, zero difference
    assert payload["difference"]["all"]["accuracy"] == 0.0
    assert "difference" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_exit_2(tmp_path, tiny_model_dir, monkeypatch, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"context": "a", "continuation": "b", "boundaries": [1]}) + "\n")
    rc = _cli(["eval", "next-token", "--model", str(tiny_model_dir), "--data", str(data)], monkeypatch)
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln.lower()]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("error: ") and "['entropy']" in errors[0]
