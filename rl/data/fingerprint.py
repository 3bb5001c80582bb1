"""What RPT rows were built from, for the reuse check of `<output_dir>/rpt-data` and `rl train --dry-run`.

The fingerprint is per file: relative path, size in bytes and modification time in nanoseconds
(`st_mtime_ns`), not a content digest: deciding whether to reuse data must not cost a read of a
multi-gigabyte corpus, and any rewrite of a file (even with the same size) changes its mtime. A
touched but unchanged file therefore causes a rebuild, never a stale reuse. `builtin:` corpora are
fingerprinted by the version of the package that ships them; a hub model id by its name.
"""

from __future__ import annotations

import os
from pathlib import Path


def _files(root: Path) -> list[dict]:
    """size + mtime_ns of `root` (a file) or of every non-hidden file under it (a directory), sorted."""
    if root.is_file():
        st = root.stat()
        return [{"path": root.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue
            out.append({"path": p.relative_to(root).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def corpus_fingerprint(spec: str) -> dict:
    """Fingerprint of a corpus spec (see module doc): {"files": [...]} or {"builtin": ..., "package": ...}."""
    text = str(spec).strip()
    if text.lower().startswith("builtin:"):
        name = text.split(":", 1)[1].strip().lower()
        package = {"champ": "champ-dataset"}.get(name, name)
        return {"builtin": name, "package": f"{package}=={_package_version(package)}"}
    path = Path(text).expanduser()
    if not path.exists():
        return {"missing": text}
    return {"files": _files(path)}


def model_fingerprint(name_or_path: str) -> dict:
    """Fingerprint of a model argument: the files of a local directory, else the name (builtin or hub id)."""
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if not text.lower().startswith("builtin:") and path.is_dir():
        return {"files": [f for f in _files(path) if "/" not in f["path"]]}  # top level: config, weights, tokenizer
    return {"name": text}


def describe_change(saved: dict | None, current: dict) -> str:
    """One phrase naming what changed between two input fingerprints (for logs and the dry-run)."""
    if not saved:
        return "no record of the corpus files it was built from"
    before = {f["path"]: f for f in saved.get("files", [])}
    after = {f["path"]: f for f in current.get("files", [])}
    if "files" not in saved or "files" not in current:
        return f"the corpus changed ({saved} -> {current})"
    added = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    parts = []
    for what, names in (("changed", changed), ("added", added), ("removed", gone)):
        if names:
            parts.append(f"{what}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
    return "corpus files " + "; ".join(parts) if parts else "the corpus is unchanged"
