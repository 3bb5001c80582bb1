"""The package's layers point one way (ARCHITECTURE.md, "Layers").

Every folder of `rl/` imports only from its own folder or from folders below it, at module level or
inside a function alike, so a stage can be read, tested and reused without the stages built on it.
`rl.errors` and the bottom layer (`rl.signal`) are pure: they are imported at module level, never
inside a function; the one exception is `rl.signal` (it loads torch) in the command modules `rl --help`
imports, which must stay torch-free. `rewards/` sits beside the bottom: it imports only `rl.errors`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own layer or any layer before it in this list.
LAYERS = ["errors", "signal", "runtime", "data", "eval", "train", "sft", "prune", "launch", "demo", "cli"]
PURE = {"errors", "signal"}  # imported at module level only
TORCH_LAYERS = {"signal"}  # pure, but they load torch: the command modules `rl --help` imports defer them


def _layer(module: str) -> str | None:
    """`rl.data.rpt` -> "data"; `rl.errors` -> "errors"; `rl` itself -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "rl" and len(parts) > 1 else None


def _imports(path: Path):
    """(imported module, line, inside a function?) for every absolute import of `rl.*` in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module == "rl":
                    found.extend((f"rl.{alias.name}", child.lineno, in_function) for alias in child.names)
                elif child.module.startswith("rl."):
                    found.append((child.module, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("rl."))
            visit(child, nested)

    visit(tree, False)
    return found


def _source_layer(path: Path, root: Path) -> str:
    rel = path.relative_to(root / "rl")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _package_files():
    return sorted(p for p in (ROOT / "rl").rglob("*.py") if "_shipped" not in p.parts)


def test_every_folder_has_a_layer():
    folders = {p.name for p in (ROOT / "rl").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), f"folders without a layer in LAYERS: {sorted(folders - set(LAYERS))}"


def back_edges(files, root: Path = ROOT) -> list[str]:
    """Every import of a layer above the importing module's own, as `file:line (layer) imports module`."""
    problems = []
    for path in files:
        source = _source_layer(path, root)
        if source == "__init__":
            continue
        for module, line, _ in _imports(path):
            target = _layer(module)
            if target is None or target == source:
                continue
            assert target in LAYERS, f"{path}:{line} imports {module}: {target!r} has no layer"
            if LAYERS.index(target) > LAYERS.index(source):
                problems.append(f"{path.relative_to(root)}:{line} ({source}) imports {module} ({target})")
    return problems


def test_no_folder_imports_a_folder_above_it():
    problems = back_edges(_package_files())
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def _command_modules() -> set[Path]:
    """rl/cli.py and the modules it imports to register subcommands (what `rl --help` loads)."""
    from rl.cli import SUBCOMMAND_MODULES

    return {ROOT / "rl" / "cli.py"} | {ROOT / (name.replace(".", "/") + ".py") for name in SUBCOMMAND_MODULES}


def test_pure_layers_are_imported_at_module_level():
    problems = []
    commands = _command_modules()
    for path in _package_files() + sorted((ROOT / "rewards").glob("*.py")):
        for module, line, in_function in _imports(path):
            deferred_on_purpose = path in commands and _layer(module) in TORCH_LAYERS
            if in_function and _layer(module) in PURE and not deferred_on_purpose:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module} inside a function")
    assert not problems, "\n".join(problems)


def test_rewards_import_only_errors():
    problems = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in sorted((ROOT / "rewards").glob("*.py"))
                for m, line, _ in _imports(p) if _layer(m) != "errors"]
    assert not problems, "rewards/ may import only rl.errors:\n" + "\n".join(problems)


def test_the_check_finds_a_back_edge(tmp_path):
    """The checker itself can fail: a signal module importing train inside a function is reported."""
    probe = tmp_path / "rl" / "signal" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from rl.train.config import EntropyGRPOConfig\n")
    assert back_edges([probe], root=tmp_path) == ["rl/signal/probe.py:2 (signal) imports rl.train.config (train)"]


def test_rl_help_loads_no_torch():
    """`rl --help` (and every subcommand's registration) stays fast: no torch, transformers or trl."""
    import subprocess
    import sys

    code = ("import sys, rl.cli; rl.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"rl --help imports {out.stdout.strip()}"
