"""The test kit's one way to start N ranks on this CPU machine.

Two entry points, one environment:
* `launch_ranks(target, ranks=2, config="ddp")`: a subprocess through `accelerate launch` with one of
  recipes/accelerate/*.yaml, exactly as users and slurm/train.sbatch start training (`config=None`
  runs the target as one plain process, the reference every invariance test compares against).
  `target` is a script path or `-m module` plus its arguments. A hang fails the test with the log.
* `spawn_ranks(fn, world, *args)`: in-process functions of a test module on `world` gloo ranks
  (torch.multiprocessing.spawn), for pure tensor code that needs a process group but no trainer;
  `fn(rank, world, init_method, *args)` calls `init_gloo(rank, world, init_method)` first.

Both give every rank one thread (`OMP_NUM_THREADS=1`: 2 cores here), the hub offline, W&B
disabled, and none of the parent's launcher variables (a test run under a launcher must not leak
its RANK/WORLD_SIZE/MASTER_* into the ranks it starts).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate"
_LAUNCHER_VARS = ("ACCELERATE_", "DS_", "LOCAL_RANK", "WORLD_SIZE", "RANK", "MASTER_", "LOCAL_WORLD_SIZE",
                  "ENTROPY_RL_NO_CPU_WORKAROUNDS")


def free_port() -> int:
    """A TCP port free on localhost right now (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(**extra: str) -> dict[str, str]:
    """The environment every started rank gets: the parent's minus launcher variables, plus the test defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_VARS)}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               PYTHONFAULTHANDLER="1",  # a rank that aborts prints its Python stacks into the log
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.update(extra)
    return env


def launch_command(target: list[str], *, ranks: int = 2, config: str | None = "ddp") -> list[str]:
    """The command line: `accelerate launch --config_file recipes/accelerate/<config>.yaml` for N ranks."""
    if config is None:
        assert ranks == 1, "config=None runs one plain process"
        return [sys.executable, *target]
    path = ACCELERATE_CONFIGS / f"{config}.yaml"
    assert path.is_file(), f"no accelerate config {path}"
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
            "--num_processes", str(ranks), "--num_machines", "1", "--main_process_port", str(free_port()), *target]


def launch_ranks(target: list[str], *, ranks: int = 2, config: str | None = "ddp", cwd: Path = ROOT,
                 env: dict[str, str] | None = None, timeout: float = 540,
                 check: bool = False) -> subprocess.CompletedProcess:
    """Run `target` on `ranks` CPU ranks and wait; a hang fails the test naming the command and its log.

    With `check`, a non-zero exit fails the test with the log's tail. The accelerate configs say
    MULTI_GPU: `rl train` forms a gloo group on CPU ranks by itself (rl/runtime/cpu_distributed.py);
    other targets pass `env={"ACCELERATE_USE_CPU": "1"}`, else each rank runs alone."""
    cmd = launch_command(target, ranks=ranks, config=config)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=rank_env(**(env or {})), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-2000:], (exc.stderr or b"")[-3000:]
        pytest.fail(f"the ranks hung (no exit in {timeout:.0f} s): {' '.join(cmd)}\n{tail[0]!r}\n{tail[1]!r}")
    if check:
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"exit {proc.returncode}: {' '.join(cmd)}\n{log[-4000:]}"
    return proc


def init_gloo(rank: int, world: int, init_method: str, timeout_s: float = 120) -> None:
    """Join the gloo group `spawn_ranks` set up (call first in the spawned function); a rank that
    never arrives fails the others after `timeout_s` instead of hanging the test run."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))


def spawn_ranks(fn, world: int, *args) -> None:
    """Run `fn(rank, world, init_method, *args)` on `world` spawned processes and wait for all."""
    import torch.multiprocessing as mp

    init_method = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(fn, args=(world, init_method, *args), nprocs=world, join=True)
