"""CPU-only workarounds for multi-process training (DDP and DeepSpeed ZeRO over gloo).

This is the ONE place for them. `apply_cpu_workarounds()` is called at the top of `rl train`
(before TRL's config, hence accelerate's state, exists). It does nothing on a machine with a
CUDA device, and nothing in a plain single-process run; on GPU clusters the recipes in
recipes/accelerate/ run exactly as accelerate and DeepSpeed intend.

What it does, and why (all measured with torch 2.13 CPU, accelerate 1.15, DeepSpeed 0.19.8):

1. Multi-process rank without an accelerator -> gloo (`PartialState._prepare_backend`).
   accelerate picks a backend only for an accelerator, or when told `cpu=True` (the recipe's
   `use_cpu: true` or the env `ACCELERATE_USE_CPU=1`). Otherwise every rank of
   `accelerate launch --num_processes N` silently trains alone: world size 1, no gradient sync,
   each rank sees all the data, exit status 0. Under DeepSpeed it is worse: DeepSpeed's own
   process group exists, but accelerate believes there is one process (`train_batch_size ...
   4 != 4 * 1 * 2`) and a later gloo all_gather fails. The patch changes accelerate's answer
   only when accelerate found nothing (`DistributedType.NO`) although this process is one rank
   of several (`LOCAL_RANK` set and `WORLD_SIZE` > 1): it answers `("gloo", MULTI_CPU)`, so
   accelerate (and DeepSpeed, which is handed that backend) build one gloo group over all
   ranks. An explicit non-gloo `ddp_backend` is left alone.

2. DeepSpeed requested (`ACCELERATE_USE_DEEPSPEED=true`, set by `accelerate launch` with a ZeRO
   config), no CUDA:
   - `DS_ACCELERATOR=cpu` (unless already set): DeepSpeed's CPU accelerator, whose
     communication backend is gloo when oneCCL (`oneccl_bindings_for_pytorch`) is absent.
   - `deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False`: otherwise DeepSpeed's
     CPU communication setup JIT-compiles the `deepspeed_shm_comm` op on the first run
     (needs g++ and ninja, 45-110 s) before any training.
   - `ACCELERATE_USE_CPU` is removed from the environment (with a warning): `Accelerator` reads
     it as `cpu=True`, which means "not DeepSpeed", and the run silently becomes plain DDP over
     gloo (measured: exit 0, MULTI_CPU, no ZeRO). Item 1 gives the ranks their process group
     instead. (A recipe's `use_cpu: true` only reaches the TrainingArguments' PartialState, not
     the Accelerator: measured, ZeRO stays on.)
   Not handled here, by design: DeepSpeed's own fused Adam (`optimizer` section in a DeepSpeed
   config) compiles `fused_adam` for 75-160 s on CPU; entropy-rl's accelerate configs have no
   optimizer section, so the HF Trainer builds the recipe's torch optimizer (`optim:
   adamw_torch`). With optimizer offload accelerate swaps a torch Adam for DeepSpeedCPUAdam,
   which compiles `cpu_adam` once (on GPU clusters too).

3. Multi-process rank without CUDA: an `atexit` handler collects garbage (the trainer, the
   DeepSpeed engine and their tensors sit in reference cycles) and destroys the gloo process
   group while the interpreter is still fully alive. A rank that finished could otherwise abort
   at interpreter shutdown with "terminate called without an active exception" (SIGABRT; C++
   threads dropping tensors while Python finalizes: pytorch/pytorch#190489, #65513), and the
   launcher then kills the other ranks and reports failure although training and saving are
   done. Seen intermittently with ZeRO-3 on 2 CPU ranks under load (2 of ~8 launches in loaded
   test sessions, 0 of 24 otherwise). This lowers the risk; it cannot remove it, since the race
   is in torch's finalization. No barrier is taken, so a crashed peer cannot make the exit hang.

4. Item 3 lowers the risk of that abort; `exit_process(code)` removes it for a rank that succeeded.
   The `rl` console script and `python -m rl.cli` (what `accelerate launch` and slurm/train.sbatch
   run) leave through it. When `rl.cli.main()` has returned in a CPU rank of a multi-process run
   (0: training done, model and checkpoints saved and closed; or its own error code, e.g. 2 for a
   UserError) it does what interpreter exit does first, joining non-daemon threads and running
   the atexit handlers (item 3's teardown, W&B's finish, logging's flush), flushes stdout/stderr,
   and then ends the process with `os._exit(code)`: no module teardown, no C++ static
   destructors, which is where the abort happens, so the launcher sees the rank's real code. A
   traceback (an exception out of main), a single process, a CUDA machine or
   ENTROPY_RL_NO_CPU_WORKAROUNDS=1 exit normally. Calls of `rl.cli.main()` from Python (tests,
   notebooks) are untouched: they just return.

Everything is idempotent; `apply_cpu_workarounds()` returns the names of the items it applied.
`ENTROPY_RL_NO_CPU_WORKAROUNDS=1` turns it off (to reproduce the failures above, e.g. in tests).
"""

from __future__ import annotations

import logging
import os
from typing import NoReturn

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_PATCH_MARK = "_entropy_rl_cpu_gloo"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def deepspeed_requested() -> bool:
    """`accelerate launch` with a DeepSpeed config (or TrainingArguments' `deepspeed:`) sets this."""
    return _flag("ACCELERATE_USE_DEEPSPEED")


def launched_as_rank() -> bool:
    """This process is one rank of a multi-process launch (torchrun / accelerate launch)."""
    return _int_env("LOCAL_RANK", -1) != -1 and _int_env("WORLD_SIZE", 1) > 1


def _patch_accelerate_backend() -> bool:
    """Item 1: accelerate answers `("gloo", MULTI_CPU)` instead of "no distribution" for a CPU rank."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend
    if getattr(original, _PATCH_MARK, False):
        return False

    def _prepare_backend(self, cpu: bool = False, sagemaker_dp=False, backend: str | None = None):
        found, distributed_type = original(self, cpu, sagemaker_dp, backend)
        if (
            distributed_type == DistributedType.NO
            and backend in (None, "gloo")
            and launched_as_rank()
            and not _has_cuda()
        ):
            return "gloo", DistributedType.MULTI_CPU
        return found, distributed_type

    setattr(_prepare_backend, _PATCH_MARK, True)
    _prepare_backend.__wrapped__ = original
    _prepare_backend.__doc__ = original.__doc__
    PartialState._prepare_backend = _prepare_backend
    return True


def _deepspeed_cpu_setup() -> list[str]:
    """Item 2: DeepSpeed's CPU accelerator, no shm_comm compile, no `cpu` flag hiding DeepSpeed."""
    applied = []
    if "DS_ACCELERATOR" not in os.environ:
        os.environ["DS_ACCELERATOR"] = "cpu"
        applied.append("DS_ACCELERATOR=cpu")
    try:
        import deepspeed.ops
    except ImportError:  # accelerate raises its own clear error about the missing package later
        return applied
    compatible = deepspeed.ops.__compatible_ops__  # a module-level dict: the edit persists
    if compatible.get("deepspeed_shm_comm", False):
        compatible["deepspeed_shm_comm"] = False
        applied.append("deepspeed_shm_comm off")
    if _flag("ACCELERATE_USE_CPU"):
        os.environ.pop("ACCELERATE_USE_CPU")
        logger.warning(
            "ACCELERATE_USE_CPU is set together with a DeepSpeed config: removed it, because accelerate "
            "would otherwise run plain DDP instead of ZeRO (the CPU ranks get a gloo group anyway)"
        )
        applied.append("ACCELERATE_USE_CPU removed")
    return applied


_EXIT_HANDLER_REGISTERED = False


def _destroy_gloo_group_at_exit() -> None:
    try:
        import gc

        import torch.distributed as dist

        gc.collect()
        if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
            dist.destroy_process_group()
    except Exception as exc:  # exiting anyway: never turn a clean exit into a traceback
        logger.debug("destroy_process_group at exit failed: %s", exc)


def _register_exit_handler() -> bool:
    """Item 3: tear the gloo group down before interpreter finalization."""
    global _EXIT_HANDLER_REGISTERED
    if _EXIT_HANDLER_REGISTERED:
        return False
    import atexit

    atexit.register(_destroy_gloo_group_at_exit)
    _EXIT_HANDLER_REGISTERED = True
    return True


def apply_cpu_workarounds() -> list[str]:
    """Apply the CPU-only fixes described in the module docstring; a no-op with CUDA or one process.

    Call it before anything builds accelerate's state (TRL's config, `Accelerator`, `PartialState`).
    Returns the names of what it applied this call (empty when nothing was needed or all was done).
    """
    if _flag("ENTROPY_RL_NO_CPU_WORKAROUNDS"):
        return []
    if not launched_as_rank() and not deepspeed_requested():
        return []
    if _has_cuda():
        return []
    applied = []
    if deepspeed_requested():
        applied += _deepspeed_cpu_setup()
    if _patch_accelerate_backend():
        applied.append("accelerate backend gloo/MULTI_CPU for CPU ranks")
    if launched_as_rank() and _register_exit_handler():
        applied.append("gloo group destroyed at exit")
    if applied:
        logger.info("CPU distributed workarounds (rl/runtime/cpu_distributed.py): %s", ", ".join(applied))
    return applied


def exit_process(code: int) -> NoReturn:
    """Item 4: end the `rl` process with `code`; a CPU rank skips interpreter finalization."""
    if launched_as_rank() and not _flag("ENTROPY_RL_NO_CPU_WORKAROUNDS") and not _has_cuda():
        import atexit
        import sys
        import threading

        for thread in threading.enumerate():  # as interpreter exit does before the atexit handlers
            if thread is not threading.current_thread() and not thread.daemon and thread.is_alive():
                thread.join()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken pipe: nothing more to write anyway
                pass
        os._exit(code)
    raise SystemExit(code)
