"""The real one-node Slurm cluster: jobs run, signals reach bash traps, requeue restarts jobs,
and the rendered slurm/train.sbatch carries a preemption through to a resumed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rl.runtime import checkpoint as ck
from rl.launch import slurm
from tests.slurm_cluster import REGISTRY, SlurmCluster, pid_alive, reap_stale_clusters

REPO = Path(__file__).resolve().parents[2]


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body).lstrip())
    return path


def wait_for_file(path: Path, timeout: float = 60, contains: str = "") -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and contains in path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise TimeoutError(f"{path} (containing {contains!r}) did not appear in {timeout}s")


def test_cluster_ready_and_trivial_job(slurm_cluster, tmp_path):
    assert slurm_cluster.startup_seconds < 30
    sinfo = slurm_cluster.run("sinfo", "-h", "-o", "%P %t %c").stdout.split()
    assert sinfo == ["debug*", "idle", str(slurm_cluster.cpus)]
    script = write_script(tmp_path / "hello.sh", 'echo "hello from $SLURM_JOB_ID on $(hostname)"\n')
    job = slurm_cluster.sbatch(script, "-o", str(tmp_path / "out-%j.txt"))
    info = slurm_cluster.wait_job(job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0"
    assert (tmp_path / f"out-{job}.txt").read_text().startswith(f"hello from {job} on ")


def test_failing_job_reports_failed(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(write_script(tmp_path / "fail.sh", "exit 3\n"), "-o", str(tmp_path / "o.txt"))
    info = slurm_cluster.wait_job(job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "3:0"


def test_usr1_reaches_batch_trap(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "trap.sh", f"""
        trap 'echo "got USR1"; exit 0' USR1
        touch {tmp_path}/ready
        for i in $(seq 60); do sleep 1 & wait $!; done
        echo "no signal"
        """)
    job = slurm_cluster.sbatch(script, "-o", str(tmp_path / "out.txt"))
    wait_for_file(tmp_path / "ready")
    t0 = time.monotonic()
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    info = slurm_cluster.wait_job(job, timeout=30)
    assert info["JobState"] == "COMPLETED"
    assert (tmp_path / "out.txt").read_text().strip() == "got USR1"
    assert time.monotonic() - t0 < 20


def test_self_requeue_restarts_with_restart_count(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "requeue.sh", f"""
        echo "start restart=${{SLURM_RESTART_COUNT:-0}}"
        if [ "${{SLURM_RESTART_COUNT:-0}}" -ge 1 ]; then echo resumed; exit 0; fi
        trap 'echo requeueing; scontrol requeue $SLURM_JOB_ID; exit 0' USR1
        touch {tmp_path}/ready
        for i in $(seq 60); do sleep 1 & wait $!; done
        """)
    job = slurm_cluster.sbatch(script, "--requeue", "--open-mode=append", "-o", str(tmp_path / "out.txt"))
    wait_for_file(tmp_path / "ready")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    pending = slurm_cluster.release_requeued(job)
    assert pending["Reason"] in ("BeginTime", "None")
    info = slurm_cluster.wait_job(job, timeout=60)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1"
    lines = [ln for ln in (tmp_path / "out.txt").read_text().splitlines() if not ln.startswith("slurmstepd")]
    assert lines == ["start restart=0", "requeueing", "start restart=1", "resumed"]


def test_second_cluster_and_stale_reaping(slurm_cluster, tmp_path):
    """A cluster whose owning process died (e.g. pytest killed) is stopped by the next start."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.slurm_cluster import SlurmCluster
        c = SlurmCluster().start({str(tmp_path / 'orphan')!r})
        print(" ".join(str(p.pid) for p in c._procs.values()), flush=True)
        time.sleep(600)
        """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
    finally:
        owner.kill()
        owner.wait()
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)  # munged, slurmctld, slurmd of cluster 2
    assert slurm_cluster.run("sinfo", "-h", "-o", "%t").stdout.strip() == "idle"  # cluster 1 unaffected
    reaped = reap_stale_clusters()
    assert str(tmp_path / "orphan") in reaped
    assert not any(pid_alive(p) for p in pids)
    assert slurm_cluster.run("sinfo", "-h", "-o", "%t").stdout.strip() == "idle"
    assert str(slurm_cluster.root) in "".join(p.read_text() for p in REGISTRY.glob("*.json"))


def test_restart_in_same_directory_kills_leftovers(tmp_path):
    first = SlurmCluster().start(tmp_path / "c")
    old = [p.pid for p in first._procs.values()]
    second = None
    try:
        second = SlurmCluster().start(tmp_path / "c")  # e.g. a rerun after a crash, same directory
        assert not any(pid_alive(p) for p in old)
        assert second.run("sinfo", "-h", "-o", "%t").stdout.strip() == "idle"
        new = [p.pid for p in second._procs.values()]
    finally:
        (second or first).stop()
    assert not any(pid_alive(p) for p in new)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_rendered_sbatch_preempt_requeue_resume(slurm_cluster, tmp_path):
    """USR1 -> batch trap -> srun -> 2 ranks agree -> COMPLETE checkpoint -> requeue -> resume -> done."""
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {out}\n")
    env = slurm_cluster.env({**os.environ, "WANDB_API_KEY": "secret-value-never-in-scripts"})
    job = slurm.submit(recipe, cpu=True, nodes=1, entry_module="tests.slurm.fake_trainer", workdir=REPO,
                       env=env, out=open(os.devnull, "w"))
    events = out / "events.txt"
    wait_for_file(events, timeout=120, contains="0 1 step 2")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    slurm_cluster.release_requeued(job, timeout=120)
    info = slurm_cluster.wait_job(job, timeout=180)
    log = (out / "slurm" / f"rl-recipe-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", f"{info}\n{log}\n{events.read_text()}\n{slurm_cluster.logs()}"
    assert "SIGUSR1: asking the trainer" in log and "requeueing job" in log

    lines = [ln.split() for ln in events.read_text().splitlines()]
    stops = {(r, rank): int(s) for r, rank, ev, s in lines if ev == "stop"}
    assert set(stops) == {("0", "0"), ("0", "1")}, lines  # rank 0 never saw the signal, stopped anyway
    stop = stops[("0", "0")]
    assert stops[("0", "1")] == stop and 2 <= stop < 8
    assert ["0", "0", "requeue:marker", str(stop)] in lines
    assert ck.find_resume_checkpoint(out) == str(out / f"checkpoint-{stop}")
    assert ["1", "0", "start", str(stop)] in lines and ["1", "1", "start", str(stop)] in lines
    assert ["1", "0", "done", "8"] in lines and ["1", "1", "done", "8"] in lines
    assert (out / f"checkpoint-{stop}" / ck.MARKER_NAME).is_file()
    scripts = list((out / "slurm").glob("train-*.sbatch"))
    assert len(scripts) == 1 and "secret-value" not in scripts[0].read_text()
