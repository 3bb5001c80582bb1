"""Bad models: one `error:` line naming the path and the fix, exit 2, before any weights load; a tokenizer
without a chat template falls back to plain-text prompts and says so."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.faults.helpers import one_error_line, rpt_rows, run_cli, write_recipe


def _broken_model(tmp_path, tiny_model_dir, kind):
    if kind == "missing-path":
        return str(tmp_path / "no-such-model")
    if kind == "unknown-builtin":
        return "builtin:no-such-model"
    if kind == "hub-id-offline":
        return "no-org/no-such-model-xyz"
    d = tmp_path / "model"
    if kind == "empty-dir":
        d.mkdir()
        return str(d)
    if kind == "lora-adapter":
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
        (d / "adapter_model.safetensors").write_bytes(b"x")
        return str(d)
    shutil.copytree(tiny_model_dir, d)
    if kind == "no-config":
        (d / "config.json").unlink()
    elif kind == "config-not-json":
        (d / "config.json").write_text("{oops")
    elif kind == "no-weights":
        (d / "model.safetensors").unlink()
    elif kind == "truncated-weights":
        w = d / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif kind == "garbage-weights":
        (d / "model.safetensors").write_bytes(b"\xff" * 64)
    elif kind == "missing-shard":
        (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    elif kind == "no-tokenizer":
        for f in d.iterdir():
            if "token" in f.name or f.name in ("vocab.json", "merges.txt"):
                f.unlink()
    elif kind == "tokenizer-bigger-than-model":
        cfg = json.loads((d / "config.json").read_text())
        cfg["vocab_size"] = 1000
        (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


CASES = [
    ("missing-path", ["no-such-model", "no such file or directory"]),
    ("unknown-builtin", ["unknown builtin model"]),
    ("hub-id-offline", ["no-org/no-such-model-xyz", "download it first"]),
    ("empty-dir", ["has no config.json"]),
    ("no-config", ["has no config.json"]),
    ("config-not-json", ["config.json is not valid JSON"]),
    ("no-weights", ["has no weights"]),
    ("truncated-weights", ["model.safetensors: truncated data"]),
    ("garbage-weights", ["model.safetensors"]),
    ("missing-shard", ["lacks shard(s) ['model-00002-of-00002.safetensors']"]),
    ("no-tokenizer", ["has no tokenizer files"]),
    ("lora-adapter", ["model_name_or_path: ", "is a LoRA adapter", "merge it"]),
    ("tokenizer-bigger-than-model", ["50257 tokens but the model only 1000 embeddings"]),
]


@pytest.mark.parametrize("kind,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_policy_model_is_one_line_before_loading(tmp_path, tiny_model_dir, forbid_model_load, kind, expected):
    recipe = write_recipe(tmp_path, _broken_model(tmp_path, tiny_model_dir, kind))
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    for needle in expected:
        assert needle in line, line


@pytest.mark.parametrize("kind", ["missing-path", "truncated-weights", "no-tokenizer", "lora-adapter"])
def test_bad_proxy_model_is_one_line_before_loading(tmp_path, tiny_model_dir, forbid_model_load, kind):
    corpus = tmp_path / "c.txt"
    corpus.write_text("The sea and the sky are blue today. " * 10)
    recipe = write_recipe(tmp_path, tiny_model_dir, corpus=str(corpus), proxy_model=_broken_model(tmp_path,
                          tiny_model_dir, kind))
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    assert str(tmp_path) in line, line
    assert line.startswith("error: proxy_model") and "model_name_or_path" not in line, line


@pytest.mark.slow
def test_no_chat_template_trains_on_plain_text_and_says_so(tmp_path, tiny_model_dir_plain, caplog):
    rows = [{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rpt_rows(8)]
    recipe = write_recipe(tmp_path, tiny_model_dir_plain, rows=rows, max_steps=1, save_strategy="no")
    rc, lines = run_cli(["train", "--config", str(recipe)])
    assert rc == 0, lines
    warned = [r.getMessage() for r in caplog.records if "no chat template" in r.getMessage()]
    assert len(warned) == 1, warned
