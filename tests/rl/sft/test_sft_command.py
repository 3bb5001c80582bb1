"""`rl sft`: the shipped CAFT recipes dry-run clean (stand-ins for what a user prepares) and comment every
field; bad CAFT input is one line before any model loads; the CPU smoke recipes train for real (stage 1
then stage 2), heads apart from the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rl.cli import main
from tests.faults.helpers import one_error_line, run_cli

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "recipes" / "caft").glob("*.yaml"))


def _heads(tmp_path: Path, model_dir: Path, num_heads: int = 4, **config) -> Path:
    """A heads directory saved for the tiny model (stand-in for stage 1's output)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rl.sft.heads import build_heads, heads_state, model_identity, write_heads

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    heads = build_heads(model, num_heads, "decoder_layer")
    path = tmp_path / "heads"
    write_heads(path, heads_state(heads), heads, {**model_identity(model.config, str(model_dir)), **config})
    del torch
    return path


def _stand_ins(recipe: Path, tmp_path: Path, model_dir: Path, heads: Path) -> list[str]:
    data = yaml.safe_load(recipe.read_text())
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f" A{i}."}) + "\n" for i in range(4)))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hi.\nSay bye.\n")
    args = ["--output_dir", str(tmp_path / "run")]
    if data.get("dataset_path"):
        args += ["--dataset_path", str(rows)]
    if data.get("caft_prompts"):
        args += ["--caft_prompts", str(prompts)]
    args += ["--caft_heads_path", str(heads if data.get("caft_stage") == "finetune" else tmp_path / "new-heads")]
    if recipe.name.startswith("smoke-"):
        args += ["--model_name_or_path", str(model_dir)]
    return args


def test_the_recipes_exist():
    assert {p.name for p in RECIPES} >= {"smoke-heads.yaml", "smoke-finetune.yaml", "llama3.1-8b-heads.yaml",
                                         "llama3.1-8b-lora.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_dry_runs_clean(recipe, tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    heads = _heads(tmp_path, tiny_model_dir)
    argv = ["sft", "--config", str(recipe.relative_to(ROOT)), "--dry-run", *_stand_ins(recipe, tmp_path,
                                                                                       tiny_model_dir, heads)]
    assert main(argv) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "rl sft --dry-run: ok (CAFT stage" in out
    if not recipe.name.startswith("smoke-"):
        assert "not checked offline" in out  # a hub model: reported as such, never as a problem


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_field_has_a_comment(recipe):
    text = recipe.read_text()
    assert text.startswith("# ")
    for line in text.splitlines():
        if line and not line.startswith(("#", " ", "env:")):
            assert "#" in line, f"{recipe.name}: {line}"


def test_dry_run_lists_every_problem(tmp_path, tiny_model_dir, capsys):
    recipe = ROOT / "recipes" / "caft" / "smoke-finetune.yaml"
    argv = ["sft", "--config", str(recipe), "--dry-run", "--model_name_or_path", str(tiny_model_dir),
            "--dataset_path", str(tmp_path / "no-rows.jsonl"), "--caft_heads_path", str(tmp_path / "no-heads")]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "dataset_path:" in out and "caft_heads_path:" in out


BAD = [
    ("no-heads-path", ["--caft_heads_path", "{tmp}/nope"], ["caft_heads_path:", "does not exist"]),
    ("heads-other-size", ["--caft_heads_path", "{heads_small}"], ["caft_heads_path:", "num_heads=2"]),
    ("heads-other-model", ["--caft_heads_path", "{heads_other}"], ["caft_heads_path:", "hidden_size=128"]),
    ("not-a-heads-dir", ["--caft_heads_path", "{tmp}"], ["caft_heads_path:", "holds no CAFT heads"]),
    ("bad-stage", ["--caft_stage", "both"], ["--caft_stage", "heads"]),
    ("decay-zero", ["--caft_decay", "0"], ["caft_decay"]),
    ("heads-stage-lora", ["--caft_stage", "heads", "--use_peft", "true"], ["use_peft:"]),
    ("bert-no-decoder-layers", ["--model_name_or_path", "{bert}"], ["aux_mtp:", "BertLMHeadModel"]),
]


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory, tiny_model_dir):
    from transformers import BertConfig, BertLMHeadModel

    from tests.tiny_models import gpt2_tokenizer

    tmp = tmp_path_factory.mktemp("sft-bad")
    small = _heads(tmp / "small", tiny_model_dir, num_heads=2)
    other = _heads(tmp / "other", tiny_model_dir, hidden_size=128)
    bert = tmp / "bert"
    BertLMHeadModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               vocab_size=50257, is_decoder=True)).save_pretrained(bert)
    gpt2_tokenizer().save_pretrained(bert)
    rows = tmp / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f" A{i}."}) + "\n" for i in range(4)))
    return {"tmp": str(tmp), "heads_small": str(small), "heads_other": str(other), "bert": str(bert),
            "rows": str(rows), "model": str(tiny_model_dir), "good_heads": str(_heads(tmp / "good", tiny_model_dir))}


@pytest.mark.parametrize("name,extra,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_caft_input_is_one_line_before_models_load(name, extra, expect, bad_world, monkeypatch, tmp_path):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("a model loaded before the bad input was reported"))
    argv = ["sft", "--config", str(ROOT / "recipes" / "caft" / "smoke-finetune.yaml"),
            "--model_name_or_path", bad_world["model"], "--dataset_path", bad_world["rows"],
            "--caft_heads_path", bad_world["good_heads"], "--output_dir", str(tmp_path / "run"),
            *[a.format(**bad_world) for a in extra]]
    line = one_error_line(*run_cli(argv))
    for needle in expect:
        assert needle in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_smoke_recipes_train_stage_1_then_stage_2(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    heads = tmp_path / "heads"
    stage1 = ["sft", "--config", "recipes/caft/smoke-heads.yaml", "--model_name_or_path", str(tiny_model_dir),
              "--output_dir", str(tmp_path / "s1"), "--caft_heads_path", str(heads),
              "--caft_distill_max_new_tokens", "8"]
    assert main(stage1) == 0
    config = json.loads((heads / "caft_heads.json").read_text())
    assert config["num_heads"] == 4 and set(config["heldout_top1"]) == {"+2", "+3", "+4", "+5"}
    assert json.loads((heads / "rl-output.json").read_text())["command"] == "rl sft (caft heads)"
    assert (tmp_path / "s1" / "distilled" / "rows.jsonl").is_file()
    assert main(stage1) == 0  # its own outputs are reused / replaced, never refused
    stage2 = ["sft", "--config", "recipes/caft/smoke-finetune.yaml", "--model_name_or_path", str(tiny_model_dir),
              "--output_dir", str(tmp_path / "s2"), "--caft_heads_path", str(heads),
              "--dataset_path", str(tmp_path / "s1" / "distilled" / "rows.jsonl")]
    assert main(stage2) == 0
    assert (tmp_path / "s2" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "s2" / "checkpoint-2" / "COMPLETE").is_file()
    assert not list((tmp_path / "s2").rglob("caft_heads*"))  # the heads stay apart from the policy
