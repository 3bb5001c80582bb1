"""Atomic small-file writes: readers see the old file or the whole new one, never a torn one.

Used for checkpoint COMPLETE markers, the preemption marker, `rl eval` results and kept sbatch
scripts (a leaf module: no rl imports).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (silently skipped where refused)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and platforms) refuse fsync on directories
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False,
                      make_parents: bool = False) -> Path:
    """Write `text` so readers see the old file, or the whole new one: tmp, fsync, replace, fsync dir.

    `exclusive`: never replace an existing file (raises FileExistsError; the link is atomic).
    `make_parents`: create missing parent directories first."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if `path` exists, atomically
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # e.g. disk full: leave no half-written temp file behind
    fsync_dir(path.parent)
    return path
