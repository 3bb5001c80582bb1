"""A real multi-node Slurm cluster on one machine: every node its own Linux network namespace.

Why: slurm/train.sbatch renders `--num_machines`, `--machine_rank $SLURM_PROCID` and the head
node's address; only a job that really spans two nodes (two slurmds, two addresses, ranks that
must reach each other over a network) shows whether that works. One machine can host it:

    ctl namespace:  slurmctld, bridge br0 10.250.0.1/24   (the "login node": clients run here)
    n1  namespace:  slurmd -N n1, eth0 10.250.0.11/24      veth eth0 <-> vn1 on br0
    n2  namespace:  slurmd -N n2, eth0 10.250.0.12/24      veth eth0 <-> vn2 on br0

The namespaces are joined to nothing else (no interface or address is added outside them, no
route to the host's network), so the private subnet cannot collide with anything, not even with
a second such cluster. munged is shared (its socket is a file, which network namespaces do not
separate), and so is the filesystem, as a cluster's shared home/scratch would be. Every node
has its eth0, so `GLOO_SOCKET_IFNAME=eth0` picks the inter-node interface as on a real cluster.
Client commands (sbatch, squeue, scontrol, `rl submit`) run in the ctl namespace through
`client_prefix()` (nsenter), as a user's would on a login node.

    cluster = NetnsSlurmCluster(nodes=2).start(tmp_path)
    cluster.run("sinfo")                      # nsenter --net=/run/netns/<ctl> sinfo
    cluster.stop()                            # jobs, daemons, leftovers, then the namespaces

Teardown: the namespace names are written to <root>/run/netns before any is created, so
`stop()`, a restart in the same directory and the stale-cluster reaper of tests/slurm_cluster.py
(owner process gone) all delete them after killing the cluster's processes. Needs root and `ip`
(iproute2) and `nsenter` (util-linux).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.slurm_cluster import INSTALL_SCRIPT, SlurmCluster, SlurmUnavailable

SUBNET = "10.250.0"  # private, and only ever inside this cluster's own namespaces
CONTROLLER_ADDR = f"{SUBNET}.1"
NODE_IFNAME = "eth0"  # the inter-node interface inside every node namespace


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here (not root, no `ip`/`nsenter`), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [b for b in ("ip", "nsenter") if not shutil.which(b)]
    if missing:
        return f"{' and '.join(missing)} not found (iproute2 / util-linux; .ci/install-slurm.sh installs them)"
    return None


class NetnsSlurmCluster(SlurmCluster):
    """`nodes` Slurm nodes n1..nN, one network namespace each, plus a controller namespace."""

    def __init__(self, nodes: int = 2, **kwargs):
        super().__init__(**kwargs)
        if nodes < 1:
            raise ValueError(f"nodes: {nodes}; need at least 1")
        self.node_names = [f"n{i}" for i in range(1, nodes + 1)]
        self.node_count = nodes
        self.netns: dict[str, str] = {}  # "ctl" and each node name -> namespace name

    # ------------------------------------------------------------ hooks of SlurmCluster

    def _setup_network(self) -> None:
        if os.geteuid() == 0 and not all(shutil.which(b) for b in ("ip", "nsenter")) and shutil.which("apt-get"):
            subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, timeout=900)  # installs iproute2 too
        why = netns_unavailable()
        if why:
            raise SlurmUnavailable(f"multi-node test cluster: {why}")
        tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:8]  # unique per cluster directory
        self.netns = {"ctl": f"erl{tag}ctl", **{n: f"erl{tag}{n}" for n in self.node_names}}
        (self.root / "run" / "netns").write_text("\n".join(self.netns.values()) + "\n")  # teardown reads it
        ctl = self.netns["ctl"]
        # a namespace of this name left by a crashed run whose directory is gone: same owner (same path)
        cmds = [["netns", "del", name] for name in self.netns.values() if Path("/run/netns", name).exists()]
        cmds += [["netns", "add", name] for name in self.netns.values()]
        cmds += [["-n", ctl, "link", "set", "lo", "up"],
                 ["-n", ctl, "link", "add", "br0", "type", "bridge"],
                 ["-n", ctl, "addr", "add", f"{CONTROLLER_ADDR}/24", "dev", "br0"],
                 ["-n", ctl, "link", "set", "br0", "up"]]
        for i, node in enumerate(self.node_names, start=1):
            ns = self.netns[node]
            cmds += [["link", "add", NODE_IFNAME, "netns", ns, "type", "veth", "peer", "name", f"v{node}", "netns", ctl],
                     ["-n", ctl, "link", "set", f"v{node}", "master", "br0", "up"],
                     ["-n", ns, "addr", "add", f"{self.node_addr(node)}/24", "dev", NODE_IFNAME],
                     ["-n", ns, "link", "set", NODE_IFNAME, "up"],
                     ["-n", ns, "link", "set", "lo", "up"]]
        for cmd in cmds:
            proc = subprocess.run(["ip", *cmd], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"ip {' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")

    def _spawn_daemons(self, env: dict) -> None:
        self._spawn("slurmctld", [*self.netns_prefix("ctl"), "slurmctld", "-D", "-f", str(self.conf), "-c", "-i"],
                    env)
        for node in self.node_names:  # -N: this slurmd is node `node` (its own spool, log and pid file: %n)
            self._spawn(f"slurmd-{node}", [*self.netns_prefix(node), "slurmd", "-D", "-f", str(self.conf), "-N", node],
                        env)

    def _controller_addr(self) -> str:
        return CONTROLLER_ADDR

    def _node_lines(self, node_line: str) -> str:
        hardware = " ".join(kv for kv in node_line.split() if not kv.startswith("NodeName="))
        return "\n".join(f"NodeName={n} NodeAddr={self.node_addr(n)} {hardware} State=UNKNOWN"
                         for n in self.node_names)

    def client_prefix(self) -> list[str]:
        return self.netns_prefix("ctl")

    # ------------------------------------------------------------ helpers

    def node_addr(self, node: str) -> str:
        return f"{SUBNET}.{10 + self.node_names.index(node) + 1}"

    def netns_prefix(self, which: str) -> list[str]:
        """Run a command inside namespace `which` ("ctl" or a node name); nsenter execs it (same pid)."""
        return ["nsenter", f"--net=/run/netns/{self.netns[which]}", "--"]

    def node_job_pids(self, node: str, job_id: str) -> list[int]:
        """Pids of job `job_id`'s processes on `node`: in its namespace, with SLURM_JOB_ID=job_id in their
        environment (the step's tasks: launcher, ranks; not slurmstepd, which belongs to slurmd)."""
        target = os.stat(f"/run/netns/{self.netns[node]}").st_ino
        tag, pids = f"SLURM_JOB_ID={job_id}".encode(), []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.stat(entry / "ns" / "net").st_ino != target:
                    continue
                if tag in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids
