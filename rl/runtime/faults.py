"""Runtime guards for long runs: failing rewards, non-finite steps, checkpoint writes.

A training run is hours of cluster time. Bad *input* is refused before any model loads
(rl/train/recipe.py, rl/train/command.py); what can only go wrong *during* the run is handled here:

* `wrap_reward_funcs`: each reward callable is wrapped (name, signature and attributes kept, so
  TRL logs it under the same name and `rewards.registry.spec_of` still finds its registration). When a
  reward raises, the batch is re-scored one sample at a time to find the sample(s) that fail.
  `reward_error_policy: raise` (default) stops with `RewardError` naming the reward, the sample
  (batch index, `doc_id` if the data has one, a short repr of prompt and completion) and the
  exception, after logging its traceback. `reward_error_policy: none` gives only those samples
  `None` from that reward and goes on (warned, counted as the `reward_errors/<name>` metric).
  TRL 1.16 drops a None from its reward sum (other rewards still count); a sample for which every
  reward is None is "unscorable": excluded from its group's baseline and given advantage 0, so it
  does not move the policy. A reward that returns the wrong number of values, or a value that is
  not a finite number or None, is treated the same way (NaN would silently become "None" in TRL,
  inf would poison the group's advantages).
  A reward that scores with the policy (registered `needs_policy`, e.g. `rlp`) makes collective calls
  when several ranks run, so it is never re-scored sample by sample there (only the failing rank would
  repeat the collectives, and the ranks would fall out of step and hang). Instead the ranks agree (one
  all-reduced flag per call, then the failing ranks' messages gathered): `raise` stops every rank with
  the same one-line `RewardError` naming the rank(s) and the error; `none` scores the whole batch None
  from that reward on every failing rank. The reward keeps its own collectives in step by agreeing on
  failures itself (`agree_on_failure`; a rank whose part went fine raises `PeerRankFailed`). Any other
  reward is isolated per sample on its own rank, then the ranks agree the same way, so a stop on one
  rank is the same line on every rank (`rank R: reward ...`) instead of a wait in TRL's gather.
* `NonFiniteGuard` (a TrainerCallback): in `on_pre_optimizer_step` (after backward and gradient
  clipping, right before `optimizer.step()`) it checks every gradient for NaN/inf (one flag
  all-reduced over ranks); a bad step is skipped by setting every gradient to None (torch
  optimizers leave such parameters untouched, weight decay and moments included), counted, logged
  (`faults/skipped_steps` in the log history, so in trainer_state.json) and never saved (its
  `should_save` is cleared). After `max_bad_steps` consecutive bad steps training stops and
  `rl train` raises `TrainingDiverged`; the final model is not written. Before any save it also
  checks the weights are finite. The learning-rate scheduler still advances on a skipped step.
  Under DeepSpeed the engine steps inside `accelerator.backward()`, before this hook, and keeps
  gradients in its own buffers, so a step cannot be skipped there: the guard counts a step as bad
  from the logged `grad_norm`/`loss` (set `logging_steps: 1`), refuses to save non-finite weights
  (ZeRO-1/2; ZeRO-3 partitions parameters, nothing to check locally) and stops after
  `max_bad_steps`; fp16 loss scaling skips overflowing steps by itself.
* `FaultGuardsMixin` (the trainer class has the guards: `NonFiniteGuard` placed, and its
  `_save_checkpoint`): a checkpoint write that fails for lack of space (ENOSPC, EDQUOT,
  EFBIG, read-only, I/O error; safetensors and torch.save wrap these in their own exception types)
  becomes one `CheckpointSaveError` line naming the directory, the free space and the newest
  complete checkpoint, which stays intact (the half-written one has no COMPLETE marker, so
  `--resume_from_checkpoint auto` skips it; HF rotates old checkpoints only after a save succeeds,
  and rl/runtime/checkpoint.py rotates only after the new marker exists).

W&B reachability and secrets in arguments are handled before the trainer exists, in
rl/runtime/wandb_secrets.py; disk errors are recognised in rl/runtime/disk_errors.py.

Loading, audited (tests/faults/test_secrets.py): recipes are read with `yaml.safe_load`; reward
names resolve to a registry entry or an import of an installed module by dotted path, never
`eval`; nothing here unpickles. transformers 5.x's Trainer loads rng_state.pth, optimizer.pt,
scheduler.pt, scaler.pt and *.bin weights with `torch.load(..., weights_only=True)` after
`check_torch_load_is_safe()` (refuses torch < 2.6), weights from safetensors; TRL's GRPO trainer
loads nothing itself. training_args.bin is still a pickle written with `torch.save(args)`:
transformers never loads it, and no entropy-rl code does.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import sys
import traceback
from numbers import Real
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from rewards.registry import TRL_EXTRA_KWARGS, spec_of
from rl.runtime.checkpoint import find_resume_checkpoint
from rl.runtime.disk_errors import CheckpointSaveError, checkpoint_save_error, is_disk_error
from rl.errors import UserError, first_line
from rl.runtime.ranks import active_dist, sync_flag

logger = logging.getLogger(__name__)

REWARD_ERROR_POLICIES = ("raise", "none")
_MAX_REWARD_WARNINGS = 10  # per reward function; then only counted


class RewardError(UserError):
    """A reward function failed (raised, or returned something that is not a score)."""


class PeerRankFailed(RuntimeError):
    """Raised on a rank whose own part of a collective reward went fine when another rank's failed
    (`agree_on_failure`), so every rank leaves the reward at the same point."""


def agree_on_failure(error: BaseException | None) -> None:
    """Collective (every rank calls it at the same point): when any rank has an `error`, raise on
    every rank: that rank's own error, `PeerRankFailed` on the others. No-op when nothing failed
    anywhere; a single process just re-raises its own error."""
    if sync_flag(error is not None):
        if error is not None:
            raise error
        raise PeerRankFailed("another rank failed in the same collective reward call")


class TrainingDiverged(UserError):
    """`max_bad_steps` consecutive optimizer steps had non-finite gradients; training stopped."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- rewards


def _is_score(value: Any) -> bool:
    """None, or anything TRL can turn into a finite float (int, float, bool, numpy scalar, 1-element tensor)."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return False


def _cut(value: Any, n: int, i: int) -> Any:
    return [value[i]] if isinstance(value, (list, tuple)) and len(value) == n else value


def _sample_call(args: tuple, kwargs: dict, n: int, i: int) -> tuple[tuple, dict]:
    """The arguments of one sample: every per-sample list cut to [value_i], the rest as is."""
    return (tuple(_cut(a, n, i) for a in args),
            {k: (v if k in TRL_EXTRA_KWARGS else _cut(v, n, i)) for k, v in kwargs.items()})


def _describe_sample(kwargs: dict, i: int) -> str:
    parts = [f"sample {i} of the batch"]
    for key in ("doc_id", "id", "position"):
        values = kwargs.get(key)
        if isinstance(values, (list, tuple)) and i < len(values):
            parts.append(f"{key}={_short(values[i], 60)}")
    for key, limit in (("prompts", 60), ("completions", 80)):
        values = kwargs.get(key)
        if isinstance(values, (list, tuple)) and i < len(values):
            value = values[i]
            if isinstance(value, list) and value and isinstance(value[-1], dict):
                value = value[-1].get("content", value)
            parts.append(f"{key[:-1]} {_short(value, limit)}")
    return ", ".join(parts)


def wrap_reward(func: Callable, policy: str = "raise") -> Callable:
    """Wrap one TRL reward callable with the error policy (see the module docstring).

    Async callables and torch modules (reward models) are returned unchanged: TRL calls them
    differently and their failures are not per-sample.
    """
    if policy not in REWARD_ERROR_POLICIES:
        raise UserError(f"reward_error_policy: expected one of {list(REWARD_ERROR_POLICIES)}, got {policy!r}")
    if getattr(func, "__rl_fault_wrapped__", False):
        return func
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None)):
        return func
    if "torch" in sys.modules and isinstance(func, sys.modules["torch"].nn.Module):
        return func
    name = getattr(func, "__name__", None) or type(func).__name__
    state = {"errors": 0}
    spec = spec_of(func)
    collective = bool(getattr(spec, "needs_policy", False))

    def fail(message: str, exc: BaseException | None = None):
        if exc is not None:
            logger.error("reward `%s` failed:\n%s", name, "".join(traceback.format_exception(exc)).rstrip())
        raise RewardError(
            f"reward `{name}`: {message}; fix the reward (or the data row), or set `reward_error_policy: none` "
            "to score such samples None and keep training"
        ) from exc

    def give_none(count: int, n: int, what: str, kwargs: dict) -> None:
        state["errors"] += count
        if state["errors"] - count < _MAX_REWARD_WARNINGS:
            logger.warning("reward `%s`: %s; scored None (%d of %d samples in this batch, %d so far)",
                           name, what, count, n, state["errors"])
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"reward_errors/{name}", float(count))

    def score_one(args, kwargs, n, i):
        """(score, None) or (None, problem text) for sample i, scored alone."""
        one_args, one_kwargs = _sample_call(args, kwargs, n, i)
        try:
            out = func(*one_args, **one_kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported, never swallowed silently
            return None, exc
        if not isinstance(out, (list, tuple)) or len(out) != 1:
            return None, f"returned {_short(out, 60)} for one sample (expected a list of one score)"
        if not _is_score(out[0]):
            return None, f"returned {_short(out[0], 40)}, not a finite number or None"
        return out[0], None

    def across_ranks(dist, args, kwargs, n):
        """A policy-scored reward under several ranks: one call, the ranks agree on failure (see the
        module docstring); never a per-sample re-score (its collectives would run on one rank only)."""
        fatal = False  # a wrong number of values stops the run whatever the policy (as in one process)
        try:
            out, error, problem = func(*args, **kwargs), None, None
        except Exception as exc:  # noqa: BLE001
            out, error = None, exc
            problem = None if isinstance(exc, PeerRankFailed) else f"raised {first_line(exc)}"
            fatal = problem is not None and n is None  # no batch to score None
        if error is None and (n is None or not isinstance(out, (list, tuple)) or len(out) != n):
            size = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
            problem = f"returned {size} values for {n} completions (one score per completion expected)"
            fatal = True
        bad = [] if problem or error else [i for i, v in enumerate(out) if not _is_score(v)]
        if bad and policy == "raise":
            problem = (f"returned {_short(out[bad[0]], 40)} (not a finite number or None) for "
                       f"{_describe_sample(kwargs, bad[0])}")
        if sync_flag(problem is not None or error is not None):
            reports = [None] * dist.get_world_size()
            dist.all_gather_object(reports, None if problem is None else (problem, fatal))
            failed = [(rank, report) for rank, report in enumerate(reports) if report is not None]
            what = "; ".join(f"rank {rank} {text}" for rank, (text, _) in failed) or "a rank failed"
            if policy == "raise" or any(stop for _, (_, stop) in failed):
                if error is not None and not isinstance(error, PeerRankFailed):
                    logger.error("reward `%s` failed on this rank:\n%s", name,
                                 "".join(traceback.format_exception(error)).rstrip())
                raise RewardError(
                    f"reward `{name}` (scores with the policy on every rank together): {what}; every rank "
                    "stops; fix the reward (or the data row), or set `reward_error_policy: none` to score "
                    "such batches None and keep training") from error
            if error is not None or problem is not None:
                give_none(n, n, f"{what} (the whole batch of this rank)", kwargs)
                return [None] * n
        if bad:  # policy none, values that are not scores: those samples None (no collective involved)
            out = list(out)
            for i in bad:
                out[i] = None
            give_none(len(bad), len(out), f"non-finite or non-numeric scores {[_short(v, 20) for v in bad[:3]]}",
                      kwargs)
        return list(out)

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        completions = kwargs.get("completions")
        if completions is None:  # called positionally (TRL always passes keywords): first list argument
            completions = next((a for a in args if isinstance(a, (list, tuple))), None)
        n = len(completions) if isinstance(completions, (list, tuple)) else None
        dist = active_dist()
        if dist is None:
            return on_this_rank(args, kwargs, n)
        if collective:
            return across_ranks(dist, args, kwargs, n)
        # a reward without collectives: each rank isolates its own failing samples, then the ranks agree,
        # so a stop on one rank stops every rank with the same line instead of leaving the others waiting
        # in TRL's gather of the rewards
        try:
            out, error = on_this_rank(args, kwargs, n), None
        except RewardError as exc:
            out, error = None, exc
        if sync_flag(error is not None):
            reports = [None] * dist.get_world_size()
            dist.all_gather_object(reports, None if error is None else str(error))
            failed = [(rank, text) for rank, text in enumerate(reports) if text is not None]
            rank, text = failed[0]
            also = f" (rank(s) {', '.join(str(r) for r, _ in failed[1:])} failed too)" if failed[1:] else ""
            raise RewardError(f"rank {rank}{also}: {text}") from error
        return out

    def on_this_rank(args, kwargs, n):
        """The reward on this rank's batch, failing samples isolated by scoring each alone."""
        try:
            out = func(*args, **kwargs)
            error = None
        except Exception as exc:  # noqa: BLE001
            out, error = None, exc
        if error is None:
            if not isinstance(out, (list, tuple)) or (n is not None and len(out) != n):
                size = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
                fail(f"returned {size} values for {n} completions (one score per completion expected)")
            bad = [i for i, v in enumerate(out) if not _is_score(v)]
            if not bad:
                return list(out)
            if policy == "raise":
                i = bad[0]
                fail(f"returned {_short(out[i], 40)} (not a finite number or None) for "
                     f"{_describe_sample(kwargs, i)}")
            out = list(out)
            for i in bad:
                out[i] = None
            give_none(len(bad), len(out), f"non-finite or non-numeric scores {[_short(v, 20) for v in bad[:3]]}",
                      kwargs)
            return out
        if n is None:
            fail(f"raised {first_line(error)} (completions not a list; cannot isolate the sample)", error)
        # Find the failing sample(s): score each sample alone.
        scores, problems = [], []
        for i in range(n):
            score, problem = score_one(args, kwargs, n, i)
            scores.append(score)
            if problem is not None:
                problems.append((i, problem))
        if not problems:  # the batch fails but every sample alone passes: a batch-level bug
            fail(f"raised {first_line(error)} on the batch of {n} (each sample alone scores fine)", error)
        i, problem = problems[0]
        what = first_line(problem) if isinstance(problem, BaseException) else problem
        if policy == "raise":
            fail(f"raised {what} on {_describe_sample(kwargs, i)}",
                 problem if isinstance(problem, BaseException) else error)
        give_none(len(problems), n, f"{what} on {_describe_sample(kwargs, i)}", kwargs)
        return scores

    guarded.__rl_fault_wrapped__ = True
    guarded.__rl_fault_state__ = state
    return guarded


def wrap_reward_funcs(funcs, policy: str = "raise") -> list:
    return [wrap_reward(f, policy) for f in funcs]


# ---------------------------------------------------------------------------------------------- non-finite steps


def _all_finite(tensors) -> bool:
    import torch

    flags = []
    for t in tensors:
        if hasattr(t, "to_local"):  # DTensor (FSDP2): check this rank's shard
            t = t.to_local()
        if t.numel():
            flags.append(torch.isfinite(t).all())
    if not flags:
        return True
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all().item())


def _deepspeed_enabled(args) -> bool:
    return bool(getattr(args, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"


class NonFiniteGuard(TrainerCallback):
    """Skip optimizer steps with NaN/inf gradients, count them, stop after `max_bad_steps` in a row.

    Put it right after the trainer's DefaultFlowCallback (`install_guard`; `FaultGuardsMixin` does), so
    its `should_save` decision for a bad step comes after the default save schedule. See the module docstring.
    """

    def __init__(self, max_bad_steps: int = 3):
        if max_bad_steps < 1:
            raise UserError(f"max_bad_steps: must be at least 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.skipped: list[int] = []  # steps skipped (or, under DeepSpeed, detected) as non-finite
        self.consecutive = 0
        self.diverged_at: int | None = None
        self._bad_now = False
        self._deepspeed = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._deepspeed = _deepspeed_enabled(args)
        if self._deepspeed:
            logger.warning("non-finite guard under DeepSpeed: bad steps are detected from the logged grad_norm/loss "
                           "and stop the run after max_bad_steps, but cannot be skipped (the engine has stepped)")
        return control

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self._deepspeed or model is None:
            return control
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bad = sync_flag(not _all_finite(grads))
        if bad:
            self._bad_now = True
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            for p in model.parameters():  # parameters the optimizer may not list (defensive)
                p.grad = None
        return control

    def _count_bad(self, state, control, why: str) -> None:
        step = state.global_step
        if step in self.skipped:
            return
        self.skipped.append(step)
        self.consecutive += 1
        control.should_save = False
        state.log_history.append({"faults/skipped_step": step, "faults/skipped_steps": len(self.skipped),
                                  "step": step})
        if state.is_world_process_zero:
            logger.warning("step %d: %s; %s (%d in a row, %d in total; max_bad_steps=%d)", step, why,
                           "not applied" if not self._deepspeed else "counted", self.consecutive,
                           len(self.skipped), self.max_bad_steps)
        if self.consecutive >= self.max_bad_steps:
            self.diverged_at = step
            control.should_training_stop = True

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._bad_now:
            self._bad_now = False
            self._count_bad(state, control, "non-finite (NaN/inf) gradients")
        else:
            self.consecutive = 0
        if control.should_save and model is not None and not self.diverged_at:
            if sync_flag(not _all_finite(p.detach() for p in model.parameters())):
                self._count_bad(state, control, "non-finite weights; checkpoint not saved")
                self.diverged_at = state.global_step
                control.should_training_stop = True
        if self.diverged_at:
            control.should_save = False
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._deepspeed or not logs:
            return control
        values = [logs.get(k) for k in ("grad_norm", "loss")]
        if any(isinstance(v, Real) and not math.isfinite(float(v)) for v in values):
            self._count_bad(state, control, f"non-finite grad_norm/loss {values}")
        elif state.global_step not in self.skipped:
            self.consecutive = 0
        return control

    def raise_if_diverged(self, output_dir: str | os.PathLike) -> None:
        if self.diverged_at is None:
            return
        last = find_resume_checkpoint(output_dir)
        steps = self.skipped[-self.consecutive:] if self.consecutive else self.skipped[-1:]
        raise TrainingDiverged(
            f"training stopped at step {self.diverged_at}: {len(steps)} consecutive optimizer steps "
            f"({', '.join(map(str, steps))}) had non-finite (NaN/inf) gradients or weights (max_bad_steps="
            f"{self.max_bad_steps}); none of them was applied or saved; newest complete checkpoint: "
            f"{last or 'none'}; lower learning_rate, set max_grad_norm, check rewards and data, then rerun "
            "with --resume_from_checkpoint auto"
        )


def install_guard(trainer, guard: NonFiniteGuard) -> NonFiniteGuard:
    """Place `guard` right after DefaultFlowCallback (its save decision must come after the default one)."""
    from transformers.trainer_callback import DefaultFlowCallback

    callbacks = trainer.callback_handler.callbacks
    if guard in callbacks:
        callbacks.remove(guard)
    index = next((i + 1 for i, cb in enumerate(callbacks) if isinstance(cb, DefaultFlowCallback)), 0)
    callbacks.insert(index, guard)
    return guard


# ---------------------------------------------------------------------------------------------- checkpoint writes


def _translate_save_error(trainer, exc: BaseException) -> None:
    """Raise the one-line `CheckpointSaveError` for a disk error in a checkpoint write; return otherwise."""
    if isinstance(exc, CheckpointSaveError):
        return
    target = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
    if is_disk_error(exc, target):
        raise checkpoint_save_error(target, exc, find_resume_checkpoint(trainer.args.output_dir)) from exc


class FaultGuardsMixin:
    """The run-time guards as part of the trainer class (put first in the bases), so any trainer built
    from it has them, whoever builds it (`rl train`, `build_trainer`, a test, a bench):

    * `nonfinite_guard`: a `NonFiniteGuard` (`max_bad_steps` from the args, 3 without the field) placed
      right after DefaultFlowCallback (`install_guard`); one passed in `callbacks` is used instead.
    * `_save_checkpoint`: a disk error anywhere in the checkpoint write (the HF files and whatever the
      mixins after this one add, e.g. the RLP teacher's state) becomes one `CheckpointSaveError` line.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        guard = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, NonFiniteGuard)), None)
        if guard is None:
            guard = NonFiniteGuard(getattr(self.args, "max_bad_steps", 3))
        self.nonfinite_guard = install_guard(self, guard)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        try:
            return super()._save_checkpoint(model, trial, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unchanged unless it is a disk error
            _translate_save_error(self, exc)
            raise
