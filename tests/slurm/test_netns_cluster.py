"""The 2-node namespace cluster itself (tests/slurm_netns.py), in seconds: both nodes register with
their own addresses, a 2-node step runs one task per node and the nodes reach each other over TCP
(nothing else), and stopping (or the reaper, after the owner died) leaves no namespace or process.

The training jobs on it are tests/slurm/test_multinode.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.slurm_cluster import pid_alive, reap_stale_clusters
from tests.slurm_netns import CONTROLLER_ADDR, NetnsSlurmCluster

REPO = Path(__file__).resolve().parents[2]


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_two_nodes_each_with_its_own_address(netns_cluster, tmp_path):
    nodes = netns_cluster.run("sinfo", "-h", "-N", "-o", "%N %t %o").stdout.split("\n")
    assert [n.split() for n in nodes if n] == [["n1", "idle", "10.250.0.11"], ["n2", "idle", "10.250.0.12"]]
    # one task per node; task 1 (on n2) serves a port, task 0 (on n1) connects to n2's address: the step's
    # tasks are in different network namespaces joined only by the bridge
    script = tmp_path / "job.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        srun --nodes=2 --ntasks=2 --ntasks-per-node=1 {sys.executable} -c '
        import os, socket, time
        rank, node = int(os.environ["SLURM_PROCID"]), os.environ["SLURMD_NODENAME"]
        if rank == 1:
            s = socket.create_server(("0.0.0.0", 7777)); c, peer = s.accept()
            print(f"{{node}} got {{c.recv(16).decode()}} from {{peer[0]}}", flush=True)
        else:
            for _ in range(100):
                try:
                    socket.create_connection(("10.250.0.12", 7777), timeout=1).sendall(node.encode()); break
                except OSError:
                    time.sleep(0.1)
            print(f"{{node}} sent", flush=True)
        '
        """))
    job = netns_cluster.sbatch(script, "--nodes=2", "-o", str(tmp_path / "out.txt"))
    info = netns_cluster.wait_job(job, timeout=60)
    out = (tmp_path / "out.txt").read_text()
    assert info["JobState"] == "COMPLETED", f"{info}\n{out}"
    assert sorted(out.split("\n")[:-1]) == ["n1 sent", "n2 got n1 from 10.250.0.11"], out
    # the host's own network has no route to the cluster's subnet: nothing was added outside the namespaces
    probe = subprocess.run(["ip", "route", "get", CONTROLLER_ADDR], capture_output=True, text=True)
    assert "br0" not in probe.stdout and "vn1" not in probe.stdout


def test_stop_and_stale_reaping_remove_the_namespaces(tmp_path):
    """A cluster whose owner died (pytest killed) loses processes AND namespaces to the next reaper;
    a cluster stopped normally leaves nothing either."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.slurm_netns import NetnsSlurmCluster
        c = NetnsSlurmCluster(nodes=2).start({str(tmp_path / 'orphan')!r})
        print(" ".join(str(p.pid) for p in c._procs.values()), " ".join(c.netns.values()), flush=True)
        time.sleep(600)
        """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
    finally:
        owner.kill()
        owner.wait()
    words = line.split()
    pids, names = [int(w) for w in words if w.isdigit()], {w for w in words if not w.isdigit()}
    assert len(pids) == 4 and all(pid_alive(p) for p in pids), line  # munged, slurmctld, 2 slurmds
    assert len(names) == 3 and names <= netns_names(), line
    assert str(tmp_path / "orphan") in reap_stale_clusters()
    assert not any(pid_alive(p) for p in pids) and not names & netns_names()

    cluster = NetnsSlurmCluster(nodes=2)
    try:
        cluster.start(tmp_path / "normal")
        names = set(cluster.netns.values())
        assert names <= netns_names()
    finally:
        cluster.stop()
    assert not names & netns_names()
