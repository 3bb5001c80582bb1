"""Reuse of built RPT data (`<output_dir>/rpt-data`): only when settings AND corpus files match."""

from __future__ import annotations

import json
import os

import pytest

from rl.data.settings import DEFAULT_RPT_PROMPT
from rl.data.fingerprint import corpus_fingerprint, describe_change
from rl.data.loading import rpt_reuse_decision
from rl.data.rpt import RPTBuildConfig, build_rpt_dataset
from rl.errors import UserError

DOC = "The derivative of x squared is two x. Hence the slope at one is two, and the tangent line is y = 2x - 1."


def _cfg(corpus, model):
    return RPTBuildConfig(corpus=str(corpus), proxy_model=str(model), min_entropy=0.0, min_context_tokens=4,
                          window_tokens=16, prompt_template=DEFAULT_RPT_PROMPT, chat="yes")


def test_corpus_fingerprint_sees_a_rewrite_of_the_same_size(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "aaaa"}) + "\n")
    before = corpus_fingerprint(str(f))
    f.write_text(json.dumps({"text": "bbbb"}) + "\n")
    os.utime(f, ns=(before["files"][0]["mtime_ns"] + 10**9,) * 2)
    after = corpus_fingerprint(str(f))
    assert before != after and describe_change(before, after) == "corpus files changed: c.jsonl"
    assert corpus_fingerprint("builtin:champ")["package"].startswith("champ-dataset==")


def test_changed_corpus_is_rebuilt_not_reused(tmp_path, tiny_model_dir):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": DOC}) + "\n")
    out = tmp_path / "run" / "rpt-data"
    build_rpt_dataset(_cfg(corpus, tiny_model_dir), out)
    assert rpt_reuse_decision(_cfg(corpus, tiny_model_dir), out) == (True, "same build settings and corpus files")
    stat = corpus.stat()
    corpus.write_text(json.dumps({"text": DOC.upper()}) + "\n")  # same size, new contents
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reuse, why = rpt_reuse_decision(_cfg(corpus, tiny_model_dir), out)
    assert not reuse and "corpus files changed: c.jsonl" in why


def test_rebuild_over_a_foreign_dir_stops_with_one_line(tmp_path, tiny_model_dir):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": DOC}) + "\n")
    out = tmp_path / "run" / "rpt-data"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("not RPT data")
    with pytest.raises(UserError, match=r"^output_dir \(its rpt-data\): .* not written by `rl data rpt`") as err:
        rpt_reuse_decision(_cfg(corpus, tiny_model_dir), out)
    assert "--overwrite" not in str(err.value)  # rl train has no such flag
    assert (out / "mine.txt").read_text() == "not RPT data"


@pytest.mark.parametrize("where", ["corpus-dir", "foreign-rpt-data", "rpt-data-is-a-file"])
def test_rl_train_never_builds_over_user_files(tmp_path, tiny_model_dir, where):
    from tests.faults.helpers import one_error_line, run_cli, write_recipe

    corpus = tmp_path / "corp"
    corpus.mkdir()
    (corpus / "a.txt").write_text(DOC)
    run = corpus if where == "corpus-dir" else tmp_path / "run"
    if where == "foreign-rpt-data":
        (run / "rpt-data").mkdir(parents=True)
        (run / "rpt-data" / "mine.txt").write_text("keep")
    elif where == "rpt-data-is-a-file":
        run.mkdir()
        (run / "rpt-data").write_text("keep")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    recipe = write_recipe(tmp_path, tiny_model_dir, corpus=str(corpus), output_dir=str(run), dataset_path=None)
    before[recipe] = recipe.read_bytes()
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    assert line.startswith("error: output_dir (its rpt-data): "), line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_data_from_an_older_builder_is_rebuilt_not_reused(tmp_path, tiny_model_dir):
    """Rows built before the proxy read BOS and the model's real logits have the same settings and
    inputs but other entropies: the builder version in the fingerprint keeps them from being reused."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": DOC}) + "\n")
    out = tmp_path / "run" / "rpt-data"
    build_rpt_dataset(_cfg(corpus, tiny_model_dir), out)
    record = out / "rpt_build.json"
    saved = json.loads(record.read_text())
    assert saved["config"].pop("builder") >= 2
    record.write_text(json.dumps(saved))
    reuse, why = rpt_reuse_decision(_cfg(corpus, tiny_model_dir), out)
    assert not reuse and "built by an older rl data rpt (builder 1" in why
