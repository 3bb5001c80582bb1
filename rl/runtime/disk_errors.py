"""Disk errors while writing checkpoints: recognised whatever library raised them, reported in one line.

A leaf module (no rl imports but rl.errors): both the checkpoint marker writer (rl/runtime/checkpoint.py)
and the guard around the trainer's own save (rl/runtime/faults.py) turn such errors into one
`CheckpointSaveError` line naming the directory, the free space and the newest complete checkpoint.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from rl.errors import UserError, first_line

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_DISK_WORDS = ("no space left", "storagefull", "file too large", "disk quota", "read-only file system",
               "file write failed", "filetoolarge", "quotaexceeded", "input/output error",
               # torch.save's zip writer reports a failed write only as a stream error:
               "pytorchstreamwriter", "iostream error", "unexpected pos")


class CheckpointSaveError(UserError):
    """A checkpoint could not be written (disk full, quota, read-only, I/O error)."""


def is_disk_error(exc: BaseException, path: str | os.PathLike | None = None) -> bool:
    """True for an exception (or one it wraps) that means the disk could not take the write.

    With `path`: also True for any OSError/RuntimeError while that filesystem has under 1 MiB free
    (libraries word a failed write in many ways; a full disk is the usual cause).
    """
    if path is not None and isinstance(exc, (OSError, RuntimeError)):
        for p in [Path(path), *Path(path).parents]:
            if p.exists():
                try:
                    if shutil.disk_usage(p).free < 2**20:
                        return True
                except OSError:
                    pass
                break
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return True
        text = str(exc).lower().replace(" ", "")
        if any(w.replace(" ", "") in text for w in _DISK_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_space(path: Path) -> str:
    """`X MiB free of Y MiB` on the filesystem holding `path` (or its nearest existing parent)."""
    for p in [path, *path.parents]:
        if p.exists():
            try:
                usage = shutil.disk_usage(p)
            except OSError:
                return "unknown"
            return f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.0f} MiB"
    return "unknown"


def checkpoint_save_error(target: str | os.PathLike, exc: BaseException, newest_complete: str | None
                          ) -> CheckpointSaveError:
    """The one-line error for a checkpoint `target` that could not be written; `newest_complete` is
    the checkpoint a resume would use (`rl.runtime.checkpoint.find_resume_checkpoint`)."""
    target = Path(target)
    return CheckpointSaveError(
        f"{target}: could not be written, the disk is full or refuses writes ({free_space(target)}; "
        f"{first_line(exc)[:160]}); it has no COMPLETE marker and will not be resumed from; newest complete "
        f"checkpoint: {newest_complete or 'none'}; free space (or lower save_total_limit, or put output_dir on a "
        "larger disk), then rerun with --resume_from_checkpoint auto"
    )
