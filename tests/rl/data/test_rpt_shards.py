"""Sharded, streamed, resumable `rl data rpt` (issue 28): N shards merged = one process, in any order,
after a real kill, under `accelerate launch`; bad shard input is one line and overwrites nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from rl.cli import main

WORDS = ("the of a to is and in that it for as with was on be at by this had not are but from or have an they which "
         "one you were all we her she there would their will when who him been has more if no out so up said what "
         "its about than into them can only other new some could time these two may then do first any my now such").split()


def _docs(n=14, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 60))) + "." for _ in range(n)]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs()), encoding="utf-8")
    return tmp_path


def rpt(model, out, *args) -> list[str]:
    return ["data", "rpt", "--corpus", "c.jsonl", "--proxy-model", str(model), "--output", str(out),
            "--min-entropy", "0", "--min-context-tokens", "4", "--window-tokens", "16", "--proxy-batch-size", "3",
            "--block-documents", "2", "--max-per-doc", "3", *args]


def files(out) -> dict:
    """Every file of a built output but its marker (which records when it was written), by name."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "rl-output.json"}


def refused(capsys, argv, match):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


def test_three_shards_in_any_order_equal_one_process(work, tiny_model_dir):
    assert main(rpt(tiny_model_dir, "one")) == 0
    one = files(work / "one")
    assert {"rpt_build.json", "state.json", "dataset_info.json"} <= set(one) and not (work / "one.shards").exists()
    for i in (2, 0):
        assert main(rpt(tiny_model_dir, "three", "--num-shards", "3", "--shard-index", str(i))) == 0
        assert not (work / "three").exists()
    shard = work / "three.shards" / "shard-00002-of-00003"
    assert json.loads((shard / "rl-output.json").read_text())["command"] == "rl data rpt (shard)"
    assert main(rpt(tiny_model_dir, "three", "--num-shards", "3", "--shard-index", "1")) == 0  # the last one merges
    assert files(work / "three") == one  # rows, order, fingerprint, summary: byte for byte
    assert not (work / "three.shards").exists()
    from datasets import load_from_disk

    rows = load_from_disk(str(work / "one"))
    assert len(rows) > 10 and len({r["doc_id"] for r in rows}) > 7
    # a finished build is not built again by a late shard
    assert main(rpt(tiny_model_dir, "three", "--num-shards", "3", "--shard-index", "0")) == 0
    assert files(work / "three") == one


def test_merge_by_hand_and_what_it_refuses(work, tiny_model_dir, capsys):
    for i in (0, 2):
        assert main(rpt(tiny_model_dir, "out", "--num-shards", "3", "--shard-index", str(i))) == 0
    refused(capsys, ["data", "merge", "--output", "out"], "shard 1 of 3 is missing")
    assert not (work / "out").exists()
    # shard 1 built with another setting: it does not merge, and names the setting
    before = files(work / "out.shards")
    refused(capsys, rpt(tiny_model_dir, "out", "--num-shards", "3", "--shard-index", "1", "--seed", "5"),
            "shard-00000-of-00003 does not match this shard (other settings: seed)")
    assert files(work / "out.shards") == before and not (work / "out").exists()  # nothing built, removed or rewritten
    refused(capsys, rpt(tiny_model_dir, "out", "--num-shards", "3", "--shard-index", "3"),
            "--shard-index 3: out of range for --num-shards 3")
    refused(capsys, rpt(tiny_model_dir, "out", "--num-shards", "3"), "--num-shards and --shard-index: give both")


def test_changed_corpus_is_refused_before_any_work(work, tiny_model_dir, capsys):
    assert main(rpt(tiny_model_dir, "out", "--num-shards", "2", "--shard-index", "0")) == 0
    corpus = work / "c.jsonl"
    corpus.write_text(corpus.read_text() + json.dumps({"text": "one more document for the corpus."}) + "\n")
    before = files(work / "out.shards")
    refused(capsys, rpt(tiny_model_dir, "out", "--num-shards", "2", "--shard-index", "1"),
            "shard-00000-of-00002 does not match this shard (corpus files changed: c.jsonl)")
    # run again against the changed corpus, shard 0 is refused too (started from other files), not redone
    refused(capsys, rpt(tiny_model_dir, "out", "--num-shards", "2", "--shard-index", "0"),
            "shard-00000-of-00002 was started from other settings or files (corpus files changed: c.jsonl)")
    assert files(work / "out.shards") == before and not (work / "out").exists()


def test_merge_waits_for_a_live_merger_and_rl_data_merge_finishes(work, tiny_model_dir, capsys):
    assert main(rpt(tiny_model_dir, "one")) == 0
    (work / "two.shards").mkdir()
    lock = work / "two.shards" / "merge.lock"
    import socket

    lock.write_text(f"{os.getppid()} {socket.gethostname()}")  # a live process holds the merge
    for i in (0, 1):
        assert main(rpt(tiny_model_dir, "two", "--num-shards", "2", "--shard-index", str(i))) == 0
    assert not (work / "two").exists()
    lock.unlink()
    corpus = work / "c.jsonl"
    stat = corpus.stat()
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the corpus "changed" since the shards
    refused(capsys, ["data", "merge", "--output", "two"], "the inputs changed since the shards were built (corpus files "
            "changed: c.jsonl)")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert main(["data", "merge", "--output", "two"]) == 0
    assert files(work / "two") == files(work / "one")


_SLOW = """
import sys, time
from rl.data import rpt
block = rpt.RowMaker.block
rpt.RowMaker.block = lambda self, docs: (time.sleep(0.4), block(self, docs))[1]
from rl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(argv, cwd, slow=False):
    from tests.ranks import rank_env

    cmd = [sys.executable, "-c", _SLOW, *argv] if slow else [sys.executable, "-m", "rl.cli", *argv]
    return subprocess.Popen(cmd, cwd=cwd, env=rank_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_killed_build_resumes_where_it_stopped_and_matches(work, tiny_model_dir):
    """A real SIGKILL after a few blocks: run again, the build resumes at the next block (the blocks
    done before are not rebuilt) and its output is byte-identical to an uninterrupted build."""
    reference = _run(rpt(tiny_model_dir, "ref"), work)
    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    progress = work / "out.shards" / "shard-00000-of-00001" / "progress.json"
    proc = _run(rpt(tiny_model_dir, "out"), work, slow=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if json.loads(progress.read_text())["next_block"] >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    state = json.loads(progress.read_text())
    assert not state["done"] and 3 <= state["next_block"] < 7 and not (work / "out").exists()
    resumed = _run(rpt(tiny_model_dir, "out"), work)
    assert resumed.wait(timeout=300) == 0
    log = resumed.stdout.read()
    assert f"at block {state['next_block']} ({state['blocks_built']} blocks of it built before are kept)" in log, log
    assert files(work / "out") == files(work / "ref")
    assert not (work / "out.shards").exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_rank_accelerate_launch_builds_two_shards_and_merges(work, tiny_model_dir):
    from tests.ranks import launch_ranks

    single = launch_ranks(["-m", "rl.cli", *rpt(tiny_model_dir, "one")], ranks=1, config=None, cwd=work, check=True)
    assert single.returncode == 0
    launched = launch_ranks(["-m", "rl.cli", *rpt(tiny_model_dir, "two")], ranks=2, cwd=work, check=True,
                            env={"ACCELERATE_USE_CPU": "1"})
    log = launched.stdout + launched.stderr
    assert "shard-00000-of-00002" in log and "shard-00001-of-00002" in log, log[-3000:]
    assert files(work / "two") == files(work / "one")
