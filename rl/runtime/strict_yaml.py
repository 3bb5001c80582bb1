"""YAML for recipes: safe loading that refuses a key given twice in one mapping, and the one
recipe-file reader every command uses (`load_recipe_file`: `rl train`, its dry run, `rl submit`).

PyYAML keeps the last value of a duplicated key without a word, so `learning_rate` set twice in a
long recipe silently trains with the one further down. Here that is a one-line error naming the
key and both lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from rl.errors import UserError


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key, first_line: int, line: int):
        super().__init__(f"key '{key}' appears twice (lines {first_line} and {line}); keep one")
        self.key, self.first_line, self.line = key, first_line, line


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader reports unhashable keys itself
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(text: str):
    """`yaml.safe_load(text)`, but a mapping key given twice raises DuplicateKeyError (a yaml.YAMLError)."""
    loader = _StrictLoader(text)  # a SafeLoader subclass: plain data only, never objects
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_recipe_file(path: str | os.PathLike, missing_hint: str = "") -> dict[str, Any]:
    """Read a recipe with the strict safe loader; one-line UserError naming the file (and line) when it
    is missing (`missing_hint` appended), not YAML, not UTF-8 or not a mapping. An empty file is {}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found{missing_hint}")
    try:
        data = load(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:
        raise UserError(f"{path}:{exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: recipe is not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping of field: value, got {type(data).__name__}")
    return data
