"""End to end on the real one-node Slurm cluster with the REAL trainer (no stand-ins).

`rl submit --config RECIPE --nodes 1 --cpu` renders slurm/train.sbatch, sbatch runs it, srun starts
`accelerate launch` with 2 CPU ranks (gloo, ACCELERATE_USE_CPU=1), and `rl train` runs TRL GRPO on a
tiny random model:

* test_submit_trains_to_completion: the job finishes (COMPLETED), saves the final model and
  COMPLETE-marked checkpoints, keeps its rendered script, prints its log path, writes no secret.
* test_preempt_requeue_resume_matches_uninterrupted: USR1 after checkpoint-4 -> the ranks save and
  stop (in the middle of epoch 1) -> the batch script requeues -> the job restarts and resumes from
  the newest complete checkpoint -> finishes with bitwise the weights, per-step rewards, losses and
  grad norms of the uninterrupted run (same seed; CPU is deterministic), every step logged once.
  It reports to W&B (offline): both starts of the job log to ONE W&B run (the id kept in the run
  dir's wandb-run.json, rl/runtime/wandb_run.py), each step once, read from W&B's own run files.
  The data (8 rows, 4 steps per epoch) makes the run span 3 epochs and the stop land after epoch 0:
  a resume there needs TRL's per-epoch shuffle order restored too (rl.runtime.checkpoint.replay_sampler_epochs;
  without it the prompts differ from step 8 on, which this test caught).

The uninterrupted run is a module fixture (submitted with the real CLI) shared by both tests, so
the two jobs run one after the other (the cluster has 2 CPUs; each job takes both).

Rewards: `rpt` plus tests.slurm.rewards_for_tests.length_reward. With a random model RPT is always
0, advantages are 0 and the weights would never change, making "weights equal" vacuous; the length
reward varies, and the tests assert the final weights differ from the initial ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl.runtime import checkpoint as ck
from rl.launch import slurm
from rl.runtime import wandb_run
from tests.kit import tiny_recipe, write_yaml
from tests.rl.runtime.test_wandb_run import offline_runs

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 12
SAVE_STEPS = 2
PROMPTS_PER_STEP = 2  # 2 ranks x per_device_train_batch_size 2 / num_generations 2
STEPS_PER_EPOCH = 4  # 8 RPT rows: the run spans 3 epochs, so resuming must restore the data order
SIGNAL_AFTER = STEPS_PER_EPOCH  # USR1 once checkpoint-4 is complete: the stop lands mid-epoch 1
JOB_TIMEOUT = 300  # s for one wait (a job normally takes ~40 s; each start imports torch/TRL on 2 busy cores)
# Fake secrets in the submitting environment: their values must appear in no file of the run.
SECRETS = {"WANDB_API_KEY": "fake-wandb-key-3f9c1e7a55d0", "HF_TOKEN": "hf_fakeTokenValue8d2b6c4e1a"}

DOCS = [
    "Let x be a real number with x squared equal to four. Then x is two or minus two, so the sum of roots is zero.",
    "The triangle has sides three, four and five. It is a right triangle because nine plus sixteen equals twenty five.",
    "To count subsets of a set with n elements, note each element is either in or out, giving two to the n subsets.",
    "A prime number has exactly two divisors. The smallest prime is two and the next primes are three, five, seven.",
    "The sum of the first n odd numbers is n squared: one, four, nine and sixteen are the first four such sums.",
    "A circle of radius r has area pi times r squared and circumference two pi r, so doubling r doubles it.",
    "If a train travels sixty miles in one hour, then in two and a half hours it travels one hundred fifty miles.",
    "The greatest common divisor of twelve and eighteen is six, and their least common multiple is thirty six.",
]


# ---------------------------------------------------------------- helpers


def rpt_data_dir(root: Path, model_dir: Path) -> Path:
    """RPT data built once here, so the ranks load it (`dataset_path`) instead of each rebuilding it."""
    from rl.data.rpt import RPTBuildConfig, build_rpt_dataset

    corpus = root / "corpus.jsonl"  # one document per line
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    cfg = RPTBuildConfig(corpus=str(corpus), proxy_model=str(model_dir), min_entropy=0.0, max_per_doc=1,
                         min_context_tokens=4, continuation_tokens=4, prompt_template="Next token:\n{context}",
                         seed=0)
    dataset, _ = build_rpt_dataset(cfg, root / "rpt-data")
    assert len(dataset) == PROMPTS_PER_STEP * STEPS_PER_EPOCH, len(dataset)
    return root / "rpt-data"


def write_recipe(path: Path, run_dir: Path, model_dir: Path, data_dir: Path, **overrides) -> Path:
    """The kit's tiny recipe on 2 ranks: 2 x 2 = generation batch 4 (2 prompts x 2 completions) per step."""
    return write_yaml(path, tiny_recipe(
        model_dir, run_dir, dataset_path=str(data_dir),
        reward_funcs=["rpt", "tests.slurm.rewards_for_tests.length_reward"],
        max_steps=MAX_STEPS, per_device_train_batch_size=2, save_steps=SAVE_STEPS, save_total_limit=3, seed=0,
        dataloader_num_workers=None, **overrides))  # learning_rate 1e-3: large, so a wrong resume would show


def submit_env(cluster) -> dict:
    # The recipe names a test reward by dotted path: `rl submit` checks that it imports (as the
    # job will), so the checkout is on PYTHONPATH, as a user's own reward package would be.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return cluster.env({**os.environ, **SECRETS, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                        "PYTHONPATH": path})


def rl_command() -> list[str]:
    """The installed `rl` console script of this interpreter's environment (else `python -m rl.cli`)."""
    exe = Path(sys.executable).parent / "rl"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "rl.cli"]


def wait_until(pred, what: str, timeout: float, job: str, cluster, log: Path | None = None):
    """Poll `pred` until true; fail early (with the log) if the job ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        state = cluster.job(job).get("JobState")
        if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "COMPLETED"):
            value = pred()
            if value:
                return value
            pytest.fail(f"job {job} ended ({state}) before {what}:\n{read(log)}")
        time.sleep(0.2)
    pytest.fail(f"{what}: not after {timeout}s\n{read(log)}")


def read(path: Path | None) -> str:
    return path.read_text(errors="replace") if path is not None and path.is_file() else f"({path} missing)"


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def loss_steps(state: dict) -> list[int]:
    return [e["step"] for e in state["log_history"] if "loss" in e]


def per_step(state: dict, key: str) -> dict[int, float]:
    return {e["step"]: e[key] for e in state["log_history"] if key in e and "train_runtime" not in e}


def assert_no_secrets(run_dir: Path) -> None:
    """No file the submission or the job wrote (script, logs, checkpoints, args) holds a secret value."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files
    for f in files:
        data = f.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{f} contains the value of ${name}"


def job_environ_has(job: str, value: str) -> bool:
    """Some process of the running job (batch script, launcher, rank) has `value` in its environment."""
    tag, found = f"SLURM_JOB_ID={job}".encode(), False
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            found = found or (tag in env and any(value.encode() in e for e in env))
    return found


def final_state(run_dir: Path) -> dict:
    return json.loads((run_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())


# ---------------------------------------------------------------- the uninterrupted run (real CLI)


@pytest.fixture(scope="module")
def e2e_inputs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("slurm-e2e-data")
    return {"model": tiny_model_dir, "data": rpt_data_dir(root, tiny_model_dir)}


@pytest.fixture(scope="module")
def uninterrupted_run(slurm_cluster, e2e_inputs, tmp_path_factory):
    """`rl submit --config RECIPE --nodes 1 --cpu` through the CLI, waited for to the end."""
    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("slurm-e2e-ref")
    run_dir = tmp / "run"
    recipe = write_recipe(tmp / "recipe.yaml", run_dir, e2e_inputs["model"], e2e_inputs["data"])
    proc = subprocess.run([*rl_command(), "submit", "--config", str(recipe), "--nodes", "1", "--cpu"],
                          cwd=REPO, env=submit_env(slurm_cluster), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"rl submit failed:\n{proc.stdout}\n{proc.stderr}"
    job = re.search(r"^submitted job (\d+)$", proc.stdout, re.M).group(1)
    script = Path(re.search(r"^script:\s+(\S+)$", proc.stdout, re.M).group(1))
    log = Path(re.search(r"^log:\s+(\S+)$", proc.stdout, re.M).group(1))
    info = slurm_cluster.wait_job(job, timeout=JOB_TIMEOUT)
    return {"job": job, "info": info, "run_dir": run_dir, "script": script, "log": log, "stdout": proc.stdout,
            "seconds": time.monotonic() - t0}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_submit_trains_to_completion(uninterrupted_run, e2e_inputs, slurm_cluster):
    r = uninterrupted_run
    run_dir, log = r["run_dir"], r["log"]
    text = read(log)
    assert r["info"]["JobState"] == "COMPLETED", f"{r['info']}\n{text}\n{slurm_cluster.logs()}"
    assert r["info"]["ExitCode"] == "0:0" and r["info"]["Restarts"] == "0"
    print(f"\nuninterrupted job {r['job']}: {r['seconds']:.1f} s from `rl submit` to COMPLETED")

    # the CLI printed where the log is; the log is in the run dir and tells the story
    assert log == run_dir / "slurm" / f"rl-recipe-{r['job']}.out"
    assert f"job {r['job']} restart 0" in text
    assert "trainer exited with 0" in text and "mean reward: first step" in text
    # the rendered script is kept in the run dir, CPU mode with 2 ranks
    assert r["script"].parent == run_dir / "slurm" and r["script"].is_file()
    script = r["script"].read_text()
    assert "CPU_MODE=1" in script and "PROCS_PER_NODE=2" in script and "export ACCELERATE_USE_CPU=1" in script
    assert "--resume_from_checkpoint auto" in script

    # it really ran on 2 ranks: rng state per rank in the checkpoints
    ckpts = ck.list_checkpoints(run_dir)
    assert [ck.checkpoint_step(c) for c in ckpts] == [MAX_STEPS - 4, MAX_STEPS - 2, MAX_STEPS]  # limit 3
    for c in ckpts:
        assert (c / ck.MARKER_NAME).is_file() and ck.check_complete(c) is None, c
        assert (c / "rng_state_0.pth").is_file() and (c / "rng_state_1.pth").is_file()
    assert ck.find_resume_checkpoint(run_dir) == str(run_dir / f"checkpoint-{MAX_STEPS}")

    # final model saved; training changed it (the length reward makes the advantages non-zero)
    final = load_weights(run_dir / "model.safetensors")
    init = load_weights(e2e_inputs["model"] / "model.safetensors")
    assert set(final) == set(init)
    changed = [k for k in init if not (init[k].shape == final[k].shape and (init[k] == final[k]).all())]
    assert changed, "weights did not change: the rewards gave no signal"

    state = final_state(run_dir)
    assert state["global_step"] == MAX_STEPS
    assert loss_steps(state) == list(range(1, MAX_STEPS + 1))
    assert len(set(per_step(state, "rewards/length_reward/mean").values())) > 1

    assert_no_secrets(run_dir)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_preempt_requeue_resume_matches_uninterrupted(uninterrupted_run, e2e_inputs, slurm_cluster, tmp_path):
    import torch

    t0 = time.monotonic()
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "recipe.yaml", run_dir, e2e_inputs["model"], e2e_inputs["data"],
                          report_to=["wandb"], env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    job = slurm.submit(recipe, cpu=True, nodes=1, workdir=REPO, env=submit_env(slurm_cluster),
                       out=open(os.devnull, "w"))
    log = run_dir / "slurm" / f"rl-recipe-{job}.out"

    # USR1 as soon as checkpoint-4 is complete: the ranks agree on it at the end of a later step
    # (checkpoint-4 is written after step 4's on_step_end), normally 5, i.e. in the middle of epoch 1
    wait_until(lambda: (run_dir / f"checkpoint-{SIGNAL_AFTER}" / ck.MARKER_NAME).is_file(),
               f"checkpoint-{SIGNAL_AFTER}/COMPLETE", JOB_TIMEOUT, job, slurm_cluster, log)
    # the secrets did reach the training processes (so the file check below is not vacuous)
    assert all(job_environ_has(job, v) for v in SECRETS.values())
    t_signal = time.monotonic()
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    slurm_cluster.release_requeued(job, timeout=180)
    t_requeued = time.monotonic()
    info = slurm_cluster.wait_job(job, timeout=JOB_TIMEOUT)
    text = read(log)
    assert info["JobState"] == "COMPLETED", f"{info}\n{text}\n{slurm_cluster.logs()}"
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0"

    # the preemption, as the log records it
    assert "SIGUSR1: asking the trainer to checkpoint and stop" in text
    m = re.search(r"preempted: checkpoint saved at step (\d+)", text)
    assert m, text
    stopped = int(m.group(1))
    assert SIGNAL_AFTER < stopped < MAX_STEPS, f"preempted at step {stopped}\n{text}"
    marker = re.search(r"preempted: (\{.*\}); requeueing job " + job, text)
    assert marker and json.loads(marker.group(1))["step"] == stopped, text
    assert f"job {job} restart 0" in text and f"job {job} restart 1" in text
    assert text.index("requeueing job") < text.index(f"job {job} restart 1")
    restarted = text.split(f"job {job} restart 1")[1]
    assert f"resume auto: {run_dir / f'checkpoint-{stopped}'}" in restarted, restarted
    assert "trainer exited with 0" in restarted

    # every step exactly once: 1..stopped from the first start, the rest after the resume
    state = final_state(run_dir)
    assert state["global_step"] == MAX_STEPS
    assert loss_steps(state) == list(range(1, MAX_STEPS + 1)), loss_steps(state)
    for c in ck.list_checkpoints(run_dir):
        assert ck.check_complete(c) is None, c

    # one W&B run across the requeue: both starts logged to the id kept in the run dir, each step once
    recorded = wandb_run.read_run_file(run_dir)
    assert recorded["last_step"] == MAX_STEPS, recorded
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and {r["run_id"] for r in runs} == {recorded["run_id"]}, runs
    logged = [row["train/global_step"] for r in runs for row in r["rows"] if "train/loss" in row]
    assert logged == list(range(1, MAX_STEPS + 1)), logged
    assert min(row["train/global_step"] for row in runs[1]["rows"]) == stopped  # the axis goes on
    wandb_steps = [row["_step"] for r in runs for row in r["rows"]]  # W&B's row counter too (offline)
    assert wandb_steps == list(range(len(wandb_steps))), wandb_steps

    # same result as the uninterrupted run: per-step rewards and losses, then the weights
    ref_state = final_state(uninterrupted_run["run_dir"])
    for key in ("reward", "rewards/length_reward/mean", "loss", "grad_norm"):
        ours, ref = per_step(state, key), per_step(ref_state, key)
        diff = [(s, ours.get(s), ref.get(s)) for s in sorted(set(ours) | set(ref)) if ours.get(s) != ref.get(s)]
        assert not diff, f"{key} differs from the uninterrupted run (step, resumed, uninterrupted): {diff}"
    final = load_weights(run_dir / "model.safetensors")
    ref = load_weights(uninterrupted_run["run_dir"] / "model.safetensors")
    init = load_weights(e2e_inputs["model"] / "model.safetensors")
    assert set(final) == set(ref) == set(init)
    max_diff = max((final[k] - ref[k]).abs().max().item() for k in ref)
    bitwise = all(torch.equal(final[k], ref[k]) for k in ref)
    assert any(not torch.equal(final[k], init[k]) for k in init), "weights did not change: vacuous comparison"
    print(f"\npreempted job {job}: stopped at step {stopped}; signal {t_signal - t0:.1f} s after submit, "
          f"requeued after {t_requeued - t_signal:.1f} s, total {time.monotonic() - t0:.1f} s; "
          f"weights bitwise equal: {bitwise}, max |diff| {max_diff:.3g}")
    assert bitwise or max_diff <= 1e-6, f"final weights differ from the uninterrupted run: max |diff| {max_diff}"

    assert_no_secrets(run_dir)
    scripts = list((run_dir / "slurm").glob("train-*.sbatch"))
    assert len(scripts) == 1


def test_replay_sampler_epochs_matches_an_uninterrupted_sampler():
    """No cluster: after replaying E epochs a fresh RepeatSampler (inside a DataLoader) yields epoch E's order."""
    from torch.utils.data import DataLoader
    from trl.trainer.utils import RepeatSampler

    def make():
        sampler = RepeatSampler(list(range(10)), mini_repeat_count=2, batch_size=2, repeat_count=1, seed=0)
        return DataLoader(list(range(10)), sampler=sampler, batch_size=4)

    def order(loader):
        return [int(i) for batch in loader for i in batch]

    running = make()
    orders = [order(running) for _ in range(4)]
    assert len({tuple(o) for o in orders}) == 4  # the generator moves on every epoch
    for epoch in range(4):
        fresh = make()  # what a resumed run builds
        assert ck.replay_sampler_epochs(fresh, epoch)
        assert order(fresh) == orders[epoch]
    uninterrupted = make()
    for epoch in range(4):  # in an uninterrupted run the replay changes nothing
        assert ck.replay_sampler_epochs(uninterrupted, epoch)
        assert order(uninterrupted) == orders[epoch]
    assert not ck.replay_sampler_epochs(DataLoader(list(range(4)), shuffle=True), 1)  # not TRL's sampler
