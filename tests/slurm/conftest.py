"""Fixtures `slurm_cluster` (session: a real one-node Slurm cluster, tests/slurm_cluster.py) and `netns_cluster`
(module: two nodes in network namespaces, tests/slurm_netns.py) for tests/slurm.

Every test in this directory is marked `slurm` (select with `-m slurm`, skip with `-m "not slurm"`).
Where Slurm is missing and cannot be installed (not root, no apt-get) the tests skip, unless
ENTROPY_RL_REQUIRE_SLURM=1 (set it in CI) turns that into an error. Start-up failures on a machine
that has Slurm are errors, never skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster, SlurmUnavailable
from tests.slurm_netns import NetnsSlurmCluster

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A started SlurmCluster; clients use `slurm_cluster.env()` (adds SLURM_CONF)."""
    yield from _started(SlurmCluster(), tmp_path_factory.mktemp("slurm-cluster"))


@pytest.fixture(scope="module")
def netns_cluster(tmp_path_factory):
    """A started 2-node NetnsSlurmCluster (tests/slurm_netns.py): nodes n1, n2 in their own network
    namespaces; clients run under `netns_cluster.client_prefix()` with `netns_cluster.env()`."""
    yield from _started(NetnsSlurmCluster(nodes=2), tmp_path_factory.mktemp("slurm-netns-cluster"))


def _started(cluster, root):
    """Start `cluster` under `root`, yield it, stop it (also when starting fails); skip where Slurm cannot run."""
    try:
        cluster.start(root)
    except SlurmUnavailable as e:
        cluster.stop()
        if os.environ.get("ENTROPY_RL_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required (ENTROPY_RL_REQUIRE_SLURM=1) but unavailable: {e}")
        pytest.skip(str(e))
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
