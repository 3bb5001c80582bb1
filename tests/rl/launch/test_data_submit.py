"""`rl submit data rpt` (rl/launch/data_submit.py) and `rl data rpt --dry-run` (rl/data/estimate.py): the shard
plan and work estimate, the rendered array script (header, arguments as typed, fake sbatch), the rendered
tasks building the shards and merging into exactly a one-process build, and bad input in one line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from rl.cli import main
from tests.rl.data.test_rpt_shards import files, refused, rpt, work  # noqa: F401  (fixture)

ARGS = ["--min-entropy", "0", "--min-context-tokens", "4", "--window-tokens", "16", "--proxy-batch-size", "3",
        "--block-documents", "2", "--max-per-doc", "3"]


def submit(model, out, *args) -> list[str]:
    return ["submit", *rpt(model, out, *args)]


def header(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]


def set_args(text: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("set -- "))
    out = subprocess.run(["bash", "-c", f'{line}\nprintf "%s\\0" "$@"'], capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:-1]


def test_rl_data_rpt_dry_run_shows_the_plan_and_writes_nothing(work, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    assert main(rpt(tiny_model_dir, "out", "--num-shards", "3", "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "3 shards of out, blocks of 2 documents" in text and "(read in full, exact)" in text
    assert "estimate:" in text and "over the first 14 documents" in text
    docs = [json.loads(ln)["text"] for ln in (work / "c.jsonl").read_text().splitlines()]
    rows = [ln.split() for ln in text.splitlines() if ln.split() and ln.split()[0] in ("0", "1", "2")]
    # 7 blocks of 2 documents: shard 0 gets blocks 0, 3, 6; shard 1 blocks 1, 4; shard 2 blocks 2, 5
    chars = [sum(len(docs[d]) for b in blocks for d in (2 * b, 2 * b + 1)) for blocks in ([0, 3, 6], [1, 4], [2, 5])]
    assert [r[1:4] for r in rows] == [["3", "6", f"{chars[0]:,}"], ["2", "4", f"{chars[1]:,}"],
                                      ["2", "4", f"{chars[2]:,}"]]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    scored = sum(len(ids) - 1 for ids in tok(docs, add_special_tokens=False)["input_ids"] if len(ids) >= 5)
    assert f"tokens to score: ~{scored:,} " in text  # the whole corpus is the sample here: exact
    assert not (work / "out").exists() and not (work / "out.shards").exists()


def test_submit_dry_run_prints_plan_and_script(work, tiny_model_dir, capsys):
    assert main(submit(tiny_model_dir, "out", "--num-shards", "3", "--partition", "gpu", "--time", "2:00:00",
                       "--account", "p1", "--max-running", "2", "--signal-seconds", "300", "--seed", "7",
                       "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "3 shards of out" in text and "~tokens to score" in text
    script = text[text.index("#!/bin/bash"):]
    assert header(script) == [
        "#SBATCH --job-name=rl-rpt-data", "#SBATCH --array=0-2%2", "#SBATCH --ntasks=1",
        "#SBATCH --gpus-per-task=1", "#SBATCH --partition=gpu", "#SBATCH --account=p1", "#SBATCH --time=2:00:00",
        f"#SBATCH --output={work}/out.slurm/%x-%A_%a.out", "#SBATCH --open-mode=append", "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@300"]
    # every rl data rpt flag as typed; the Slurm flags and --num-shards (added per task) are not passed on
    assert set_args(script) == rpt(tiny_model_dir, "out", "--seed", "7")[2:]
    assert "export RL_NUM_SHARDS=3" in script and "trap on_usr1 USR1" in script and "scontrol requeue" in script
    assert f"cd {work}\n" in script
    assert not (work / "out.slurm").exists() and not (work / "out").exists()


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_submit_writes_the_script_and_calls_sbatch(work, tiny_model_dir, capsys, monkeypatch):
    bindir = work / "bin"
    bindir.mkdir()
    _executable(bindir / "sbatch", f'#!/bin/bash\necho "$@" > {work}/sbatch-args\necho "777;cluster"\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert main(submit(tiny_model_dir, "out", "--num-shards", "2", "--cpu")) == 0
    out = capsys.readouterr().out
    scripts = list((work / "out.slurm").glob("rpt-data-*.sbatch"))
    assert len(scripts) == 1
    assert (work / "sbatch-args").read_text().split() == ["--parsable", str(scripts[0])]
    assert "submitted array job 777 (2 shards)" in out and "rl-rpt-data-777_<shard>.out" in out
    assert not any("gpus" in ln for ln in header(scripts[0].read_text()))
    assert subprocess.run(["bash", "-n", str(scripts[0])]).returncode == 0


def test_rendered_tasks_build_the_shards_and_merge_like_one_process(work, tiny_model_dir, capsys):
    """The kept script run as Slurm would run tasks 2, 0, 1 (no scheduler; one task resubmitted alone)."""
    assert main(rpt(tiny_model_dir, "one")) == 0
    assert main(submit(tiny_model_dir, "three", "--num-shards", "3", "--cpu", "--dry-run")) == 0
    text = capsys.readouterr().out
    script = _executable(work / "job.sbatch", text[text.index("#!/bin/bash"):])
    for task in (2, 0, 1):  # each as `sbatch --array=I script` would: a one-task array
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "1",
               "SLURM_ARRAY_TASK_MIN": str(task), "SLURM_ARRAY_TASK_MAX": str(task), "SLURM_JOB_ID": "9"}
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"shard {task} of 3" in proc.stdout
    assert files(work / "three") == files(work / "one")
    assert not (work / "three.shards").exists()
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_JOB_ID": "9"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "out of range for 3 shards" in proc.stderr


@pytest.mark.parametrize("argv, match", [
    ([], "--num-shards N is required"),
    (["--num-shards", "2", "--shard-index", "1"], "--shard-index: not used with rl submit"),
    (["--num-shards", "2", "--cpu", "--gpus-per-task", "1"], "not used with --cpu"),
    (["--num-shards", "2", "--time", "soon"], "--time"),
    (["--num-shards", "2", "--time", "1:00", "--signal-seconds", "120"], "--signal-seconds 120"),
    (["--num-shards", "2", "--log-dir", "out/logs"], "is inside"),
    (["--num-shards", "2", "--log-dir", "."], "--log-dir"),
    (["--num-shards", "2", "--nodes", "2"], "unrecognized arguments: --nodes"),
    (["--num-shards", "0"], "--num-shards"),
])
def test_bad_submissions_are_one_line(work, tiny_model_dir, capsys, argv, match):
    refused(capsys, submit(tiny_model_dir, "out", *argv, "--dry-run"), match)
    assert not (work / "out.slurm").exists()


def test_bad_outputs_and_forms_are_one_line(work, tiny_model_dir, capsys):
    refused(capsys, submit(tiny_model_dir, "c.jsonl", "--num-shards", "2"), "--output")
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep")
    refused(capsys, submit(tiny_model_dir, "mine", "--num-shards", "2"), "--overwrite")
    (work / "out.shards" / "shard-00000-of-00004").mkdir(parents=True)
    refused(capsys, submit(tiny_model_dir, "out", "--num-shards", "2"), "holds shards of a 4-shard build")
    refused(capsys, ["submit", "--partition", "gpu", *rpt(tiny_model_dir, "o2", "--num-shards", "2")],
            "--partition goes after `rl submit data rpt`")
    refused(capsys, ["submit", "data", "pretrain", "--num-shards", "2"], "rl submit data pretrain: unknown")
    refused(capsys, ["submit", "data"], "name the build")
    refused(capsys, ["submit", "--nodes", "1"], "--config RECIPE is required")
    assert (work / "mine" / "notes.txt").read_text() == "keep"


def test_help_lists_build_and_slurm_flags(capsys):
    with pytest.raises(SystemExit):
        main(["submit", "data", "rpt", "--help"])
    text = capsys.readouterr().out
    for flag in ("--corpus", "--min-entropy", "--block-documents", "--num-shards", "--partition", "--time",
                 "--account", "--cpu", "--max-running", "--log-dir", "--dry-run"):
        assert flag in text, flag
    assert "--shard-index" in text  # a build flag, refused when given (the array picks it)


def test_a_secret_never_enters_the_script(work, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    err = refused(capsys, submit(tiny_model_dir, "runs/hf_secretvalue123", "--num-shards", "2", "--dry-run"), "$HF_TOKEN")
    assert "hf_secretvalue123" not in err
