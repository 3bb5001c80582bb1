"""Safe outputs: no command of entropy-rl deletes or overwrites anything it did not create.

Every output flag of every subcommand goes through here, before any work starts:

* `check_output_dir` / `check_output_file` refuse, with one line naming the flag:
  - `.`, `..`, the current directory or any directory above it;
  - a path that equals or contains an input (corpus, model dir, data file, recipe), or lies inside
    an input directory that is read recursively (a corpus dir: the next read would pick the output up);
  - a regular file where a directory output goes (and a directory where a file output goes);
  - an existing directory (file) that is not exactly a previous output of the same command, unless
    `overwrite` (the command's `--overwrite` flag) is given.
* A directory output is recognised as ours by the marker file `rl-output.json` the command writes
  into it, which lists the command and every file it wrote. "Exactly a previous output" means the
  marker names the same command and the directory holds no file the marker does not list, so a
  user's file put into an old output dir is never lost. A file output (JSON) is ours when it parses
  and carries `"written_by": <command>`.
* One rule for every command with `--overwrite` (`check_outputs_spare_inputs`, run by `rl.cli` before
  any command starts): no output flag may name a path that any other flag of the command names (an
  input: data, few-shot file, prompt template, model ...), or a directory holding one, whatever
  `--overwrite` says, so a replaced output never takes an input with it.
* The marker names the exact command that wrote the output (`rl data rlp` is not `rl data rpt`): one
  command never replaces another's output without `--overwrite`.
* Writes are atomic: `replace_dir` builds into a fresh temp dir beside the target
  (`.NAME.tmp-PID`), then renames it over the target; single files go through
  `rl.runtime.atomic_io.atomic_write_text` (temp beside the target, then `os.replace`). Stale temps of
  earlier runs (their process is gone) are removed, never merged into the new output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from rl.errors import UserError

MARKER = "rl-output.json"
_TMP = ".tmp-"
_OLD = ".old-"


def _abs(path: str | os.PathLike) -> Path:
    """Absolute path with symlinks resolved (the path need not exist)."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def local_inputs(named: Mapping[str, object]) -> dict[str, Path]:
    """The entries of `named` (label -> path, hub id, `builtin:` name or None) that exist on disk, resolved."""
    out = {}
    for label, value in named.items():
        if value is None or str(value).strip() == "" or str(value).lower().startswith("builtin:"):
            continue
        p = Path(str(value)).expanduser()
        if p.exists():
            out[label] = _abs(p)
    return out


def check_not_dangerous(path: str | os.PathLike, flag: str, inputs: Mapping[str, object] = (),
                        containers: Mapping[str, object] = ()) -> Path:
    """Refuse an output path that is `.`/`..`/an ancestor of the cwd, equals or contains an input, or lies
    inside a `containers` input directory. Returns the absolute path."""
    text = str(path)
    if not text.strip():
        raise UserError(f"{flag}: empty path; name a new directory, e.g. {flag} runs/out")
    target = _abs(path)
    cwd = _abs(os.getcwd())
    if _is_within(cwd, target):
        what = "the current directory" if target == cwd else "a directory above the current one"
        raise UserError(f"{flag}: {text!r} is {what}; name a new directory for the output, e.g. {flag} runs/out")
    inputs = dict(inputs or {})
    for label, inp in local_inputs(inputs).items():
        if target == inp:
            raise UserError(f"{flag}: {text!r} is the {label} itself; choose another output path")
        if _is_within(inp, target):
            raise UserError(f"{flag}: {text!r} contains the {label} ({inputs[label]}); choose an output path outside it")
    for label, inp in local_inputs(dict(containers or {})).items():
        if inp.is_dir() and _is_within(target, inp):
            raise UserError(f"{flag}: {text!r} lies inside the {label} directory ({containers[label]}), which is "
                            "read as input; choose an output path outside it")
    return target


# argparse dests of output flags (`-o/--output`, `--output-dir`): every other path-valued flag is an input.
OUTPUT_DESTS = ("output", "output_dir")


def check_outputs_spare_inputs(args, parser) -> None:
    """For a command with `--overwrite`: refuse an output flag whose path is, or contains, a path another
    flag names (one line naming both flags). `parser`: the subcommand's parser (for the flag names)."""
    if not hasattr(args, "overwrite"):
        return
    flags = {a.dest: next((s for s in a.option_strings if s.startswith("--")), a.dest)
             for a in parser._actions if a.option_strings}
    outputs = {flags[d]: getattr(args, d) for d in OUTPUT_DESTS if d in flags and getattr(args, d, None)}
    inputs = {}
    for dest, flag in flags.items():
        value = getattr(args, dest, None)
        if dest not in OUTPUT_DESTS and isinstance(value, str) and value.strip():
            inputs[flag] = value
    for flag, path in outputs.items():
        check_not_dangerous(path, flag, inputs)


def _listed_files(root: Path) -> list[str]:
    """Every file and symlink under `root` as a relative POSIX path (directories are implied)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def read_marker(directory: str | os.PathLike) -> dict | None:
    try:
        data = json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def foreign_files(directory: Path, command: str, legacy: Iterable[str] = ()) -> list[str] | None:
    """Files in `directory` that a previous `command` output did not write; None when it is not ours at all.

    Ours: the marker names `command`; its `files` list covers every file there. `legacy`: glob patterns
    of outputs written before the marker existed (recognised only when every file matches one).
    """
    files = _listed_files(directory)
    marker = read_marker(directory)
    if marker is not None and marker.get("command") == command:
        listed = set(marker.get("files") or []) | {MARKER}
        return [f for f in files if f not in listed]
    legacy = list(legacy)
    if legacy and files and all(any(Path(f).match(g) for g in legacy) for f in files):
        return []
    return None


def check_output_dir(path: str | os.PathLike, flag: str, command: str, *, overwrite: bool = False,
                     inputs: Mapping[str, object] = (), containers: Mapping[str, object] = (),
                     legacy: Iterable[str] = (), overwrite_flag: str | None = "--overwrite") -> Path:
    """Check a directory output before the work starts (see module doc); returns its absolute path."""
    target = check_not_dangerous(path, flag, inputs, containers)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag}: {path} is an existing file, not a directory; name a new directory for the output")
    if target.is_dir() and any(target.iterdir()):
        foreign = foreign_files(target, command, legacy)
        if foreign is None or foreign:
            if overwrite:
                return target
            other = (read_marker(target) or {}).get("command")
            if foreign:
                what = f"holds files `{command}` did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
            elif other:
                what = f"holds the output of `{other}`, not of `{command}`"
            else:
                what = f"is an existing directory not written by `{command}` (no {MARKER})"
            fix = f", or pass {overwrite_flag} to replace it" if overwrite_flag else ""
            raise UserError(f"{flag}: {path} {what}; choose a new path{fix}")
    _check_creatable(target, path, flag, "create")
    return target


def check_output_file(path: str | os.PathLike, flag: str, command: str, *, overwrite: bool = False,
                      inputs: Mapping[str, object] = (), containers: Mapping[str, object] = ()) -> Path:
    """Check a JSON file output before the work starts: not a dir, parent writable, and an existing
    file only when it is a previous `command` output (`"written_by"`) or `overwrite`."""
    target = check_not_dangerous(path, flag, inputs, containers)
    if target.is_dir():
        raise UserError(f"{flag}: {path} is a directory; give a file path, e.g. {flag} {Path(str(path)) / 'results.json'}")
    if target.exists() and not overwrite:
        try:
            ours = json.loads(target.read_text(encoding="utf-8")).get("written_by") == command
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"{flag}: {path} exists and was not written by `{command}`; choose a new path, or pass "
                            "--overwrite to replace it")
    _check_creatable(target, path, flag, "write")
    return target


def _check_creatable(target: Path, path, flag: str, verb: str) -> None:
    """The nearest existing ancestor of `target` must be a directory we can create entries in: checked by
    creating (and removing) an empty probe directory there, since permission bits do not tell (root,
    read-only mounts, /proc). Else one line."""
    import tempfile

    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    problem = None if parent.is_dir() else "not a directory"
    if problem is None:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".rl-write-probe-", dir=parent))
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
    if problem:
        raise UserError(f"{flag}: cannot {verb} {path} ({parent} is not a writable directory: {problem})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_stale_temps(target: Path) -> list[Path]:
    """Remove `.NAME.tmp-PID` / `.NAME.old-PID` siblings of `target` whose process is gone; returns them."""
    removed = []
    if not target.parent.is_dir():
        return removed
    for sibling in target.parent.iterdir():
        for tag in (_TMP, _OLD):
            prefix = f".{target.name}{tag}"
            if sibling.name.startswith(prefix) and sibling.name[len(prefix):].isdigit():
                if not _pid_alive(int(sibling.name[len(prefix):])):
                    _remove(sibling)
                    removed.append(sibling)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def replace_dir(target: str | os.PathLike, command: str, recheck=None) -> Iterator[Path]:
    """Build a directory output atomically: yields a fresh temp dir beside `target`; on success the
    marker (listing every file written) is added and the temp renamed over `target`.

    `recheck`: called just before the swap (the target may have changed during a long build), e.g.
    the same `check_output_dir` call; on error the temp is removed and nothing at `target` changes.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    tmp = target.with_name(f".{target.name}{_TMP}{os.getpid()}")
    if tmp.exists():
        _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        files = _listed_files(tmp)
        (tmp / MARKER).write_text(json.dumps({"command": command, "files": files,
                                              "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2),
                                  encoding="utf-8")
        if recheck is not None:
            recheck()
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}{_OLD}{os.getpid()}")
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            _remove(old)
    except BaseException:
        if tmp.exists():
            _remove(tmp)
        raise


def written_files(directory: str | os.PathLike) -> list[str]:
    """Paths of the files in a finished directory output (for the `wrote ...` lines)."""
    d = Path(directory)
    return [str(d / f) for f in _listed_files(d)]
