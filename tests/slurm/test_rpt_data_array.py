"""slurm/rpt_data.sbatch on the real one-node test cluster: an array of 2 tasks builds the 2 shards of
`rl data rpt`, the last one merges, and the result equals a one-process build, file for file."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.ranks import ROOT, rank_env
from tests.rl.data.test_rpt_shards import _docs, files, rpt


def test_array_job_builds_the_shards_and_merges(slurm_cluster, tmp_path, tiny_model_dir):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs()), encoding="utf-8")
    env = rank_env(RL_PYTHON=sys.executable)
    one = subprocess.run([sys.executable, "-m", "rl.cli", *rpt(tiny_model_dir, "one")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    job = subprocess.run(["sbatch", "--parsable", "--array=0-1", f"--output={tmp_path}/%x-%A_%a.out",
                          str(ROOT / "slurm" / "rpt_data.sbatch"), *rpt(tiny_model_dir, "two")[2:]],
                         cwd=tmp_path, env=slurm_cluster.env(env), capture_output=True, text=True, timeout=60)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    logs = ""
    for task in (0, 1):
        info = slurm_cluster.wait_job(f"{job_id}_{task}", timeout=600)
        logs += (tmp_path / f"rl-rpt-data-{job_id}_{task}.out").read_text()
        assert info["JobState"] == "COMPLETED", logs[-3000:]
    assert "shard 0 of 2" in logs and "shard 1 of 2" in logs
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert not (tmp_path / "two.shards").exists()


def test_rl_submit_data_rpt_array_job_merges_like_one_process(slurm_cluster, tmp_path, tiny_model_dir):
    """The same build through `rl submit data rpt --num-shards 2 --cpu` (rl/launch/data_submit.py): the kept
    script in two.slurm/, one log per shard there, the last task merges."""
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs()), encoding="utf-8")
    env = rank_env()
    one = subprocess.run([sys.executable, "-m", "rl.cli", *rpt(tiny_model_dir, "one")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    sub = subprocess.run([sys.executable, "-m", "rl.cli", "submit", *rpt(tiny_model_dir, "two"), "--num-shards", "2",
                          "--cpu", "--time", "10:00"], cwd=tmp_path, env=slurm_cluster.env(env),
                         capture_output=True, text=True, timeout=300)
    assert sub.returncode == 0, sub.stderr[-3000:]
    job_id = sub.stdout.split("submitted array job ")[1].split()[0]
    assert len(list((tmp_path / "two.slurm").glob("rpt-data-*.sbatch"))) == 1
    logs = ""
    for task in (0, 1):
        info = slurm_cluster.wait_job(f"{job_id}_{task}", timeout=600)
        logs += (tmp_path / "two.slurm" / f"rl-rpt-data-{job_id}_{task}.out").read_text()
        assert info["JobState"] == "COMPLETED", logs[-3000:]
    assert "shard 0 of 2" in logs and "shard 1 of 2" in logs
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert not (tmp_path / "two.shards").exists()
