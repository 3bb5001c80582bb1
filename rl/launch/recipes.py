"""`rl recipes`: list the recipes entropy-rl ships and copy them out to edit.

Why: after `pip install entropy-rl` the recipes live inside the installed package (see
rl/launch/shipped.py), not in a folder the user works in. `rl recipes` lists them (name and the first
line of each file's header comment); `rl recipes copy NAME... -o DIR` (or `--all`) copies them into
DIR keeping their layout below `recipes/`, together with the accelerate configs a recipe's launch
line or `accelerate_config` field names (`recipes/accelerate/zero3.yaml`). Those references are
written relative to the folder that holds `recipes/`: copy into `./recipes` (the default) and run
`rl` from `.`, as in a source checkout, and they resolve unchanged.

Nothing existing is overwritten without `--overwrite`: the copy checks every target first and
writes nothing if one exists with other contents (an identical file is left as is); each file is
written atomically (a temp file beside it, then a rename) and printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable, TextIO

from rl.errors import UserError
from rl.launch.shipped import shipped_path

# A recipe names another shipped file as `recipes/...yaml` (launch lines, `accelerate_config:`).
ACCELERATE_REFERENCE = re.compile(r"recipes/(accelerate/[A-Za-z0-9_.-]+\.ya?ml)")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str  # path below recipes/ without .yaml, e.g. "rpt/forking-rpt"
    path: Path  # the shipped file
    summary: str  # first line of the header comment


def recipes_dir() -> Path:
    """The shipped `recipes/` folder (wheel copy or source checkout)."""
    return shipped_path("recipes")


def header_summary(text: str) -> str:
    """The first line of a YAML file's opening comment, without `#` ('' when it has none)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return ""
        content = stripped.lstrip("#").strip()
        if content:
            return content
    return ""


def list_recipes(root: Path | None = None) -> list[Recipe]:
    """Every shipped YAML file below `recipes/` (accelerate configs included), sorted by name."""
    root = root or recipes_dir()
    found = []
    for path in sorted(root.rglob("*.y*ml")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        name = path.relative_to(root).with_suffix("").as_posix()
        found.append(Recipe(name, path, header_summary(path.read_text(encoding="utf-8"))))
    return found


def find_recipe(name: str, recipes: list[Recipe]) -> Recipe:
    """A recipe by name: `rpt/forking-rpt`, with or without `.yaml` and a leading `recipes/`."""
    key = name.strip().replace("\\", "/")
    key = key[len("recipes/"):] if key.startswith("recipes/") else key
    key = re.sub(r"\.ya?ml$", "", key)
    by_name = {r.name: r for r in recipes}
    if key in by_name:
        return by_name[key]
    close = difflib.get_close_matches(key, list(by_name), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "list them with `rl recipes`"
    raise UserError(f"{name}: no such shipped recipe; {hint}")


def files_to_copy(chosen: Iterable[Recipe], root: Path) -> list[Path]:
    """The chosen recipes plus the shipped accelerate configs they reference, as paths below `root`."""
    files: dict[Path, None] = {}
    for recipe in chosen:
        files[recipe.path.relative_to(root)] = None
        for ref in ACCELERATE_REFERENCE.findall(recipe.path.read_text(encoding="utf-8")):
            if (root / ref).is_file():
                files[Path(ref)] = None
    return list(files)


def copy_recipes(names: list[str], out_dir: str | os.PathLike, *, copy_all: bool = False, overwrite: bool = False,
                 out: TextIO | None = None, root: Path | None = None) -> list[Path]:
    """Copy shipped recipes into `out_dir` (layout below recipes/ kept); returns the files written.

    `copy_all` copies every shipped file below recipes/ (READMEs too). Checks all targets before
    writing any: an existing file with other contents stops the copy (UserError) unless
    `overwrite`; an identical one is left untouched.
    """
    out = out or sys.stdout
    root = root or recipes_dir()
    if copy_all:
        rels = [p.relative_to(root) for p in sorted(root.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    elif names:
        recipes = list_recipes(root)
        rels = files_to_copy([find_recipe(n, recipes) for n in names], root)
    else:
        raise UserError("rl recipes copy: name at least one recipe (see `rl recipes`) or pass --all")
    dest = Path(out_dir).expanduser()
    if dest.exists() and not dest.is_dir():
        raise UserError(f"-o {dest}: exists and is not a directory; pass a directory to copy the recipes into")
    plan, unchanged, clashes = [], [], []
    for rel in rels:
        src, target = root / rel, dest / rel
        if target.is_dir() or (target.exists() and not target.is_file()):
            raise UserError(f"{target}: exists and is not a file; move it away or pick another -o directory")
        if target.is_file():
            if target.read_bytes() == src.read_bytes():
                unchanged.append(target)
                continue
            clashes.append(target)
        plan.append((src, target))
    if clashes and not overwrite:
        shown = ", ".join(str(p) for p in clashes[:3]) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise UserError(f"-o {dest}: {shown} already exist{'s' if len(clashes) == 1 else ''} with other contents; "
                        "nothing was copied; pass --overwrite to replace them, or pick another -o directory")
    written = []
    for src, target in plan:
        verb = "replaced" if target in clashes else "wrote"
        _write_atomic(target, src.read_bytes())
        written.append(target)
        out.write(f"{verb} {target}\n")
    for target in unchanged:
        out.write(f"unchanged {target} (same contents)\n")
    if any(ACCELERATE_REFERENCE.search(src.read_text(encoding="utf-8")) for src, _ in plan) \
            and dest.resolve().name != "recipes":
        out.write(f"note: recipes name their accelerate configs as recipes/accelerate/...; run rl from a folder "
                  f"whose recipes/ holds them (e.g. copy with -o recipes), or pass --accelerate-config "
                  f"{dest / 'accelerate'}/NAME.yaml\n")
    return written


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_recipes(out: TextIO | None = None, paths: bool = False) -> None:
    """`rl recipes`: one line per shipped recipe (name and summary, or name and full path)."""
    out = out or sys.stdout
    root = recipes_dir()
    recipes = list_recipes(root)
    width = max(len(r.name) for r in recipes)
    out.write(f"shipped recipes ({root}); copy with `rl recipes copy NAME -o recipes`:\n")
    for r in recipes:
        out.write(f"  {r.name:<{width}}  {r.path if paths else r.summary}\n")


def _main(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "copy":
        if args.all and args.names:
            raise UserError("rl recipes copy: pass recipe names or --all, not both")
        copy_recipes(args.names, args.output, copy_all=args.all, overwrite=args.overwrite)
    else:
        print_recipes(paths=getattr(args, "paths", False))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add `rl recipes` (list) and `rl recipes copy` to the CLI."""
    p = subparsers.add_parser(
        "recipes", help="list the shipped recipes, or copy them out to edit",
        description="List the recipes entropy-rl ships (`rl recipes`), or copy some or all of them into a "
                    "folder (`rl recipes copy NAME... -o DIR`, `rl recipes copy --all`). Existing files are "
                    "never replaced without --overwrite.",
        epilog="examples:\n  rl recipes\n  rl recipes copy rpt_smollm2_cpu              # -> ./recipes/rpt_smollm2_cpu.yaml\n"
               "  rl recipes copy rpt/forking-rpt -o recipes   # + recipes/accelerate/zero3.yaml it names\n"
               "  rl recipes copy --all -o recipes\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paths", action="store_true", help="show each recipe's installed path instead of its summary")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="list the shipped recipes (the default)").add_argument(
        "--paths", action="store_true", help="show each recipe's installed path instead of its summary")
    c = sub.add_parser("copy", help="copy recipes into a folder (layout below recipes/ kept)",
                       description="Copy shipped recipes, with the accelerate configs they name, into a folder. "
                                   "Every file written is printed; nothing existing is replaced without --overwrite.")
    c.add_argument("names", nargs="*", metavar="NAME", help="recipe names as `rl recipes` lists them")
    c.add_argument("--all", action="store_true", help="copy every shipped recipe and README")
    c.add_argument("-o", "--output", default="recipes",
                   help="folder to copy into (default: ./recipes, so recipes/... references resolve from .)")
    c.add_argument("--overwrite", action="store_true", help="replace existing files that differ")
    p.set_defaults(func=_main)
    return p
