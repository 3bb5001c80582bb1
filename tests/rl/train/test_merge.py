"""`rl merge ADAPTER -o DIR` (rl/train/merge.py): the merged model computes what the adapter model
computes, loads as a plain model where rl train / rl data rpt / rl prune need one, and every bad input
is one line before any weights load."""

from __future__ import annotations

import json

import pytest

from rl.cli import main as rl_main
from tests.kit import cli_error

PROMPT = "The triangle has sides three, four and five."


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter on the tiny model (q/v projections and the MLP) with random, nonzero B (a fresh
    LoRA has B = 0 and would merge into the base unchanged), saved as rl train saves one: adapter
    weights, adapter_config.json naming the base, and the tokenizer with its chat template."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("lora") / "checkpoint-2"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    return path


def logits(model, tokenizer):
    import torch

    with torch.no_grad():
        return model(**tokenizer(PROMPT, return_tensors="pt")).logits.float()


def adapter_logits(base_dir, adapter_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    with_adapter = logits(model, tokenizer)
    with model.disable_adapter():
        without = logits(model, tokenizer)
    return with_adapter, without


def test_merged_model_equals_the_adapter_model_and_loads_as_a_plain_model(lora_dir, tiny_model_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.runtime.models import check_model_arg, check_model_dir, check_not_adapter, check_tokenizer
    from rl.runtime.outputs import MARKER

    out = tmp_path / "merged"
    assert rl_main(["merge", str(lora_dir), "-o", str(out)]) == 0
    assert f"merged model: {out}" in capsys.readouterr().out

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert next(merged.parameters()).dtype == torch.float32  # auto: the tiny base's dtype
    expected, base = adapter_logits(tiny_model_dir, lora_dir)
    got = logits(merged, tokenizer)
    assert (expected - base).abs().max() > 1e-2, "the adapter changes nothing: the comparison would be vacuous"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    # a plain transformers checkpoint: no adapter files, the tokenizer and chat template kept
    assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
    assert tokenizer.chat_template and tokenizer.chat_template == AutoTokenizer.from_pretrained(lora_dir).chat_template
    assert "lora" not in " ".join(merged.state_dict()).lower()
    # what rl train, rl data rpt --proxy-model and rl prune check before loading
    check_model_dir(str(out))
    check_not_adapter(str(out))
    check_tokenizer(tokenizer, str(out))
    assert check_model_arg(str(out), "--proxy-model") == str(out)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(PROMPT + " Nine plus sixteen is twenty five, so it is a right triangle.", encoding="utf-8")
    assert rl_main(["data", "rpt", "--proxy-model", str(out), "--corpus", str(corpus), "--min-entropy", "0",
                    "--min-context-tokens", "4", "--output", str(tmp_path / "rpt")]) == 0  # the RPT proxy
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "rl merge" and "model.safetensors" in marker["files"]

    # run again onto its own output: replaced; the inputs are untouched
    before = {p.name: p.read_bytes() for p in lora_dir.iterdir() if p.is_file()}
    assert rl_main(["merge", str(lora_dir), "-o", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in lora_dir.iterdir() if p.is_file()} == before


def test_dtype_and_base_flag(lora_dir, tiny_model_dir, tmp_path):
    """--dtype bfloat16 saves bf16 weights; --base names the base when the adapter config does not, and
    the tokenizer comes from the base when the adapter dir has none."""
    import shutil

    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bare = tmp_path / "bare-adapter"
    bare.mkdir()
    shutil.copy(lora_dir / "adapter_model.safetensors", bare)
    config = json.loads((lora_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (bare / "adapter_config.json").write_text(json.dumps(config))

    out = tmp_path / "merged-bf16"
    assert rl_main(["merge", str(bare), "--base", str(tiny_model_dir), "--dtype", "bfloat16", "-o", str(out)]) == 0
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    expected, _ = adapter_logits(tiny_model_dir, lora_dir)
    got = logits(merged, AutoTokenizer.from_pretrained(out))
    assert (got - expected).abs().max() < 0.1  # bf16 rounding of the merged weights only
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template


@pytest.fixture
def no_weights(monkeypatch):
    """Refusals happen before any weights load."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def test_bad_inputs_are_one_line_before_weights_load(lora_dir, tiny_model_dir, tmp_path, capsys, no_weights):
    out = str(tmp_path / "out")
    err = cli_error(capsys, ["merge", str(tmp_path / "nope"), "-o", out])
    assert "ADAPTER" in err and "no such directory" in err
    err = cli_error(capsys, ["merge", str(tiny_model_dir), "-o", out])
    assert "is a full model" in err
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (run / "checkpoint-4" / f).write_bytes((lora_dir / f).read_bytes())
    err = cli_error(capsys, ["merge", str(run), "-o", out])
    assert "no adapter_config.json" in err and str(run / "checkpoint-4") in err

    def adapter(name, config=None, weights=True, truncate=False):
        d = tmp_path / name
        d.mkdir()
        cfg = json.loads((lora_dir / "adapter_config.json").read_text())
        (d / "adapter_config.json").write_text(json.dumps(cfg if config is None else {**cfg, **config}))
        if weights:
            data = (lora_dir / "adapter_model.safetensors").read_bytes()
            (d / "adapter_model.safetensors").write_bytes(data[: len(data) // 2] if truncate else data)
        return str(d)

    err = cli_error(capsys, ["merge", adapter("nobase", {"base_model_name_or_path": None}), "-o", out])
    assert "names no base model" in err and "--base" in err
    err = cli_error(capsys, ["merge", adapter("gone", {"base_model_name_or_path": str(tmp_path / "deleted")}), "-o", out])
    assert "base_model_name_or_path" in err and "no such file or directory" in err
    err = cli_error(capsys, ["merge", str(lora_dir), "--base", str(lora_dir), "-o", out])
    assert "--base" in err and "LoRA adapter" in err
    err = cli_error(capsys, ["merge", adapter("noweights", weights=False), "-o", out])
    assert "no adapter weights" in err
    err = cli_error(capsys, ["merge", adapter("torn", truncate=True), "-o", out])
    assert "truncated" in err
    err = cli_error(capsys, ["merge", adapter("prompt", {"peft_type": "PROMPT_TUNING"}), "-o", out])
    assert "PROMPT_TUNING" in err


def test_output_refusals(lora_dir, tiny_model_dir, tmp_path, capsys, no_weights):
    err = cli_error(capsys, ["merge", str(lora_dir), "-o", str(lora_dir)])
    assert "-o/--output" in err or "--output" in err
    err = cli_error(capsys, ["merge", str(lora_dir), "-o", str(lora_dir / "merged")])
    assert "inside" in err and not (lora_dir / "merged").exists()
    err = cli_error(capsys, ["merge", str(lora_dir), "-o", str(tiny_model_dir / "merged")])
    assert "inside" in err  # the base (named by the adapter config) is an input too
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    err = cli_error(capsys, ["merge", str(lora_dir), "-o", str(taken)])
    assert "--overwrite" in err and (taken / "notes.txt").read_text() == "mine"
