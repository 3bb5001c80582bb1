"""A stand-in for `python -m rl.cli train` that runs the real preemption/checkpoint protocol, no model.

Why: it lets tests/slurm check the whole path slurm/train.sbatch -> srun -> accelerate launch ->
ranks -> PreemptionHandler -> all-reduce -> COMPLETE checkpoint -> marker -> batch-script requeue ->
`--resume_from_checkpoint auto`, in seconds, before (and independently of) the real trainer.

Each "step" sleeps STEP_SECONDS. Only the LAST rank listens for signals (the others use
`signals=()`), so a stop on every rank proves the flag was agreed across ranks. Every rank appends
`<restart> <rank> <event> <step>` lines to <output_dir>/events.txt.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState

from rl.runtime import checkpoint as ck
from rl.runtime import preemption
from rl.launch.slurm import load_recipe

TOTAL_STEPS = 8
STEP_SECONDS = 0.5


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--config", required=True)
    p.add_argument("--resume_from_checkpoint", default=None)
    args, _ = p.parse_known_args()
    out = Path(load_recipe(args.config)["output_dir"])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    events = out / "events.txt"

    def log(event: str, step: int) -> None:
        with open(events, "a") as f:
            f.write(f"{restart} {rank} {event} {step}\n")

    handler = preemption.PreemptionHandler(signals=(signal.SIGUSR1, signal.SIGTERM) if rank == world - 1 else ())
    handler.install()
    callback = preemption.PreemptionCallback(handler)
    resume = ck.resolve_resume(args.resume_from_checkpoint, out)
    start = ck.checkpoint_step(resume) if resume else 0
    log("start", start)
    state = TrainerState(global_step=start, is_world_process_zero=rank == 0)
    control = TrainerControl()
    callback.on_train_begin(None, state, control)
    for step in range(start + 1, TOTAL_STEPS + 1):
        time.sleep(STEP_SECONDS)
        state.global_step = step
        log("step", step)
        callback.on_step_end(None, state, control)
        if control.should_save:
            save(out / f"checkpoint-{step}", step, rank, world)
            ck.CheckpointCallback().on_save(SimpleNamespace(output_dir=str(out), world_size=world,
                                                            save_only_model=False), state, control)
        if control.should_training_stop:
            log("stop", step)
            break
    else:
        log("done", TOTAL_STEPS)
    log(f"requeue:{handler.requeue_if_needed()}", state.global_step)
    dist.destroy_process_group()
    return 0


def save(ckpt: Path, step: int, rank: int, world: int) -> None:
    """What the HF Trainer writes: rank 0 model/optimizer/scheduler/state, every rank its RNG state."""
    ckpt.mkdir(parents=True, exist_ok=True)
    torch.save({"cpu": torch.random.get_rng_state()}, ckpt / f"rng_state_{rank}.pth")
    if rank == 0:
        save_file({"w": torch.full((4,), float(step))}, str(ckpt / "model.safetensors"))
        torch.save({"state": {}}, ckpt / "optimizer.pt")
        torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
        (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}}}')


if __name__ == "__main__":
    raise SystemExit(main())
