"""YAML for recipes: safe loading that refuses a key given twice in one mapping.

PyYAML keeps the last value of a duplicated key without a word, so `learning_rate` set twice in a
long recipe silently trains with the one further down. Here that is a one-line error naming the
key and both lines.
"""

from __future__ import annotations

import yaml


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
