"""The test tree keeps one name per test file: two `test_rpt.py` files read the same in a failure
summary, a `-k` filter or a CI log, and pytest's rootdir-relative ids are the only thing that tells
them apart."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_file_names_are_unique():
    seen = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test files sharing a name (rename one to say what it tests): {clashes}"
