"""Atomic checkpoints, newest-complete lookup and exact GRPO resume for the HF/TRL trainer.

Why: on a Slurm cluster a job can be killed at any moment (time limit, preemption, node failure).
A checkpoint directory that was half-written when that happened must never be resumed from.

Checkpoints. The HF Trainer names and writes `output_dir/checkpoint-<step>/` itself, so we cannot
write to a temp name and rename. Instead `CheckpointCallback.on_save` (run after the trainer has
written model, optimizer, scheduler, RNG and trainer_state.json) waits for every rank, validates the
directory on the main process (expected files present, trainer_state.json parses, safetensors
headers and torch zip archives not truncated) and then atomically writes a `COMPLETE` marker holding
a manifest (every file with its size): tmp file + fsync + os.replace + fsync of the directory.
`find_resume_checkpoint` returns the newest directory whose marker exists and whose files still
match the manifest; newer incomplete ones are skipped with a warning. The HF trainer would rotate
old checkpoints (`save_total_limit`) right after writing the new one, before `on_save` marks it: with
`save_total_limit: 1` a kill in that window left no usable checkpoint. `rl train` therefore hands
the limit to `CheckpointCallback(keep=N)` (HF's own is set to None), which deletes old checkpoints
only after the new marker exists, never the newest complete one (`rotate_checkpoints`). A disk
error while writing the marker raises `rl.runtime.disk_errors.CheckpointSaveError` (one line, exit 2).

Preemption (signal -> save at step end -> stop -> requeue) lives in rl/runtime/preemption.py.

GRPO determinism. HF restores RNG states and skips consumed batches on resume, but TRL's GRPO keeps
generated completions in `_buffered_inputs` (reused for `steps_per_generation * num_iterations`
micro-steps) and restarts its micro-step counter at 0 on resume. Resuming is exact only from a step
that ends a generation cycle: use `PreemptionCallback(check_every=generation_cycle_steps(args))`
and make `save_steps` a multiple of it. Leave `restore_callback_states_from_checkpoint` False.
TRL's `RepeatSampler` shuffles each epoch with its own generator, which no checkpoint holds:
`CheckpointCallback.on_epoch_begin` replays it to the epoch (`replay_sampler_epochs`), so a run
resumed in epoch >= 1 sees the same prompts in the same order as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import time
import zipfile
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.disk_errors import checkpoint_save_error, is_disk_error
from rl.errors import UserError
from rl.runtime.ranks import barrier

logger = logging.getLogger(__name__)

MARKER_NAME = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


class CheckpointIncomplete(Exception):
    """A checkpoint directory failed validation; the message lists what is wrong."""


# ---------------------------------------------------------------- file-level checks


def check_safetensors(path: Path) -> str | None:
    """Problem with a .safetensors file (header unreadable, data shorter than the header says), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name}: truncated (no header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name}: truncated header ({n} bytes announced, file is {size})"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"{path.name}: unreadable safetensors header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"{path.name}: truncated data ({8 + n + end} bytes needed, file is {size})"
    return None


def check_torch_zip(path: Path) -> str | None:
    """Problem with a torch.save zip archive (missing end record = truncated), or None; non-zip files pass."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return None  # legacy (non-zip) torch.save format: size check via the manifest only
        if not zipfile.is_zipfile(path):
            return f"{path.name}: truncated zip archive"
    except OSError as e:
        return f"{path.name}: unreadable ({e})"
    return None


def _check_file(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        return check_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return check_torch_zip(path)
    return None


def _read_trainer_state(ckpt: Path) -> tuple[dict | None, str | None]:
    try:
        return json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{TRAINER_STATE} missing"
    except (OSError, ValueError) as e:
        return None, f"{TRAINER_STATE} unreadable ({e})"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step N of a `checkpoint-N` directory name, else None."""
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def validate_checkpoint(ckpt_dir: str | os.PathLike, *, world_size: int = 1, require_optimizer: bool = True,
                        require_rng: bool = True) -> list[str]:
    """Check a freshly saved HF checkpoint directory; returns the problems found (empty list = complete).

    Accepts the layouts HF writes: full model or PEFT adapter weights (safetensors or bin, sharded or
    not), optimizer.pt (+ scheduler.pt) or a DeepSpeed tag directory (`latest`) or FSDP `optimizer_*`.
    """
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        return [f"{ckpt} is not a directory"]
    problems: list[str] = []
    state, err = _read_trainer_state(ckpt)
    if err:
        problems.append(err)
    step = checkpoint_step(ckpt)
    if state is not None and step is not None and state.get("global_step") != step:
        problems.append(f"{TRAINER_STATE}: global_step {state.get('global_step')} != directory step {step}")

    deepspeed_tag = None
    if (ckpt / "latest").is_file():
        deepspeed_tag = ckpt / (ckpt / "latest").read_text().strip()
        if not deepspeed_tag.is_dir():
            problems.append(f"latest names {deepspeed_tag.name}, which does not exist")
    has_weights = any((ckpt / w).is_file() for w in WEIGHT_FILES) or deepspeed_tag is not None or any(
        ckpt.glob("pytorch_model_fsdp_*"))
    if not has_weights:
        problems.append("no model weights (model.safetensors, adapter_model.safetensors, DeepSpeed or FSDP state)")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (ckpt / index_name).is_file():
            try:
                shards = set(json.loads((ckpt / index_name).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError) as e:
                problems.append(f"{index_name} unreadable ({e})")
                continue
            problems += [f"{index_name}: shard {s} missing" for s in sorted(shards) if not (ckpt / s).is_file()]

    if require_optimizer:
        has_optimizer = ((ckpt / "optimizer.pt").is_file() or (ckpt / "optimizer.bin").is_file()
                         or deepspeed_tag is not None or any(ckpt.glob("optimizer_*")))
        if not has_optimizer:
            problems.append("no optimizer state (optimizer.pt, DeepSpeed or FSDP)")
        if (ckpt / "optimizer.pt").is_file() and not (ckpt / "scheduler.pt").is_file():
            problems.append("scheduler.pt missing")
    if require_rng:
        names = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{i}.pth" for i in range(world_size)]
        problems += [f"{n} missing" for n in names if not (ckpt / n).is_file()]

    for f in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        problem = _check_file(f)
        if problem:
            problems.append(problem)
    return problems


def write_complete_marker(ckpt_dir: str | os.PathLike, **validate_kwargs: Any) -> Path:
    """Validate `ckpt_dir`, then atomically write its COMPLETE marker (a manifest of files and sizes).

    Raises CheckpointIncomplete (and writes nothing) if validation finds problems.
    """
    ckpt = Path(ckpt_dir)
    problems = validate_checkpoint(ckpt, **validate_kwargs)
    if problems:
        raise CheckpointIncomplete(f"{ckpt}: " + "; ".join(problems))
    for f in ckpt.rglob("*"):  # the files themselves must be on disk before the marker says so
        if f.is_file() and f.name != MARKER_NAME:
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    files = {str(p.relative_to(ckpt)): p.stat().st_size for p in sorted(ckpt.rglob("*"))
             if p.is_file() and p.name != MARKER_NAME and not p.name.startswith(f".{MARKER_NAME}.tmp")}
    manifest = {"step": checkpoint_step(ckpt), "time": time.time(), "files": files}
    marker = ckpt / MARKER_NAME
    atomic_write_text(marker, json.dumps(manifest, indent=1, sort_keys=True))
    return marker


def check_complete(ckpt_dir: str | os.PathLike) -> str | None:
    """Why `ckpt_dir` cannot be resumed from (no marker, file missing/changed/truncated), or None if it can."""
    ckpt = Path(ckpt_dir)
    marker = ckpt / MARKER_NAME
    if not marker.is_file():
        return f"no {MARKER_NAME} marker (save was interrupted or not made by entropy-rl)"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MARKER_NAME} marker unreadable ({e})"
    for rel, size in files.items():
        p = ckpt / rel
        if not p.is_file():
            return f"{rel} missing"
        if p.stat().st_size != size:
            return f"{rel} has {p.stat().st_size} bytes, manifest says {size}"
    _, err = _read_trainer_state(ckpt)
    if err:
        return err
    for rel in files:
        if rel.endswith(".safetensors"):
            err = check_safetensors(ckpt / rel)
            if err:
                return err
    return None


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int | None,
                       protect: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Delete old checkpoints once a newer complete one exists; returns what was deleted.

    Keeps the newest `keep` complete checkpoints (and any in `protect`, e.g. the best model).
    Incomplete checkpoints older than the newest complete one are leftovers of interrupted saves
    and are deleted too; newer incomplete ones are left alone (the trainer may overwrite them).
    Nothing is deleted when `keep` is None or < 1, or when there is no complete checkpoint.
    """
    import shutil

    if not keep or keep < 1:
        return []
    ckpts = list_checkpoints(output_dir)
    complete = [c for c in ckpts if check_complete(c) is None]
    if not complete:
        return []
    newest = checkpoint_step(complete[-1])
    kept = set(complete[-keep:]) | {Path(p).resolve() for p in protect if p}
    deleted = []
    for ckpt in ckpts:
        if ckpt in kept or ckpt.resolve() in kept or checkpoint_step(ckpt) >= newest:
            continue
        shutil.rmtree(ckpt, ignore_errors=True)
        deleted.append(ckpt)
    if deleted:
        logger.info("deleted old checkpoints (keep %d): %s", keep, ", ".join(p.name for p in deleted))
    return deleted


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-N` directories in `output_dir`, oldest step first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in out.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """Newest complete checkpoint in `output_dir` (skipping, with a warning, newer incomplete ones), or None."""
    for ckpt in reversed(list_checkpoints(output_dir)):
        reason = check_complete(ckpt)
        if reason is None:
            return str(ckpt)
        logger.warning("skipping incomplete checkpoint %s: %s", ckpt, reason)
    return None


_FALSE = {"false", "no", "none", "off", "0", ""}
_TRUE = {"true", "yes", "on", "1", "last"}


def resolve_resume(value: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """Turn a `resume_from_checkpoint` setting into what `trainer.train(resume_from_checkpoint=...)` takes.

    None/False/"false" -> None (fresh start). "auto" -> newest complete checkpoint or None (fresh).
    True/"true" -> newest complete checkpoint; UserError if there is none (HF raises too).
    A path -> that path if it is a complete checkpoint (with no marker: if its files validate,
    with a warning); UserError otherwise.
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _FALSE):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        found = find_resume_checkpoint(output_dir)
        logger.info("resume auto: %s", found or f"no complete checkpoint in {output_dir}, starting fresh")
        return found
    if value is True or (isinstance(value, str) and value.strip().lower() in _TRUE):
        found = find_resume_checkpoint(output_dir)
        if found is None:
            raise UserError(f"resume_from_checkpoint: no complete checkpoint-N directory in {output_dir}; "
                            "use 'auto' to start fresh when there is none")
        return found
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise UserError(f"resume_from_checkpoint: {path} is not a directory; pass a checkpoint-N directory or 'auto'")
    reason = check_complete(path)
    if reason is None:
        return str(path)
    if not (path / MARKER_NAME).exists():
        problems = validate_checkpoint(path, require_rng=False)
        if not problems:
            logger.warning("resuming from %s, which has no %s marker; its files validate", path, MARKER_NAME)
            return str(path)
        reason = "; ".join(problems)
    raise UserError(f"resume_from_checkpoint: {path} is incomplete ({reason}); "
                    "pass 'auto' to use the newest complete checkpoint")


# ---------------------------------------------------------------- distributed helpers


def generation_cycle_steps(args: Any) -> int:
    """Optimizer steps per GRPO generation cycle: stop/save only at multiples of this for exact resumes.

    TRL regenerates every `steps_per_generation * num_iterations` micro-steps; an optimizer step is
    `gradient_accumulation_steps` micro-steps. Plain (non-GRPO) args give 1.
    """
    spg = getattr(args, "steps_per_generation", None) or 0
    if not spg:
        return 1
    micro = spg * (getattr(args, "num_iterations", 1) or 1)
    ga = getattr(args, "gradient_accumulation_steps", 1) or 1
    return math.lcm(micro, ga) // ga


# ---------------------------------------------------------------- data order across epochs


def find_repeat_sampler(dataloader: Any):
    """TRL's `RepeatSampler` inside a (possibly accelerate-wrapped or batch-skipping) dataloader, or None."""
    try:
        from trl.trainer.utils import RepeatSampler
    except ImportError:  # pragma: no cover - trl is a hard dependency
        return None
    seen, todo = set(), [dataloader]
    while todo:
        obj = todo.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, RepeatSampler):
            return obj
        for attr in ("base_dataloader", "dataloader", "batch_sampler", "sampler"):
            try:
                todo.append(getattr(obj, attr, None))
            except Exception:  # a property that cannot answer: not part of the chain
                continue
    return None


def replay_sampler_epochs(dataloader: Any, epoch: int) -> bool:
    """Put the shuffle generator of TRL's RepeatSampler where an uninterrupted run has it at `epoch`'s start.

    Why: RepeatSampler draws one `torch.randperm` per epoch from its own generator and has no
    `set_epoch`; the HF Trainer saves neither that generator nor anything that would reseed it. A
    resumed run builds a fresh sampler, so after a resume in epoch E >= 1 every later epoch repeated
    the order of an earlier one (measured: a 2-rank run resumed in epoch 1 diverged at step 8).
    Reseeding with the generator's own initial seed and drawing `epoch` permutations gives exactly
    the state of an uninterrupted run (which it leaves unchanged: nothing else draws from it).
    Returns False when there is no shuffling RepeatSampler (plain Trainer, `shuffle_dataset: false`).
    """
    sampler = find_repeat_sampler(dataloader)
    generator = getattr(sampler, "generator", None)
    if sampler is None or not getattr(sampler, "shuffle", False) or generator is None:
        return False
    import torch

    generator.manual_seed(generator.initial_seed())
    for _ in range(int(epoch)):
        torch.randperm(sampler.num_samples, generator=generator)
    return True


# ---------------------------------------------------------------- callbacks


class CheckpointCallback(TrainerCallback):
    """After each save: wait for all ranks, validate the new checkpoint, write its COMPLETE marker (rank 0).

    At each epoch's start it also puts TRL's data-order generator where an uninterrupted run has it
    (`replay_sampler_epochs`): training state that the HF checkpoint does not carry.
    `keep`: after marking, delete older checkpoints beyond the newest `keep` complete ones
    (`rotate_checkpoints`; use it instead of HF's `save_total_limit`, which rotates before the marker).
    """

    def __init__(self, keep: int | None = None):
        self.keep = keep

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # state.epoch is the whole number E at the start of epoch E, and E + fraction when a run
        # resumes mid-epoch E from a checkpoint; every rank does the same (no collective needed).
        replay_sampler_epochs(train_dataloader, math.floor(state.epoch or 0))
        return control

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank's shards / rng_state_<rank>.pth are on disk
        if not state.is_world_process_zero:
            return control
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        try:
            write_complete_marker(ckpt, world_size=args.world_size,
                                  require_optimizer=not args.save_only_model, require_rng=not args.save_only_model)
        except CheckpointIncomplete as e:
            logger.error("checkpoint not marked complete, it will not be resumed from: %s", e)
            return control
        except OSError as e:
            if is_disk_error(e, ckpt):
                raise checkpoint_save_error(ckpt, e, find_resume_checkpoint(args.output_dir)) from e
            raise
        rotate_checkpoints(args.output_dir, self.keep, protect=[state.best_model_checkpoint or ""])
        return control

