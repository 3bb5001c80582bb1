"""The vLLM server node on two real Slurm nodes: `rl submit --nodes 2 --vllm-server-node` on the namespace
cluster (tests/slurm_netns.py: n1 10.250.0.11, n2 10.250.0.12, each its own network namespace and slurmd).

slurm/train.sbatch starts `$PYTHON -m trl.cli.main vllm-serve ...` on the job's first node (its output in
<run dir>/slurm/vllm-JOBID.log), waits for http://<that node's address>:PORT/health (rl/launch/vllm_server.py),
trains on the other node(s) with `--vllm_server_host <that address>`, and stops the server when it exits.
vLLM cannot run here, so the two processes at the vLLM boundary are stand-ins, everything else is real
(the `rl submit` CLI with its dry-run check, sbatch, slurmctld, both slurmds, srun, accelerate launch, the
health wait, the EXIT trap):

* the server: tests/slurm/vllm_standin/trl/cli/main.py, reached because the job's PYTHONPATH starts with
  tests/slurm/vllm_standin (no change to the script: `-m trl.cli.main` simply finds the stand-in first);
  it answers /health with the node and pid that answered, and logs every request and its stop;
* the trainer: tests/slurm/vllm_trainer_standin.py (the real `rl train --use_vllm true` needs vLLM's NCCL
  weight sync): it records its arguments and GETs /health at the host it was given from the training node.

Both substitutions are made by SUBMIT below, which runs `rl.cli.main(["submit", ...])` with
`rl.launch.slurm.submit` wrapped to set `entry_module` (the render's own parameter) and to put the stand-in
directory on the PYTHONPATH that sbatch exports to the job (after the CLI's dry-run check ran with the real trl).

* test_server_node_serves_and_the_other_node_trains: the job completes; the trainer ran on n2 only and was
  given `--vllm_server_host 10.250.0.11` (n1's address, not its name) and reached n1's stand-in from n2; the
  server log is its own file with the stand-in's output (its argv has the recipe's model and port), the
  trainer's output is only in the job log; the job stopped the server step (srun's cancel of step JOB.0 on
  n1 is in the server log) and no process of the job is left on n1.
* test_silent_server_fails_in_one_line_within_the_timeout: the stand-in never listens; the job FAILS after
  vllm_server_timeout (not before, not much after) with one `error:` line naming the server log; no
  trainer started; the EXIT trap stopped the server step.

The node layout the dry run prints for --vllm-server-node is tested in
tests/rl/train/preflight/test_node_layout.py (test_dry_run_report_shows_the_layout).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kit import rpt_rows, tiny_recipe, write_jsonl, write_yaml
from tests.slurm.test_train_e2e import read, submit_env
from tests.slurm_cluster import pid_alive
from tests.slurm_netns import NODE_IFNAME

REPO = Path(__file__).resolve().parents[2]
STANDIN_DIR = Path(__file__).resolve().parent / "vllm_standin"  # holds the stand-in `trl` package
TRAINER = "tests.slurm.vllm_trainer_standin"
PORT = 8123  # not vllm-serve's default 8000: the recipe's port must reach both the server and the trainer
JOB_TIMEOUT = 180
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# `rl submit ARGS` (sys.argv[3:]) with the trainer module sys.argv[2] and sys.argv[1] first on the job's PYTHONPATH
SUBMIT = """
import os, sys
from rl.launch import slurm

shadow, entry, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
real_submit = slurm.submit

def submit(*args, **kwargs):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (shadow, os.environ.get("PYTHONPATH")) if p)
    return real_submit(*args, entry_module=entry, **kwargs)

slurm.submit = submit
from rl.cli import main
sys.exit(main(argv))
"""


def rl_submit_vllm(cluster, recipe: Path, **env) -> dict:
    """`rl submit --cpu --nodes 2 --procs-per-node 1 --vllm-server-node` on the login node (ctl namespace)."""
    cmd = [*cluster.client_prefix(), sys.executable, "-c", SUBMIT, str(STANDIN_DIR), TRAINER,
           "submit", "--config", str(recipe), "--cpu", "--nodes", "2", "--procs-per-node", "1", "--vllm-server-node"]
    full_env = {**submit_env(cluster), "GLOO_SOCKET_IFNAME": NODE_IFNAME, "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"rl submit failed:\n{proc.stdout}\n{proc.stderr}"
    job = re.search(r"^submitted job (\d+)$", proc.stdout, re.M).group(1)
    log = Path(re.search(r"^log:\s+(\S+)$", proc.stdout, re.M).group(1))
    return {"job": job, "log": log, "server_log": log.parent / f"vllm-{job}.log"}


def write_recipe(tmp_path: Path, model_dir: Path, timeout: int) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    data = write_jsonl(tmp_path / "data.jsonl", rpt_rows())
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(model_dir, run_dir, dataset_path=str(data),
                                                              vllm_server_port=PORT, vllm_server_timeout=timeout))
    return recipe, run_dir


def standin_pid(server_log: str) -> int:
    m = re.search(r"^stand-in vllm-serve: node n1 pid (\d+) argv (\[.*\])$", server_log, re.M)
    assert m, f"the stand-in server did not start on n1:\n{server_log}"
    return int(m.group(1))


def assert_server_stopped(cluster, job: str, server_log: str) -> None:
    """The job stopped its server step: the script's kill of the server's srun (stop_vllm, also the EXIT trap)
    makes srun cancel step JOB.0 on n1, which both write into the server log; and neither the stand-in nor
    any other process of the job is left on n1."""
    assert "srun: forcing job termination" in server_log, server_log
    assert re.search(rf"\*\*\* STEP {job}\.0 ON n1 CANCELLED", server_log), server_log
    deadline = time.monotonic() + 10  # slurmstepd may still be reaping right after the job's end
    while (pid_alive(standin_pid(server_log)) or cluster.node_job_pids("n1", job)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(standin_pid(server_log)), "the stand-in server outlived the job"
    assert cluster.node_job_pids("n1", job) == [], "a process of the job is left on the server node"


def seconds(hms: str) -> int:
    parts = [int(x) for x in re.split(r"[-:]", hms)]
    return sum(v * m for v, m in zip(reversed(parts), (1, 60, 3600, 86400)))


def test_server_node_serves_and_the_other_node_trains(netns_cluster, tiny_model_dir, tmp_path):
    t0 = time.monotonic()
    recipe, run_dir = write_recipe(tmp_path, tiny_model_dir, timeout=60)
    sub = rl_submit_vllm(netns_cluster, recipe)
    info = netns_cluster.wait_job(sub["job"], timeout=JOB_TIMEOUT)
    text, server = read(sub["log"]), read(sub["server_log"])
    assert info["JobState"] == "COMPLETED", f"{info}\n{text}\n--- server log\n{server}\n{netns_cluster.logs()}"
    n1, n2 = netns_cluster.node_addr("n1"), netns_cluster.node_addr("n2")
    url = f"http://{n1}:{PORT}/health"

    # the job: the server on n1 at its address, healthy before training, training exited 0
    assert f"vLLM server starting on n1 ({n1}:{PORT}, log: {sub['server_log']})" in text, text
    assert f"vLLM server healthy at {url}" in text, text
    assert "trainer exited with 0" in text, text

    # the trainer: on n2 only, given n1's address, and n1's stand-in answered it over the bridge
    assert sorted(p.name for p in run_dir.glob("vllm-trainer-standin-*.json")) == ["vllm-trainer-standin-n2.json"]
    rec = json.loads((run_dir / "vllm-trainer-standin-n2.json").read_text())
    pid = standin_pid(server)
    assert rec["host"] == n1 and rec["use_vllm"] == "true" and rec["vllm_mode"] == "server", rec
    assert rec["argv"].count("--vllm_server_host") == 1, rec["argv"]
    assert rec["url"] == url and rec["status"] == 200, rec
    assert json.loads(rec["body"]) == {"standin": True, "node": "n1", "pid": pid}, rec

    # the server log: its own file, the stand-in's output (the recipe's model and port reached it), both
    # the health wait (on n1, the batch node) and the trainer (from n2) asked it
    argv = json.loads(re.search(r"^stand-in vllm-serve: node n1 pid \d+ argv (\[.*\])$", server, re.M).group(1))
    assert argv[:3] == ["vllm-serve", "--model", str(tiny_model_dir)] and argv[argv.index("--port") + 1] == str(PORT)
    assert re.search(rf"^stand-in vllm-serve: {re.escape(n1)} \"GET /health HTTP", server, re.M), server
    assert re.search(rf"^stand-in vllm-serve: {re.escape(n2)} \"GET /health HTTP", server, re.M), server
    assert "stand-in trainer" not in server, server  # the logs are separate files
    assert "stand-in vllm-serve" not in text and "stand-in trainer: on n2" in text, text
    assert_server_stopped(netns_cluster, sub["job"], server)
    print(f"\nvLLM server node: served on n1, trained on n2 in {time.monotonic() - t0:.0f} s")


def test_silent_server_fails_in_one_line_within_the_timeout(netns_cluster, tiny_model_dir, tmp_path):
    timeout = 5
    recipe, run_dir = write_recipe(tmp_path, tiny_model_dir, timeout=timeout)
    sub = rl_submit_vllm(netns_cluster, recipe, VLLM_STANDIN_SILENT="1")
    info = netns_cluster.wait_job(sub["job"], timeout=JOB_TIMEOUT)
    text, server = read(sub["log"]), read(sub["server_log"])
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0", f"{info}\n{text}\n--- server log\n{server}"
    n1 = netns_cluster.node_addr("n1")
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert errors[0].startswith(f"error: vLLM server not healthy at http://{n1}:{PORT}/health after {timeout} s "), text
    assert f"see its log {sub['server_log']} " in errors[0], errors[0]
    # it waited out the timeout, and not much more (the job's own start and stop are a few seconds)
    run = seconds(info["RunTime"])
    assert timeout <= run <= timeout + 30, f"RunTime {info['RunTime']} for a {timeout} s health timeout\n{text}"
    # nothing trained
    assert "stand-in trainer" not in text and "trainer exited" not in text, text
    assert not list(run_dir.glob("vllm-trainer-standin-*.json"))
    assert "VLLM_STANDIN_SILENT=1: not answering" in server, server
    assert_server_stopped(netns_cluster, sub["job"], server)
