"""rl/runtime/outputs.py: the general safe-output rule (pure filesystem logic, no models)."""

from __future__ import annotations

import json
import os

import pytest

from rl.errors import UserError
from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.outputs import MARKER, check_output_dir, check_output_file, clean_stale_temps, replace_dir

CMD = "rl test"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("path", [".", "..", "./", "../..", "/"])
def test_cwd_and_its_ancestors_are_refused(in_tmp, path):
    with pytest.raises(UserError, match="current directory|above the current") as err:
        check_output_dir(path, "--output", CMD)
    assert _one_line(err).startswith("--output: ")


def test_an_input_or_a_dir_containing_it_is_refused(in_tmp):
    corpus = in_tmp / "corp"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello")
    for out in ("corp", str(corpus), "corp/../corp"):
        with pytest.raises(UserError, match="is the corpus itself"):
            check_output_dir(out, "--output", CMD, overwrite=True, inputs={"corpus": "corp"})
    nested = in_tmp / "data" / "wiki.jsonl"
    nested.parent.mkdir()
    nested.write_text("{}\n")
    with pytest.raises(UserError, match="contains the corpus"):
        check_output_dir("data", "--output", CMD, overwrite=True, inputs={"corpus": str(nested)})
    with pytest.raises(UserError, match="inside the corpus directory"):
        check_output_dir("corp/out", "--output", CMD, inputs={"corpus": "corp"}, containers={"corpus": "corp"})
    # hub ids and builtin names are not paths: no false alarm
    assert check_output_dir("out", "--output", CMD, inputs={"model": "org/model", "corpus": "builtin:champ"})


def test_existing_file_and_foreign_dir_are_refused_user_files_survive(in_tmp):
    (in_tmp / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="existing file, not a directory"):
        check_output_dir("notes.txt", "--output", CMD, overwrite=True)
    mine = in_tmp / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=f"no {MARKER}.*--overwrite") as err:
        check_output_dir("mine", "-o", CMD)
    assert _one_line(err).startswith("-o: ")
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert check_output_dir("mine", "-o", CMD, overwrite=True) == mine.resolve()


def test_previous_output_is_replaced_atomically_but_not_with_a_user_file_in_it(in_tmp):
    out = in_tmp / "out"
    with replace_dir(out, CMD) as tmp:
        (tmp / "rows.txt").write_text("v1")
    assert json.loads((out / MARKER).read_text())["files"] == ["rows.txt"]
    check_output_dir("out", "--output", CMD)  # exactly a previous output: fine
    with replace_dir(out, CMD) as tmp:
        (tmp / "rows.txt").write_text("v2")
    assert (out / "rows.txt").read_text() == "v2"
    with pytest.raises(UserError, match="holds the output of `rl test`, not of `rl other`"):
        check_output_dir("out", "--output", "rl other")  # another command's output is not ours
    (out / "my-notes.md").write_text("keep me")
    with pytest.raises(UserError, match="did not write \\(my-notes.md\\)"):
        check_output_dir("out", "--output", CMD)
    assert not [p for p in in_tmp.iterdir() if p.name.startswith(".out")]  # no temp left behind


def test_a_failed_build_leaves_the_target_untouched(in_tmp):
    out = in_tmp / "out"
    with replace_dir(out, CMD) as tmp:
        (tmp / "rows.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with replace_dir(out, CMD) as tmp:
            (tmp / "rows.txt").write_text("half")
            raise RuntimeError("killed mid-build")
    assert (out / "rows.txt").read_text() == "good"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out"]


def test_recheck_refuses_a_target_that_changed_during_the_build(in_tmp):
    out = in_tmp / "out"

    def recheck():
        check_output_dir(out, "--output", CMD)

    with pytest.raises(UserError):
        with replace_dir(out, CMD, recheck=recheck) as tmp:
            out.mkdir()
            (out / "user.txt").write_text("appeared meanwhile")
            (tmp / "rows.txt").write_text("x")
    assert (out / "user.txt").read_text() == "appeared meanwhile"


def test_stale_temps_are_removed_never_merged(in_tmp):
    out = in_tmp / "out"
    dead = 2 ** 22 + 12345  # above pid_max on Linux: never a live process
    stale = in_tmp / f".out.tmp-{dead}"
    stale.mkdir()
    (stale / "leftover.txt").write_text("old")
    user = in_tmp / ".out.tmp-notapid"
    user.mkdir()
    with replace_dir(out, CMD) as tmp:
        (tmp / "rows.txt").write_text("new")
    assert not stale.exists() and user.exists()
    assert not (out / "leftover.txt").exists()
    assert clean_stale_temps(out) == []


def test_file_outputs(in_tmp):
    (in_tmp / "d").mkdir()
    with pytest.raises(UserError, match="is a directory; give a file path"):
        check_output_file("d", "--output", CMD)
    (in_tmp / "paper.json").write_text('{"mine": 1}')
    with pytest.raises(UserError, match="not written by `rl test`.*--overwrite"):
        check_output_file("paper.json", "--output", CMD)
    check_output_file("paper.json", "--output", CMD, overwrite=True)
    atomic_write_text(in_tmp / "r.json", json.dumps({"written_by": CMD}))
    check_output_file("r.json", "--output", CMD)  # a previous result of the same command
    with pytest.raises(UserError, match="is the data itself"):
        check_output_file("paper.json", "--output", CMD, overwrite=True, inputs={"data": "paper.json"})
    with pytest.raises(FileExistsError):
        atomic_write_text(in_tmp / "r.json", "x", exclusive=True)
    assert json.loads((in_tmp / "r.json").read_text()) == {"written_by": CMD}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent_is_refused(in_tmp):
    ro = in_tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not a writable directory"):
            check_output_file(ro / "x.json", "--output", CMD)
    finally:
        ro.chmod(0o700)
