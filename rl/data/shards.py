"""Sharded, streamed, resumable RPT builds: blocks of documents, shard directories, the merge.

The corpus is cut into blocks of `block_documents` consecutive documents (in the reader's order,
so the cut is the same in every run and every process). Block b belongs to shard b mod N. A block is
the unit of everything: the proxy batches its windows sorted by length, its rows are written as one
Arrow file, and progress is recorded after it. Because a block is processed the same way whichever
process owns it, N shards merged give exactly the rows, order and files of one process (N = 1 is the
one-process build: one shard, then the same merge).

Layout, beside the output OUT:

    OUT.shards/shard-00001-of-00003/   rl-output.json (command `rl data rpt (shard)`, every file listed
                                       before it is written) · progress.json · block-000000001.arrow ...

`progress.json` (atomic, rl/runtime/atomic_io.py) holds the build fingerprint, the next block to do and
the summary so far; a killed shard restarts at its next block. The merge (automatic when the last
shard finishes, or `rl data merge`) checks that every shard is there, finished, built with the same
settings from unchanged inputs, concatenates the block files in block order (memory-mapped) into OUT
(`replace_dir`: atomic) and removes the shard directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rl.data.summary import BuildSummary
from rl.errors import UserError
from rl.runtime.atomic_io import atomic_write_text, fsync_dir
from rl.data.fingerprint import corpus_fingerprint, describe_change, model_fingerprint
from rl.runtime.outputs import MARKER, _pid_alive, check_output_dir, read_marker, replace_dir

PROGRESS = "progress.json"
LOCK = "merge.lock"
_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


class ShardsNotReady(UserError):
    """A shard of the build is missing or unfinished (the others wait for it; `rl data merge` reports it)."""


@dataclass(frozen=True)
class ShardPlan:
    """Which blocks this process builds: block b when b mod num_shards == shard_index."""

    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self):
        if int(self.num_shards) < 1:
            raise UserError(f"--num-shards: must be at least 1, got {self.num_shards}")
        if not 0 <= int(self.shard_index) < int(self.num_shards):
            raise UserError(f"--shard-index {self.shard_index}: out of range for --num-shards {self.num_shards} "
                            f"(0 to {self.num_shards - 1})")

    def owns(self, block: int) -> bool:
        return block % self.num_shards == self.shard_index

    @property
    def name(self) -> str:
        return f"shard-{self.shard_index:05d}-of-{self.num_shards:05d}"


def shards_root(output_dir: str | os.PathLike) -> Path:
    out = Path(output_dir)
    return out.with_name(out.name + ".shards")


def shard_command(command: str) -> str:
    return f"{command} (shard)"


def blocks(documents: Iterable, size: int, limit: int | None = None) -> Iterator[list]:
    """Consecutive lists of `size` documents (the last may be shorter), at most `limit` documents in all."""
    it = iter(documents) if limit is None else itertools.islice(documents, limit)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def block_file(block: int) -> str:
    return f"block-{block:09d}.arrow"


def block_files(shard_dir: Path, below: int | None = None) -> list[Path]:
    """The block files of a shard directory in block order (only blocks < `below` when given: a file of a
    later block may be one a killed run wrote before recording it, rewritten when that block is built)."""
    found = sorted((int(m.group(1)), p) for p in shard_dir.glob("block-*.arrow")
                   if (m := re.match(r"^block-(\d{9})\.arrow$", p.name)))
    return [p for b, p in found if below is None or b < below]


def read_progress(shard_dir: Path) -> dict | None:
    try:
        data = json.loads((shard_dir / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def changed_settings(saved: dict, current: dict) -> str:
    """What differs between two build fingerprints, in a few words (settings first, then inputs)."""
    keys = sorted(k for k in set(saved) | set(current) if k != "inputs" and saved.get(k) != current.get(k))
    if keys:
        return f"other settings: {', '.join(keys)}"
    then, now = saved.get("inputs") or {}, current.get("inputs") or {}
    if then.get("corpus") != now.get("corpus"):
        return describe_change(then.get("corpus"), now.get("corpus") or {})
    return "other proxy model files"


def _clean_own_temps(shard_dir: Path) -> None:
    """Temp files of a killed write in a shard directory of ours (`.NAME.tmp.PID`, its process gone)."""
    if not shard_dir.is_dir():
        return
    for f in shard_dir.iterdir():
        m = re.match(r"^\.(.+)\.tmp\.(\d+)$", f.name)
        if m and f.is_file() and not _pid_alive(int(m.group(2))):
            f.unlink(missing_ok=True)


def _write_marker(shard_dir: Path, command: str, files: list[str]) -> None:
    atomic_write_text(shard_dir / MARKER, json.dumps(
        {"command": shard_command(command), "files": sorted(set(files) | {PROGRESS}),
         "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))


def open_shard(output_dir: Path, plan: ShardPlan, fingerprint: dict, command: str, *, flag: str,
               inputs: dict, overwrite: bool = False) -> tuple[Path, dict]:
    """The shard's directory and progress (the one a killed run left, or a fresh one, `"new": True`, that
    `create_shard` writes once the work starts). A directory started with other settings or from other
    input files is refused (or, with `overwrite`, started again); anything there not written by a shard
    of `command` is refused by rl/runtime/outputs.py. Nothing is written here."""
    shard_dir = shards_root(output_dir) / plan.name
    marker = read_marker(shard_dir)
    if marker and marker.get("command") == shard_command(command):
        _clean_own_temps(shard_dir)
    check_output_dir(shard_dir, flag, shard_command(command), inputs=inputs, containers={"corpus": inputs.get("corpus")})
    progress = read_progress(shard_dir)
    if progress is not None and progress.get("config") != fingerprint:
        if not overwrite:
            raise UserError(f"{shard_dir} was started from other settings or files "
                            f"({changed_settings(progress.get('config') or {}, fingerprint)}); run it as it was "
                            "started, or pass --overwrite to build it again")
        progress = None
    if progress is None:
        progress = {"shard": plan.shard_index, "num_shards": plan.num_shards, "config": fingerprint,
                    "next_block": 0, "done": False, "blocks_built": 0, "summary": BuildSummary().record(), "new": True}
    return shard_dir, progress


def create_shard(shard_dir: Path, progress: dict, command: str) -> None:
    """Write a new shard's directory (replacing one of ours that `open_shard` let go with --overwrite)."""
    import shutil

    if not progress.pop("new", False):
        return
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True)
    _write_marker(shard_dir, command, [])
    atomic_write_text(shard_dir / PROGRESS, json.dumps(progress, indent=1))


def check_siblings(output_dir: Path, plan: ShardPlan, fingerprint: dict) -> None:
    """Before a shard starts: the other shards of the same build already there were started with the same
    settings from the same input files (else it could never merge with them): one line naming the first
    that was not."""
    root = shards_root(output_dir)
    for i in range(plan.num_shards):
        other = ShardPlan(plan.num_shards, i)
        progress = read_progress(root / other.name) if i != plan.shard_index else None
        if progress is not None and progress.get("config") != fingerprint:
            raise UserError(f"{root / other.name} does not match this shard "
                            f"({changed_settings(progress.get('config') or {}, fingerprint)}); build every shard with "
                            "the same settings from the same files (remove the shards of the other build first)")


def _write_block(path: Path, rows: list[dict], features) -> None:
    """One block's rows as an Arrow stream file (the format datasets memory-maps), written atomically."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def run_shard(shard_dir: Path, progress: dict, plan: ShardPlan, documents: Iterable, block_documents: int,
              limit: int | None, process_block: Callable[[list], tuple[list[dict], BuildSummary]], features,
              command: str, describe_corpus: Callable[[], str] = str) -> BuildSummary:
    """Build this shard's blocks not done yet; returns the shard's summary (earlier runs' blocks included).
    Documents of other shards' blocks and of blocks done before are read but not tokenized, so every
    shard reads the whole corpus and `describe_corpus()` (its reader's counts) is the same in each."""
    summary = BuildSummary()
    summary.add(progress["summary"])
    written = [p.name for p in block_files(shard_dir, below=progress["next_block"])]
    for b, docs in enumerate(blocks(documents, block_documents, limit)):
        if not plan.owns(b) or b < progress["next_block"]:
            continue
        rows, block_summary = process_block(docs)
        if rows:  # listed in the marker before it exists: a kill never leaves a file the marker does not name
            written.append(block_file(b))
            _write_marker(shard_dir, command, written)
            _write_block(shard_dir / block_file(b), rows, features)
        summary.add(block_summary)
        progress.update(next_block=b + 1, blocks_built=progress["blocks_built"] + 1, summary=summary.record())
        atomic_write_text(shard_dir / PROGRESS, json.dumps(progress, indent=1))
    summary.corpus_summary = describe_corpus()
    progress.update(done=True, summary=summary.record())
    atomic_write_text(shard_dir / PROGRESS, json.dumps(progress, indent=1))
    return summary


def shard_counts(root: Path) -> list[int]:
    """The shard counts N of the shard directories under `root` (normally one)."""
    if not root.is_dir():
        return []
    return sorted({int(m.group(2)) for p in root.iterdir() if (m := _SHARD_RE.match(p.name))})


def check_shards(output_dir: Path, num_shards: int, expected: dict | None = None) -> list[tuple[Path, dict]]:
    """Every shard of `num_shards` present, finished, with one fingerprint (`expected` when given) whose
    input files are unchanged; else one line naming the shard and what is wrong."""
    root = shards_root(output_dir)
    found = []
    for i in range(num_shards):
        plan = ShardPlan(num_shards, i)
        progress = read_progress(root / plan.name)
        again = f"run `rl data rpt ... --num-shards {num_shards} --shard-index {i}`"
        if progress is None:
            raise ShardsNotReady(f"{root}: shard {i} of {num_shards} is missing ({plan.name}); {again}, then merge")
        if not progress.get("done"):
            raise ShardsNotReady(f"{root / plan.name}: shard {i} of {num_shards} is unfinished (up to block "
                            f"{progress.get('next_block', 0)}); {again} to resume it")
        reference = expected if expected is not None else (found[0][1]["config"] if found else progress["config"])
        if progress.get("config") != reference:
            than = "this build" if expected is not None else "shard 0"
            raise UserError(f"{root / plan.name} does not match {than} "
                            f"({changed_settings(reference, progress.get('config') or {})}); rebuild it with the same "
                            f"settings ({again} after removing it)")
        found.append((root / plan.name, progress))
    config = found[0][1]["config"]
    saved = config.get("inputs") or {}
    now = {"corpus": corpus_fingerprint(config.get("corpus", "")), "proxy_model": model_fingerprint(config.get("proxy_model", ""))}
    if saved != now:
        raise UserError(f"{root}: the inputs changed since the shards were built ({changed_settings(config, {**config, 'inputs': now})}); "
                        "rebuild the shards from the current files")
    return found


@contextlib.contextmanager
def merge_lock(root: Path) -> Iterator[bool]:
    """Yields True for the one process that may merge (an O_EXCL lock file with pid and host), False
    while another live process holds it; a lock left by a dead process on this host is taken over."""
    path = root / LOCK
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, _, host = path.read_text(encoding="utf-8", errors="replace").partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                path.unlink(missing_ok=True)
                continue
            yield False
            return
        with os.fdopen(fd, "w") as f:
            f.write(me)
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False


def merge_shards(output_dir: Path, num_shards: int, command: str, *, flag: str, inputs: dict, overwrite: bool,
                 jsonl: bool, expected: dict | None, no_rows: Callable[[BuildSummary], str], legacy: tuple = ()):
    """Merge finished shards into OUTPUT; returns (Dataset, BuildSummary), or (None, None) while another
    process merges. The dataset is the block files in block order, memory-mapped, saved with
    datasets' save_to_disk under a fingerprint of the build settings, so its files do not depend on
    how many shards built it or where."""
    from datasets import Dataset, concatenate_datasets, load_from_disk

    root = shards_root(output_dir)
    found = check_shards(output_dir, num_shards, expected)
    config = found[0][1]["config"]
    recheck = lambda: check_output_dir(output_dir, flag, command, overwrite=overwrite, inputs=inputs,  # noqa: E731
                                       containers={"corpus": inputs.get("corpus")}, legacy=legacy)
    recheck()
    with merge_lock(root) as mine:
        if not mine:
            return None, None
        try:  # again under the lock: another process may have merged (and removed the shards) meanwhile
            found = check_shards(output_dir, num_shards, expected)
        except UserError:
            if merged_config(output_dir) == config:
                return None, None
            raise
        summary = BuildSummary()
        files = []
        for shard_dir, progress in found:
            summary.add(progress["summary"])
            files += [(int(p.name[6:15]), p) for p in block_files(shard_dir, below=progress["next_block"])]
        summary.corpus_summary = found[0][1]["summary"].get("corpus_summary", "")
        if not files:
            raise UserError(no_rows(summary))
        parts = [Dataset.from_file(str(path)) for _, path in sorted(files)]
        dataset = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
        dataset = dataset.select(range(len(dataset)), new_fingerprint=f"rpt-{digest}")
        with replace_dir(output_dir, command, recheck=recheck) as tmp:
            dataset.save_to_disk(str(tmp))
            (tmp / "rpt_build.json").write_text(json.dumps({"config": config, "summary": summary.record()}, indent=2,
                                                           default=str))
            if jsonl:
                with open(tmp / "rows.jsonl", "w", encoding="utf-8") as handle:
                    for batch in dataset.iter(batch_size=1000):
                        for row in (dict(zip(batch, values)) for values in zip(*batch.values())):
                            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        del dataset, parts
        remove_shards(root, command)
    with contextlib.suppress(OSError):
        root.rmdir()
    return load_from_disk(str(output_dir)), summary


def merged_config(output_dir: Path) -> dict | None:
    """The build fingerprint saved in a merged output's rpt_build.json, or None."""
    try:
        return json.loads((Path(output_dir) / "rpt_build.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_shards(root: Path, command: str) -> None:
    """Remove the shard directories of `command` under `root` whose files are all listed in their markers."""
    import shutil

    if not root.is_dir():
        return
    for shard_dir in root.iterdir():
        marker = read_marker(shard_dir) if shard_dir.is_dir() else None
        if marker and marker.get("command") == shard_command(command) and _SHARD_RE.match(shard_dir.name):
            listed = set(marker.get("files") or []) | {MARKER}
            if all(f.name in listed for f in shard_dir.iterdir()):
                shutil.rmtree(shard_dir)
