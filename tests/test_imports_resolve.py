"""Every name imported from the project resolves, in `rl/`, `rewards/` and `bench/` alike.

An import inside a function only fails when that function runs: a bench script or a rarely taken
branch can name a symbol that moved (as `bench/rpt_signal.py` did when the RPT prompt moved to
`rl.data.settings`) and nothing notices until a user runs it. This reads every `from X import name`
of a project module statically and checks the name exists, without running the functions.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("rl", "rewards", "bench")


def _project_imports():
    """(file, line, module, name or None) for every absolute import of a project module."""
    for folder in PROJECT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                        and node.module.split(".")[0] in PROJECT:
                    for alias in node.names:
                        yield path.relative_to(ROOT), node.lineno, node.module, alias.name
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] in PROJECT:
                            yield path.relative_to(ROOT), node.lineno, alias.name, None


def test_the_scan_sees_function_level_imports():
    """The scan must reach imports inside functions, or it could not have caught the bench's."""
    found = {(str(path), module, name) for path, _, module, name in _project_imports()}
    assert ("bench/rpt_signal.py", "rl.data.settings", "DEFAULT_RPT_PROMPT") in found


@pytest.mark.parametrize("folder", PROJECT)
def test_every_project_import_resolves(folder, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    missing = []
    for path, line, module, name in _project_imports():
        if path.parts[0] != folder:
            continue
        try:
            imported = importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{path}:{line}: import {module}: {error}")
            continue
        if name is None or name == "*" or hasattr(imported, name):
            continue
        try:
            importlib.import_module(f"{module}.{name}")  # `from package import submodule`
        except ImportError:
            missing.append(f"{path}:{line}: {module} has no {name}")
    assert not missing, "\n".join(missing)
