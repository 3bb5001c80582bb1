"""One W&B run per run directory, across requeues, resubmits and resumes.

`wandb_run_callbacks(training_args)` is called by `rl train` before the trainer is built. When
`report_to` includes wandb (and W&B is not disabled) it:

* picks the run id: a user-set `WANDB_RUN_ID` wins; else, when the run continues
  (`resume_from_checkpoint` set: `auto`, true or a path), the id recorded in
  `<output_dir>/wandb-run.json`; else a new one. Rank 0 records it there (atomically).
* sets `WANDB_RUN_ID` and `WANDB_RESUME=allow` (a user's `WANDB_RESUME` is kept) for
  transformers' `WandbCallback`, whose `wandb.init` reads both from the environment;
* returns a `WandbContinuity` callback that drops every `wandb.log` call (WandbCallback's metrics,
  TRL's profiling timings and completion tables, RLP's thought tables) made while the trainer
  replays steps the W&B run already holds, gives rows without `train/global_step` the trainer's
  step, and records the last step logged. W&B itself does not deduplicate: the metrics are plotted
  against `train/global_step` (WandbCallback's `define_metric`), so a replayed step would show twice.

The replay bound is the `last_step` recorded in wandb-run.json after each log (rank 0), so a job
killed after its last checkpoint (steps logged, not saved) resumes without logging those steps again.
Beside it, `wandb_step`: W&B's own row counter (`_step`). An online resume continues it from the
server; an offline one starts again at 0, so the resumed attempt's first row is logged at the
recorded `wandb_step`: each offline attempt then holds disjoint `_step`s, which `wandb sync --append`
needs to append one attempt's file to the run the first one created.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
from pathlib import Path

from transformers import TrainerCallback

from rl.runtime.atomic_io import atomic_write_text

logger = logging.getLogger(__name__)

RUN_FILE = "wandb-run.json"
_OURS = "ENTROPY_RL_WANDB_RUN_ID"  # the WANDB_RUN_ID value this module set (so it is not taken for the user's)
_ID_CHARS = string.ascii_lowercase + string.digits
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off", "none"}


def wants_wandb(report_to, environ=None) -> bool:
    """True when `report_to` asks for W&B and the environment does not disable it."""
    environ = os.environ if environ is None else environ
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "wandb" not in targets and "all" not in targets:
        return False
    if environ.get("WANDB_MODE", "").strip().lower() == "disabled":
        return False
    return environ.get("WANDB_DISABLED", "").strip().lower() not in _TRUE


def read_run_file(output_dir: str | os.PathLike) -> dict:
    """`{"run_id": str, "last_step": int, "wandb_step": int}` from `<output_dir>/wandb-run.json`, or {} when
    absent or unreadable."""
    path = Path(output_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable (%s); starting a new W&B run", path, exc)
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str) or not data["run_id"].strip():
        logger.warning("%s: no run_id in it; starting a new W&B run", path)
        return {}
    steps = {k: data.get(k) for k in ("last_step", "wandb_step")}
    return {"run_id": data["run_id"].strip(), **{k: v if isinstance(v, int) and v > 0 else 0 for k, v in steps.items()}}


def write_run_file(output_dir: str | os.PathLike, run_id: str, last_step: int, wandb_step: int = 0) -> Path:
    return atomic_write_text(Path(output_dir) / RUN_FILE, json.dumps(
        {"run_id": run_id, "last_step": int(last_step), "wandb_step": int(wandb_step)}) + "\n", make_parents=True)


def _continues(resume_from_checkpoint) -> bool:
    """The run continues the run directory's previous attempt (`auto`, true or a checkpoint path)."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return False
    return str(resume_from_checkpoint).strip().lower() not in _FALSE


def _is_rank_zero(environ) -> bool:
    return str(environ.get("RANK", "0")).strip() in ("", "0")


def wandb_run_callbacks(training_args, environ=None) -> list:
    """Pick and record the W&B run id, set the environment for `wandb.init`; the callbacks to add (see module doc)."""
    environ = os.environ if environ is None else environ
    if not wants_wandb(training_args.report_to, environ):
        return []
    output_dir = training_args.output_dir
    previous = read_run_file(output_dir) if _continues(training_args.resume_from_checkpoint) else {}
    user_id = environ.get("WANDB_RUN_ID", "").strip()
    if user_id and user_id == environ.get(_OURS):
        user_id = ""  # left behind by an earlier `rl train` in this process, not the user's
    run_id = user_id or previous.get("run_id") or "".join(secrets.choice(_ID_CHARS) for _ in range(8))
    same = previous.get("run_id") == run_id
    replayed_until, wandb_step = (previous["last_step"], previous["wandb_step"]) if same else (0, 0)
    if _is_rank_zero(environ):
        write_run_file(output_dir, run_id, replayed_until, wandb_step)
        if same:
            logger.info("W&B: resuming run %s (%s); it holds steps up to %d", run_id, Path(output_dir) / RUN_FILE,
                        replayed_until)
    saved = {name: environ.get(name) for name in ("WANDB_RUN_ID", "WANDB_RESUME", _OURS)}
    environ["WANDB_RUN_ID"] = run_id
    if not user_id:
        environ[_OURS] = run_id
    if not environ.get("WANDB_RESUME", "").strip():
        environ["WANDB_RESUME"] = "allow"
    return [WandbContinuity(output_dir, run_id, replayed_until, saved, environ, wandb_step=wandb_step)]


class WandbContinuity(TrainerCallback):
    """Rank 0's filter on `wandb.log` for one `train()` call, and the record of the last step logged.

    Placed after WandbCallback (user callbacks follow the reporting ones), so `wandb.init` has run when
    `on_train_begin` wraps `wandb.log`. While the trainer replays steps up to `replayed_until` every
    call is dropped; replay ends when step `replayed_until + 1` begins (`on_step_begin`: TRL logs its
    profiling timings while a step runs, before the step count moves). Rows without
    `train/global_step` (TRL's profiling timings and completion tables) get the trainer's step count:
    W&B would fill in the last value it saw in this process, 0 in a resumed process, which put them
    at the start of the axis.
    """

    def __init__(self, output_dir, run_id: str, replayed_until: int, saved_env: dict, environ, wandb_step: int = 0):
        self.output_dir, self.run_id, self.replayed_until = output_dir, run_id, int(replayed_until)
        self.wandb_step = int(wandb_step)  # the `_step` this attempt's first row takes at least
        self._first = True
        self._saved_env, self._environ = saved_env, environ
        self._wandb = self._original_log = self._state = None
        self._replaying = False
        self._dropped = 0
        self._last_written = 0

    def _wrap(self, state) -> None:
        import sys

        wandb = sys.modules.get("wandb")
        if wandb is None or getattr(wandb, "run", None) is None or self._original_log is not None:
            return
        self._wandb, self._original_log, self._state = wandb, wandb.log, state
        original = self._original_log

        def log(data=None, *args, **kwargs):
            if self._replaying:
                self._dropped += 1
                return None
            if isinstance(data, dict) and "train/global_step" not in data:
                data = {**data, "train/global_step": self._state.global_step}
            if self._first:
                self._first = False
                run = getattr(self._wandb, "run", None)
                if (not args and "step" not in kwargs and "commit" not in kwargs and run is not None
                        and getattr(run, "step", self.wandb_step) < self.wandb_step):
                    kwargs = {"step": self.wandb_step, "commit": True}  # an offline resume starts _step at 0
            return original(data, *args, **kwargs)

        wandb.log = log

    def _unwrap(self) -> None:
        if self._original_log is not None and self._wandb is not None and self._wandb.log is not self._original_log:
            self._wandb.log = self._original_log
        self._wandb = self._original_log = None

    def _end_replay(self, step: int) -> None:
        if self._replaying:
            self._replaying = False
            logger.info("W&B run %s: steps up to %d were already logged; %d log call(s) of the replayed steps "
                        "dropped, logging again from step %d", self.run_id, self.replayed_until, self._dropped,
                        step + 1)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._wrap(state)
        self._replaying = self._original_log is not None and state.global_step < self.replayed_until
        if self._replaying:
            logger.info("W&B run %s holds steps up to %d; resuming at step %d, the replayed steps are not logged "
                        "again", self.run_id, self.replayed_until, state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._state = state
        if self._replaying and state.global_step >= self.replayed_until:
            self._end_replay(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if (not state.is_world_process_zero or self._replaying
                or state.global_step <= max(self.replayed_until, self._last_written)):
            return
        self._record(state.global_step)
        self._last_written = state.global_step

    def _record(self, step: int) -> None:
        import sys

        wandb = sys.modules.get("wandb")
        run = getattr(wandb, "run", None) if wandb is not None else None
        if run is not None:
            write_run_file(self.output_dir, self.run_id, step, getattr(run, "step", 0))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not self._replaying and self._original_log is not None:
            self._record(max(state.global_step, self.replayed_until))  # W&B's counter after the last rows
        self._replaying = False
        self._unwrap()
        self.restore_environ()

    def restore_environ(self) -> None:
        """Put WANDB_RUN_ID / WANDB_RESUME back as they were (a later run in this process picks its own)."""
        for name, value in self._saved_env.items():
            if value is None:
                self._environ.pop(name, None)
            else:
                self._environ[name] = value
