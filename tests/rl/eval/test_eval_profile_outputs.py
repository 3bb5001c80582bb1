"""`rl eval next-token --output` and `rl profile entropy -o`: checked before any model loads, nothing
of the user's is lost, each refusal is one line (issue 11)."""

from __future__ import annotations

import json

import pytest

from rl.cli import main

ROWS = [{"context": "The sea and the sky are", "continuation": " blue", "boundaries": [5], "entropy": 1.2,
         "prompt": "Continue: The sea and the sky are"}] * 3


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("The sea and the sky are blue today. " * 20)
    (tmp_path / "prompts.txt").write_text("What is 2+2?\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.json").write_text('{"mine": true}')
    return tmp_path


@pytest.fixture
def no_model_load(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad argument was reported")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv, match) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err


def ev(model, *args):
    return ["eval", "next-token", "--model", str(model), "--data", "heldout.jsonl", "--device", "cpu", *args]


def prof(model, *args):
    return ["profile", "entropy", "--model", str(model), "--device", "cpu", *args]


@pytest.mark.parametrize("out, match", [
    (".", "is the current directory"), ("..", "above the current one"), ("mine", "is a directory"),
    ("notes.json", "not written by `rl eval next-token`"), ("heldout.jsonl", "is the --data itself"),
])
def test_eval_output_checked_before_evaluating(work, capsys, tiny_model_dir, no_model_load, out, match):
    before = snapshot(work)
    one_line_error(capsys, ev(tiny_model_dir, "--output", out), match)
    assert snapshot(work) == before


@pytest.mark.parametrize("args, match", [
    (["--compare", "./no-such-model"], "--compare: model './no-such-model': no such file or directory"),
    (["--compare", "org/not-downloaded"], "--compare: cannot read the config of 'org/not-downloaded'"),
    (["--max-context-tokens", "0"], "--max-context-tokens: must be at least 1"),
])
def test_eval_arguments_checked_before_the_first_model(work, capsys, tiny_model_dir, no_model_load, args, match):
    one_line_error(capsys, ev(tiny_model_dir, *args), match)


def test_eval_output_rewrites_its_own_result_atomically(work, capsys, tiny_model_dir):
    assert main(ev(tiny_model_dir, "--output", "res/r.json")) == 0
    assert main(ev(tiny_model_dir, "--output", "res/r.json", "--limit", "1")) == 0  # a previous result: replaced
    assert json.loads((work / "res" / "r.json").read_text())["model"]["rows"] == 1
    assert "wrote res/r.json" in capsys.readouterr().out
    assert sorted(p.name for p in (work / "res").iterdir()) == ["r.json"]
    assert main(ev(tiny_model_dir, "--output", "notes.json", "--overwrite")) == 0  # explicit


@pytest.mark.parametrize("out, match", [
    (".", "is the current directory"), ("..", "above the current one"), ("notes.json", "existing file"),
    ("mine", "not written by `rl profile entropy`"), ("corpus", "is the --data itself"),
    ("corpus/profile", "inside the --data directory"),
])
def test_profile_output_checked_before_scoring(work, capsys, tiny_model_dir, no_model_load, out, match):
    before = snapshot(work)
    one_line_error(capsys, prof(tiny_model_dir, "--data", "corpus", "-o", out), match)
    assert snapshot(work) == before


@pytest.mark.parametrize("args, match", [
    (["--generate", "prompts.txt", "--samples", "2", "--temperature", "0"], "must be > 0 to draw several --samples"),
    (["--data", "corpus", "--temperature", "0"], "--temperature: 0 has no entropy to measure on a corpus"),
    (["--data", "corpus", "--max-tokens", "0"], "--max-tokens: must be at least 1"),
    (["--data", "corpus", "--max-documents", "0"], "--max-documents: must be at least 1"),
])
def test_profile_values_never_silently_replaced(work, capsys, tiny_model_dir, no_model_load, args, match):
    one_line_error(capsys, prof(tiny_model_dir, *args, "-o", "p"), match)


def test_profile_replaces_its_own_output_and_records_the_entropy_temperature(work, capsys, tiny_model_dir):
    argv = prof(tiny_model_dir, "--generate", "prompts.txt", "--max-new-tokens", "3", "--temperature", "0", "-o", "p")
    assert main(argv) == 0
    assert main(argv) == 0  # a previous profile: replaced
    out = capsys.readouterr().out
    for name in ("entropy_profile.json", "entropy_histogram.png", "forking_tokens.png", "rl-output.json"):
        assert f"wrote p/{name}" in out
    settings = json.loads((work / "p" / "entropy_profile.json").read_text())["settings"]
    assert settings["temperature"] == 0 and settings["entropy_temperature"] == 1.0
    (work / "p" / "keep.md").write_text("mine")
    one_line_error(capsys, argv, "did not write (keep.md)")
    assert (work / "p" / "keep.md").read_text() == "mine"
