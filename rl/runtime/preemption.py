"""Preemption: a signal becomes "finish this optimizer step, save, stop, requeue".

`PreemptionHandler` turns SIGUSR1/SIGTERM into a flag (async-signal-safe), `PreemptionCallback`
agrees on it across ranks at step end (one tiny all-reduce MAX) and makes the Trainer save and
stop; `requeue_if_needed` then writes the marker the Slurm script acts on (or requeues itself).
The protocol is described in slurm/train.sbatch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.ranks import active_dist, sync_flag

logger = logging.getLogger(__name__)

PREEMPT_MARKER_ENV = "RL_PREEMPT_MARKER"  # the batch script's marker file (slurm/train.sbatch)


class PreemptionHandler:
    """Signal -> flag. Install once per process before training; `requeue_if_needed()` after it returns.

    The handler only records the signal number (safe at any point). Python runs it in the main
    thread between bytecodes, so a rank blocked in a long C call sees it when that call returns.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGUSR1, signal.SIGTERM),
                 requeue_command: Sequence[str] | None = ("scontrol", "requeue"),
                 marker_path: str | os.PathLike | None = None):
        self.signals = tuple(signals)
        self.requeue_command = tuple(requeue_command) if requeue_command else None
        self.marker_path = marker_path if marker_path is not None else os.environ.get(PREEMPT_MARKER_ENV) or None
        self.signum: int | None = None  # last signal received
        self.preempted = False  # set by PreemptionCallback when it stopped training for a signal
        self.preempted_step: int | None = None
        self.is_main_process: bool | None = None  # set by PreemptionCallback from TrainerState
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """A preemption signal arrived in this process (not yet agreed across ranks)."""
        return self.signum is not None

    def _on_signal(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self.signum = signum

    def request(self, signum: int = signal.SIGUSR1) -> None:
        """Ask for a save-and-stop as if `signum` had arrived (tests, custom triggers)."""
        self.signum = signum

    def install(self) -> "PreemptionHandler":
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def uninstall(self) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> "PreemptionHandler":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def _main_process(self) -> bool:
        if self.is_main_process is not None:
            return self.is_main_process
        dist = active_dist()
        return dist.get_rank() == 0 if dist is not None else os.environ.get("RANK", "0") == "0"

    def requeue_if_needed(self) -> str:
        """After `train()` returns: act on a preemption. Returns what was done.

        "none": not preempted (or not the main process). "marker": wrote `marker_path`
        ($RL_PREEMPT_MARKER) for the batch script, which requeues. "requeued": ran
        `scontrol requeue $SLURM_JOB_ID`. "stopped": preempted outside Slurm; rerun with
        --resume_from_checkpoint auto. "requeue-failed": scontrol failed (logged).
        The caller exits 0 in every case: the checkpoint is saved and marked complete.
        """
        if not self.preempted or not self._main_process():
            return "none"
        job = os.environ.get("SLURM_JOB_ID")
        if self.marker_path:
            info = {"job_id": job, "step": self.preempted_step, "signal": self.signum, "time": time.time()}
            Path(self.marker_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.marker_path, json.dumps(info))
            logger.warning("preempted at step %s: checkpoint saved, wrote %s", self.preempted_step, self.marker_path)
            return "marker"
        if job and self.requeue_command:
            cmd = [*self.requeue_command, job]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as e:
                logger.error("preempted; %s failed: %s", " ".join(cmd), e)
                return "requeue-failed"
            if proc.returncode != 0:
                logger.error("preempted; %s failed: %s", " ".join(cmd), proc.stderr.strip())
                return "requeue-failed"
            logger.warning("preempted at step %s: checkpoint saved, requeued job %s", self.preempted_step, job)
            return "requeued"
        logger.warning("preempted at step %s: checkpoint saved; rerun with --resume_from_checkpoint auto",
                       self.preempted_step)
        return "stopped"


class PreemptionCallback(TrainerCallback):
    """At step end, if any rank got a preemption signal: save this step and stop training (all ranks).

    `check_every`: agree on the flag (one all-reduce) only when global_step % check_every == 0; use
    `generation_cycle_steps(args)` with GRPO so the stop lands on a generation boundary.
    """

    def __init__(self, handler: PreemptionHandler, check_every: int = 1):
        if check_every < 1:
            raise ValueError("check_every must be >= 1")
        self.handler = handler
        self.check_every = check_every

    def on_train_begin(self, args, state, control, **kwargs):
        self.handler.is_main_process = state.is_world_process_zero
        # A checkpoint saved on preemption stores should_training_stop=True; never let it stop a resumed run.
        control.should_training_stop = False
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.check_every != 0:
            return control
        if state.max_steps and state.global_step >= state.max_steps:
            return control  # the run ends here anyway: nothing to requeue (same decision on every rank)
        if sync_flag(self.handler.requested):
            control.should_save = True
            control.should_training_stop = True
            self.handler.preempted = True
            self.handler.preempted_step = state.global_step
            logger.warning("preemption signal: saving checkpoint-%d and stopping", state.global_step)
        return control
