"""`rl data rpt -o`: the data-loss cases of issue 11, through the CLI (tiny local proxy model)."""

from __future__ import annotations

import json

import pytest

from rl.cli import main

DOCS = ["The derivative of x squared is two x. Hence the slope at one is two, and the tangent line is y = 2x - 1.",
        "Let n be an integer. If n is even then n squared is even; so the claim holds for every even n here."]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    return tmp_path


def rpt(model, *args) -> list[str]:
    return ["data", "rpt", "--proxy-model", str(model), "--min-entropy", "0", "--min-context-tokens", "4",
            "--window-tokens", "16", *args]


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(capsys, argv, match):
    capsys.readouterr()  # drop what earlier runs printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


@pytest.mark.parametrize("out,match", [
    (".", "is the current directory"),
    ("..", "above the current one"),
    ("wiki.jsonl", "is the --corpus itself"),
    ("mine", "not written by `rl data rpt`"),
    ("run", "not written by `rl data rpt`"),
    ("notes.txt", "existing file, not a directory"),
])
def test_nothing_of_the_users_is_touched(work, capsys, tiny_model_dir, out, match):
    (work / "mine").mkdir()
    (work / "mine" / "thesis.tex").write_text("years of work")
    (work / "run" / "checkpoint-10").mkdir(parents=True)
    (work / "run" / "checkpoint-10" / "model.safetensors").write_bytes(b"weights")
    (work / "notes.txt").write_text("notes")
    before = snapshot(work)
    refused(capsys, rpt(tiny_model_dir, "--corpus", "wiki.jsonl", "-o", out), match)
    assert snapshot(work) == before


def test_corpus_dir_as_output_and_inside_it(work, capsys, tiny_model_dir):
    corp = work / "corp"
    corp.mkdir()
    (corp / "a.txt").write_text(DOCS[0])
    before = snapshot(work)
    refused(capsys, rpt(tiny_model_dir, "--corpus", "corp", "-o", "corp", "--overwrite"), "is the --corpus itself")
    refused(capsys, rpt(tiny_model_dir, "--corpus", "corp", "-o", "corp/rpt"), "inside the corpus directory")
    refused(capsys, rpt(tiny_model_dir, "--corpus", "corp", "-o", str(tiny_model_dir), "--overwrite"),
            "is the --proxy-model itself")
    assert snapshot(work) == before


def test_jsonl_goes_inside_the_output_never_over_the_corpus(work, capsys, tiny_model_dir):
    corpus_bytes = (work / "wiki.jsonl").read_bytes()
    (work / "rpt-v1.jsonl").write_text("unrelated")
    assert main(rpt(tiny_model_dir, "--corpus", "wiki.jsonl", "-o", "wiki", "--jsonl")) == 0
    assert main(rpt(tiny_model_dir, "--corpus", "wiki.jsonl", "-o", "rpt-v1.5", "--jsonl")) == 0
    out = capsys.readouterr().out
    assert (work / "wiki.jsonl").read_bytes() == corpus_bytes
    assert (work / "rpt-v1.jsonl").read_text() == "unrelated"
    assert (work / "wiki" / "rows.jsonl").is_file() and (work / "rpt-v1.5" / "rows.jsonl").is_file()
    for f in ("rows.jsonl", "rpt_build.json", "rl-output.json", "state.json"):
        assert f"wrote wiki/{f}" in out  # every file written is printed


def test_rerun_replaces_its_own_output_but_keeps_a_user_file(work, capsys, tiny_model_dir):
    argv = rpt(tiny_model_dir, "--corpus", "wiki.jsonl", "-o", "data")
    assert main(argv) == 0
    assert main(argv + ["--max-per-doc", "1"]) == 0  # exactly a previous output: replaced
    rows = json.loads((work / "data" / "rpt_build.json").read_text())["summary"]["positions_kept"]
    assert rows == 2
    (work / "data" / "README.md").write_text("my notes")
    refused(capsys, argv, "did not write (README.md)")
    assert (work / "data" / "README.md").read_text() == "my notes"
    assert main(argv + ["--overwrite"]) == 0  # explicit


def test_stale_tmp_is_never_merged(work, tiny_model_dir):
    stale = work / "out.tmp"  # what a failed build of an older version left
    stale.mkdir()
    (stale / "state.json").write_text("{}")
    (stale / "data-00000-of-00001.arrow").write_bytes(b"old rows")
    user_tmp = work / "notes.tmp"
    user_tmp.mkdir()
    (user_tmp / "keep.txt").write_text("mine")
    assert main(rpt(tiny_model_dir, "--corpus", "wiki.jsonl", "-o", "out")) == 0
    assert not stale.exists()
    assert (user_tmp / "keep.txt").read_text() == "mine"
    marker = json.loads((work / "out" / "rl-output.json").read_text())
    assert sorted(p.name for p in (work / "out").iterdir()) == sorted(marker["files"] + ["rl-output.json"])
