"""Two Slurm nodes for real: `rl submit --nodes 2` on a namespace cluster (tests/slurm_netns.py).

Each node is its own network namespace with its own address and slurmd; the job's two gloo ranks
(one per node, `--procs-per-node 1`) reach each other only over the bridge, through the head node's
address slurm/train.sbatch hands `accelerate launch` (`--main_process_ip`, `--machine_rank
$SLURM_PROCID`). Everything goes through the `rl submit` CLI run on the "login node" (the
controller's namespace), as a user would:

* test_two_nodes_match_one_node[ddp|zero3]: the same recipe on 2 nodes x 1 rank and on 1 node x 2
  ranks (same world size, same batch arithmetic) ends with the same weights (bitwise, or within the
  1e-6 of the one-node requeue test) and the same per-step rewards and losses; the 2-node job's
  ranks really were on n1 and n2 (each checkpoint holds both ranks' RNG state; the log names both).
* test_two_node_preempt_requeue_resume_is_bitwise: USR1 to the batch shell on n1 -> srun delivers it
  to both nodes -> both ranks agree at a step end and save checkpoint-N (rng_state_0 and _1) ->
  requeue -> resume from checkpoint-N -> final weights bitwise equal to the uninterrupted 2-node run.
* test_dead_node_fails_clearly_and_resubmit_resumes: the job step's processes on n2 are killed
  mid-run (SIGKILL: what a node crash leaves) -> the job FAILS with a one-line message naming the
  newest complete checkpoint; every COMPLETE-marked checkpoint is intact; `rl submit` again resumes
  from it and finishes with the uninterrupted run's weights.

The data and reward setup is test_train_e2e's (8 RPT rows, 4 steps per epoch, a length reward so the
weights move), shortened to 6 steps. `OMP_NUM_THREADS=1` and `GLOO_SOCKET_IFNAME=eth0` come from the
submitting environment, as a user sets them on a real cluster: the first keeps both layouts on the
same kernels (and the 2 shared cores not oversubscribed), the second makes gloo use the inter-node
interface (its default is the address the hostname resolves to, 127.0.0.1 on this machine: measured,
without it both ranks fail in connectFullMesh, "Connection refused, remote=[127.0.0.1]").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rl.runtime import checkpoint as ck
from tests.kit import tiny_recipe, write_yaml
from tests.slurm.test_train_e2e import (load_weights, loss_steps, per_step, read, rl_command, rpt_data_dir,
                                        submit_env)
from tests.slurm_netns import NODE_IFNAME

REPO = Path(__file__).resolve().parents[2]
ZERO3 = REPO / "recipes" / "accelerate" / "zero3.yaml"
MAX_STEPS = 6
SAVE_STEPS = 2
JOB_TIMEOUT = 300  # s for one wait; a 6-step job took 70-85 s with ~20 processes busy on the 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(1200)]


# ---------------------------------------------------------------- helpers


def write_recipe(path: Path, run_dir: Path, inputs: dict) -> Path:
    """2 ranks x 2 completions = 2 prompts x 2 generations per step, whatever the layout."""
    return write_yaml(path, tiny_recipe(
        inputs["model"], run_dir, dataset_path=str(inputs["data"]),
        reward_funcs=["rpt", "tests.slurm.rewards_for_tests.length_reward"],
        max_steps=MAX_STEPS, per_device_train_batch_size=2, save_steps=SAVE_STEPS, save_total_limit=3, seed=0,
        dataloader_num_workers=None))


def cluster_env(cluster) -> dict:
    return {**submit_env(cluster), "GLOO_SOCKET_IFNAME": NODE_IFNAME, "OMP_NUM_THREADS": "1"}


def rl_submit(cluster, recipe: Path, nodes: int, procs_per_node: int, *extra: str) -> dict:
    """`rl submit` on the login node (the controller's namespace); returns its job id and log path."""
    cmd = [*cluster.client_prefix(), *rl_command(), "submit", "--config", str(recipe), "--cpu",
           "--nodes", str(nodes), "--procs-per-node", str(procs_per_node), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=cluster_env(cluster), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"rl submit failed:\n{proc.stdout}\n{proc.stderr}"
    return {"job": re.search(r"^submitted job (\d+)$", proc.stdout, re.M).group(1),
            "log": Path(re.search(r"^log:\s+(\S+)$", proc.stdout, re.M).group(1))}


def final_state(run_dir: Path) -> dict:
    return json.loads((run_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())


def wait_for(pred, what: str, cluster, job: str, log: Path, timeout: float = JOB_TIMEOUT):
    """Poll `pred` until true; fail (with the log) when the job ends first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if cluster.job(job).get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            if pred():
                return
            pytest.fail(f"job {job} ended before {what}:\n{read(log)}")
        time.sleep(0.2)
    pytest.fail(f"{what}: not after {timeout}s\n{read(log)}")


def assert_same_training(run_dir: Path, ref_dir: Path, tolerance: float = 0.0) -> str:
    """Same per-step rewards/losses and final weights as `ref_dir` (bitwise, or max |diff| <= tolerance)."""
    import torch

    state, ref_state = final_state(run_dir), final_state(ref_dir)
    assert loss_steps(state) == list(range(1, MAX_STEPS + 1)), loss_steps(state)
    for key in ("reward", "rewards/length_reward/mean", "loss"):
        ours, ref = per_step(state, key), per_step(ref_state, key)
        diff = [(s, ours.get(s), ref.get(s)) for s in sorted(set(ours) | set(ref))
                if abs((ours.get(s) or 0) - (ref.get(s) or 0)) > tolerance or (s in ours) != (s in ref)]
        assert not diff, f"{key} differs (step, this run, reference): {diff}"
    final, ref = load_weights(run_dir / "model.safetensors"), load_weights(ref_dir / "model.safetensors")
    assert set(final) == set(ref)
    max_diff = max((final[k] - ref[k]).abs().max().item() for k in ref)
    bitwise = all(torch.equal(final[k], ref[k]) for k in ref)
    assert bitwise or max_diff <= tolerance, f"final weights differ: max |diff| {max_diff:.3g} > {tolerance}"
    return f"bitwise {bitwise}, max |diff| {max_diff:.3g}"


# ---------------------------------------------------------------- runs (submitted once, shared)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("multinode-data")
    return {"model": tiny_model_dir, "data": rpt_data_dir(root, tiny_model_dir)}


@pytest.fixture(scope="module")
def finished_run(netns_cluster, inputs, tmp_path_factory):
    """`finished_run(name, nodes, procs_per_node, *flags)`: submit once, wait to the end, cache."""
    cache: dict = {}

    def run(name: str, nodes: int, procs_per_node: int, *flags: str) -> dict:
        if name not in cache:
            t0 = time.monotonic()
            tmp = tmp_path_factory.mktemp(f"multinode-{name}")
            recipe = write_recipe(tmp / "recipe.yaml", tmp / "run", inputs)
            sub = rl_submit(netns_cluster, recipe, nodes, procs_per_node, *flags)
            info = netns_cluster.wait_job(sub["job"], timeout=JOB_TIMEOUT)
            assert info["JobState"] == "COMPLETED", f"{name}: {info}\n{read(sub['log'])}\n{netns_cluster.logs()}"
            cache[name] = {**sub, "info": info, "run_dir": tmp / "run", "seconds": time.monotonic() - t0}
        return cache[name]

    return run


def two_node_ddp(finished_run) -> dict:
    return finished_run("2x1-ddp", 2, 1)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("engine", ["ddp", pytest.param("zero3", marks=pytest.mark.deepspeed)])
def test_two_nodes_match_one_node(engine, finished_run, inputs):
    flags = ("--accelerate-config", str(ZERO3)) if engine == "zero3" else ()
    if engine == "zero3":
        pytest.importorskip("deepspeed")
    two = two_node_ddp(finished_run) if engine == "ddp" else finished_run(f"2x1-{engine}", 2, 1, *flags)
    one = finished_run(f"1x2-{engine}", 1, 2, *flags)
    text = read(two["log"])
    assert re.search(rf"job {two['job']} restart 0 on n\[1-2\]", text), text
    assert "trainer exited with 0" in text
    for c in ck.list_checkpoints(two["run_dir"]):  # both ranks (one per node) saved their state
        assert ck.check_complete(c) is None and (c / "rng_state_0.pth").is_file() and (c / "rng_state_1.pth").is_file()
    init = load_weights(inputs["model"] / "model.safetensors")
    final = load_weights(two["run_dir"] / "model.safetensors")
    assert any(not (init[k] == final[k]).all() for k in init), "weights did not change: vacuous comparison"
    same = assert_same_training(two["run_dir"], one["run_dir"], tolerance=1e-6)
    print(f"\n{engine}: 2 nodes x 1 rank {two['seconds']:.0f} s, 1 node x 2 ranks {one['seconds']:.0f} s; {same}")


def start_two_node_job(cluster, inputs, tmp_path: Path, after_checkpoint: int) -> dict:
    """Submit the 2-node DDP run and wait until checkpoint-`after_checkpoint` is COMPLETE."""
    run_dir = tmp_path / "run"
    sub = rl_submit(cluster, write_recipe(tmp_path / "recipe.yaml", run_dir, inputs), 2, 1)
    wait_for(lambda: (run_dir / f"checkpoint-{after_checkpoint}" / ck.MARKER_NAME).is_file(),
             f"checkpoint-{after_checkpoint}/{ck.MARKER_NAME}", cluster, sub["job"], sub["log"])
    return {**sub, "run_dir": run_dir}


def test_two_node_preempt_requeue_resume_is_bitwise(netns_cluster, finished_run, inputs, tmp_path):
    ref = two_node_ddp(finished_run)
    t0 = time.monotonic()
    run = start_two_node_job(netns_cluster, inputs, tmp_path, after_checkpoint=SAVE_STEPS)
    job, run_dir = run["job"], run["run_dir"]
    assert netns_cluster.node_job_pids("n2", job), "no process of the job on n2: not a 2-node run"
    netns_cluster.run("scancel", "--batch", "--signal=USR1", job)  # to the batch shell on n1 only
    netns_cluster.release_requeued(job, timeout=JOB_TIMEOUT)
    info = netns_cluster.wait_job(job, timeout=JOB_TIMEOUT)
    text = read(run["log"])
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{text}\n{netns_cluster.logs()}"

    m = re.search(r"preempted: (\{.*\}); requeueing job " + job, text)
    assert m, text
    stopped = json.loads(m.group(1))["step"]
    assert SAVE_STEPS < stopped < MAX_STEPS, f"preempted at step {stopped}\n{text}"
    # both ranks (rank 0 on n1, rank 1 on n2) agreed on the same step and stopped there
    saving = re.findall(r"preemption signal: saving checkpoint-(\d+) and stopping", text.split("requeueing job")[0])
    assert saving == [str(stopped)] * 2, saving
    stop_ckpt = run_dir / f"checkpoint-{stopped}"
    assert ck.check_complete(stop_ckpt) is None
    assert (stop_ckpt / "rng_state_0.pth").is_file() and (stop_ckpt / "rng_state_1.pth").is_file()
    restarted = text.split(f"job {job} restart 1")[1]
    assert f"resume auto: {stop_ckpt}" in restarted and "trainer exited with 0" in restarted, restarted

    same = assert_same_training(run_dir, ref["run_dir"])  # tolerance 0: bitwise
    print(f"\n2-node preemption: stopped at step {stopped}, resumed, {same}; {time.monotonic() - t0:.0f} s")


def test_dead_node_fails_clearly_and_resubmit_resumes(netns_cluster, finished_run, inputs, tmp_path):
    ref = two_node_ddp(finished_run)
    t0 = time.monotonic()
    run = start_two_node_job(netns_cluster, inputs, tmp_path, after_checkpoint=SAVE_STEPS)
    job, run_dir = run["job"], run["run_dir"]
    pids = netns_cluster.node_job_pids("n2", job)  # n2's launcher and rank: the node "dies" mid-step
    assert pids, "no process of the job on n2"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    info = netns_cluster.wait_job(job, timeout=JOB_TIMEOUT)
    text = read(run["log"])
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", f"{info}\n{text}"
    assert re.search(r"srun: error: n2: task 1: Killed", text), text  # Slurm names the node that died
    m = re.search(r"training failed \(exit \d+\): a rank or node stopped; resubmit (\S+) to resume from "
                  r"(\S+), the newest complete checkpoint$", text, re.M)
    assert m, text
    last = Path(m.group(2))
    assert last.parent == run_dir and ck.checkpoint_step(last) >= SAVE_STEPS
    for c in ck.list_checkpoints(run_dir):  # whatever the kill interrupted, nothing COMPLETE is damaged
        if (c / ck.MARKER_NAME).is_file():
            assert ck.check_complete(c) is None, c
    assert ck.find_resume_checkpoint(run_dir) == str(last)
    assert not (run_dir / "model.safetensors").exists()

    again = rl_submit(netns_cluster, tmp_path / "recipe.yaml", 2, 1)  # the user resubmits the same recipe
    info = netns_cluster.wait_job(again["job"], timeout=JOB_TIMEOUT)
    text = read(again["log"])
    assert info["JobState"] == "COMPLETED", f"{info}\n{text}"
    assert f"resume auto: {last}" in text, text
    same = assert_same_training(run_dir, ref["run_dir"])
    print(f"\ndead node: failed after checkpoint-{ck.checkpoint_step(last)} ({m.group(0)!r}), resubmitted, {same}; "
          f"{time.monotonic() - t0:.0f} s")
