"""Faults while checkpointing: kill -9 mid-save, a truncated newest checkpoint, a full disk.
The previous checkpoint always stays usable, `resume_from_checkpoint: auto` picks it, and the resumed
run ends exactly where an uninterrupted one does (nothing lost)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rl.runtime.checkpoint import (
    MARKER_NAME,
    CheckpointCallback,
    check_complete,
    list_checkpoints,
    resolve_resume,
    rotate_checkpoints,
    write_complete_marker,
)
from rl.runtime.disk_errors import CheckpointSaveError, is_disk_error
from tests.faults.helpers import ROOT, one_error_line, run_cli, state, write_recipe


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WANDB_"))}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _worker(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tests.faults.worker", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model_dir):
    """An uninterrupted 3-step run: what every interrupted-and-resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(tmp, tiny_model_dir, max_steps=3, save_strategy="no")
    rc, lines = run_cli(["train", "--config", str(recipe)])
    assert rc == 0, lines
    return tmp / "run"


KILL_POINTS = [("weights", 1), ("optimizer", None), ("marker", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("point,limit", KILL_POINTS, ids=[f"{p}-keep{k}" for p, k in KILL_POINTS])
def test_kill_9_during_save_loses_nothing(tmp_path, tiny_model_dir, reference_run, caplog, point, limit):
    recipe = write_recipe(tmp_path, tiny_model_dir, max_steps=3, save_total_limit=limit)
    proc = _worker("--kill-at", "2", "--point", point, "--", "train", "--config", str(recipe))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = tmp_path / "run"
    # the previous checkpoint survived the kill (with save_total_limit 1 too) and is complete
    assert check_complete(run / "checkpoint-1") is None
    assert check_complete(run / "checkpoint-2") is not None  # the half-written one is not trusted
    assert resolve_resume("auto", run) == str(run / "checkpoint-1")
    assert any("skipping incomplete checkpoint" in r.getMessage() and "checkpoint-2" in r.getMessage()
               for r in caplog.records)
    # resume: auto picks checkpoint-1, redoes step 2, finishes step 3 exactly like the uninterrupted run
    rc, lines = run_cli(["train", "--config", str(recipe), "--resume_from_checkpoint", "auto"])
    assert rc == 0, lines
    assert [e["step"] for e in state(run, 3)["log_history"] if "loss" in e] == [1, 2, 3]
    assert _same_weights(run, reference_run), "resumed run differs from the uninterrupted one"
    kept = [c.name for c in list_checkpoints(run)]
    assert kept == (["checkpoint-3"] if limit == 1 else ["checkpoint-1", "checkpoint-2", "checkpoint-3"])
    assert all(check_complete(run / k) is None for k in kept)


@pytest.mark.slow
def test_truncated_newest_checkpoint_is_skipped_with_a_warning(tmp_path, tiny_model_dir, reference_run, caplog):
    recipe = write_recipe(tmp_path, tiny_model_dir, max_steps=2)
    assert run_cli(["train", "--config", str(recipe)])[0] == 0
    run = tmp_path / "run"
    for name, keep in (("model.safetensors", 1000), ("optimizer.pt", 100), ("rng_state.pth", 10)):
        ckpt2 = run / "checkpoint-2"
        backup = ckpt2.with_name("backup")
        shutil.copytree(ckpt2, backup)
        with open(ckpt2 / name, "r+b") as f:  # truncated after it was marked complete (bad disk, bad copy)
            f.truncate(keep)
        caplog.clear()
        assert resolve_resume("auto", run) == str(run / "checkpoint-1")
        assert any("skipping incomplete checkpoint" in r.getMessage() and name in r.getMessage()
                   for r in caplog.records), name
        shutil.rmtree(ckpt2)
        backup.rename(ckpt2)
    with open(run / "checkpoint-2" / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    rc, lines = run_cli(["train", "--config", str(recipe), "--max_steps", "3", "--resume_from_checkpoint", "auto"])
    assert rc == 0, lines
    assert _same_weights(run, reference_run)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.slow
def test_disk_full_on_a_real_small_filesystem(tmp_path, tiny_model_dir, reference_run):
    """A 60 MiB tmpfs: checkpoint-1 (~39 MiB) fits, checkpoint-2 does not (ENOSPC)."""
    mnt = tmp_path / "small-disk"
    if not _mount_tmpfs(mnt, "60m"):
        pytest.skip("cannot mount a tmpfs here (needs root); test_disk_full_file_size_limit covers this")
    try:
        recipe = write_recipe(tmp_path, tiny_model_dir, max_steps=3, output_dir=str(mnt / "run"))
        rc, lines = run_cli(["train", "--config", str(recipe)])
        line = one_error_line(rc, lines)
        assert "checkpoint-2: could not be written, the disk is full" in line and "MiB free of 60 MiB" in line, line
        assert f"newest complete checkpoint: {mnt / 'run' / 'checkpoint-1'}" in line, line
        assert check_complete(mnt / "run" / "checkpoint-1") is None
        assert resolve_resume("auto", mnt / "run") == str(mnt / "run" / "checkpoint-1")
        # "free space": move the run to a disk with room and resume; nothing is lost
        shutil.copytree(mnt / "run", tmp_path / "run")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)
    rc, lines = run_cli(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "run"),
                         "--resume_from_checkpoint", "auto"])
    assert rc == 0, lines
    assert _same_weights(tmp_path / "run", reference_run)


@pytest.mark.slow
def test_disk_full_file_size_limit(tmp_path, tiny_model_dir):
    """RLIMIT_FSIZE (works without root): writes past 64 KiB fail with EFBIG after checkpoint-1."""
    recipe = write_recipe(tmp_path, tiny_model_dir, max_steps=3)
    proc = _worker("--fsize-after", "1", "--", "train", "--config", str(recipe))
    errors = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    line = one_error_line(proc.returncode, errors)
    assert "checkpoint-2: could not be written, the disk is full" in line and "File too large" in line, line
    run = tmp_path / "run"
    assert check_complete(run / "checkpoint-1") is None
    assert resolve_resume("auto", run) == str(run / "checkpoint-1")


# ------------------------------------------------------------------------------------------ units (fast)


def _fake_checkpoint(out: Path, step: int, marker: bool = True) -> Path:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": torch.zeros(4)}, str(ckpt / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"x": torch.zeros(2)}, ckpt / name)
    if marker:
        write_complete_marker(ckpt)
    return ckpt


class _Args:
    def __init__(self, out):
        self.output_dir, self.world_size, self.save_only_model = str(out), 1, False


class _State:
    def __init__(self, step):
        self.global_step, self.is_world_process_zero, self.best_model_checkpoint = step, True, None


def test_disk_full_while_writing_the_marker_is_one_line(tmp_path, monkeypatch):
    import rl.runtime.checkpoint as ck

    _fake_checkpoint(tmp_path, 1)
    _fake_checkpoint(tmp_path, 2, marker=False)
    real = ck.atomic_write_text

    def full(path, text):  # the temp file is created, then the disk is full
        Path(path).with_name(f".{Path(path).name}.tmp.{os.getpid()}").write_text("partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            Path(path).with_name(f".{Path(path).name}.tmp.{os.getpid()}").unlink()

    monkeypatch.setattr(ck, "atomic_write_text", full)
    with pytest.raises(CheckpointSaveError) as info:
        CheckpointCallback(keep=1).on_save(_Args(tmp_path), _State(2), None)
    msg = str(info.value)
    assert "checkpoint-2: could not be written" in msg and "No space left" in msg
    assert f"newest complete checkpoint: {tmp_path / 'checkpoint-1'}" in msg
    assert not (tmp_path / "checkpoint-2" / MARKER_NAME).exists()
    assert check_complete(tmp_path / "checkpoint-1") is None  # rotation did not run: checkpoint-1 kept
    monkeypatch.setattr(ck, "atomic_write_text", real)


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    import rl.runtime.atomic_io as atomic_io

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_io.atomic_write_text(tmp_path / "f.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_rotation_only_after_a_newer_complete_checkpoint(tmp_path):
    for step, marked in ((1, True), (2, False), (3, True), (4, True), (5, False)):
        _fake_checkpoint(tmp_path, step, marker=marked)
    assert rotate_checkpoints(tmp_path, None) == []
    deleted = rotate_checkpoints(tmp_path, 2, protect=[str(tmp_path / "checkpoint-1")])
    assert sorted(p.name for p in deleted) == ["checkpoint-2"]  # older incomplete leftover
    deleted = rotate_checkpoints(tmp_path, 1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-5"]  # newer partial kept
    assert sorted(p.name for p in deleted) == ["checkpoint-1", "checkpoint-3"]
    shutil.rmtree(tmp_path / "checkpoint-4")
    assert rotate_checkpoints(tmp_path, 1) == []  # no complete checkpoint: never delete anything


@pytest.mark.parametrize("exc,expected", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EFBIG, "File too large"), True),
    (RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                  "data/0: file write failed"), True),
    (Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
               'device" })'), True),
    (OSError(errno.ENOENT, "No such file"), False),
    (ValueError("bug"), False),
])
def test_disk_error_classification(exc, expected):
    assert is_disk_error(exc) is expected
