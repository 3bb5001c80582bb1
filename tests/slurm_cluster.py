"""A real one-node Slurm cluster (munged + slurmctld + slurmd) under a temp dir, for tests.

Why: the sbatch template, signal forwarding and requeue/resume logic are only believable when a
real Slurm runs them. Debian's Slurm 22.05 starts in about a second with no systemd:

    cluster = SlurmCluster().start(tmp_path)        # installs packages if missing (.ci/install-slurm.sh)
    subprocess.run(["sbatch", ...], env=cluster.env())
    cluster.stop()                                  # cancels jobs, stops daemons, kills leftovers

Everything lives under the given directory: munge key and socket, slurm.conf, state, spool, logs,
pid files. Ports are picked free at start, so two clusters (two engineers, two pytest sessions)
can share a machine. Robustness against crashed sessions: each cluster registers itself in
$ENTROPY_RL_SLURM_REGISTRY (default /tmp/entropy-rl-slurm-registry) with its owner's pid; `start`
reaps clusters whose owner is gone (daemons by pid file, verified by command line; then any
process whose environment names that cluster's slurm.conf: slurmstepd, job scripts).
Needs root (jobs run as the submitting user; slurmd must be root to launch them).
A cluster of several nodes, each in its own network namespace, is tests/slurm_netns.py's
NetnsSlurmCluster, built on the hooks marked below.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / ".ci" / "install-slurm.sh"
REGISTRY = Path(os.environ.get("ENTROPY_RL_SLURM_REGISTRY", "/tmp/entropy-rl-slurm-registry"))
BINARIES = ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                   "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


class SlurmUnavailable(RuntimeError):
    """Slurm is not installed and cannot be installed here (not root, no apt-get): tests should skip."""


def ensure_installed() -> None:
    """Install slurmctld/slurmd/slurm-client/munge via .ci/install-slurm.sh unless already present."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0 and not shutil.which("sudo"):
        raise SlurmUnavailable("Slurm is not installed and this user cannot install it (need root)")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("Slurm is not installed and apt-get is missing (Debian/Ubuntu only)")
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free right now (all held open while choosing, so never the same twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_time(pid: int) -> str | None:
    """Kernel start time of `pid` (tells a live process from a reused pid), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Running (a zombie, i.e. exited but not yet reaped by its parent, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _my_lineage() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _terminate(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL whatever is left."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_cluster_processes(root: Path) -> None:
    """Stop every process belonging to the cluster under `root`: daemons, then stepds and job processes."""
    conf = root / "etc" / "slurm.conf"
    daemons = []
    for pid_file in sorted((root / "run").glob("*.pid")):  # munged, slurmctld, slurmd (one per node)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if str(root) in _cmdline(pid) and pid not in daemons:  # verify: never kill a reused pid
            daemons.append(pid)
    _terminate(daemons)
    needle, mine = f"SLURM_CONF={conf}".encode() + b"\0", _my_lineage()
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in mine:
            try:
                if needle in (entry / "environ").read_bytes() + b"\0":
                    leftovers.append(int(entry.name))
            except OSError:
                continue
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    delete_netns(root)


def delete_netns(root: Path) -> None:
    """Delete the network namespaces a multi-node cluster under `root` listed in run/netns (their veths and
    bridge go with them); called after the cluster's processes are gone (a live process keeps its namespace)."""
    listing = root / "run" / "netns"
    if not listing.is_file():
        return
    for name in listing.read_text().split():
        if (Path("/run/netns") / name).exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    listing.unlink(missing_ok=True)


def reap_stale_clusters() -> list[str]:
    """Stop clusters registered by processes that no longer exist; returns their root dirs."""
    reaped = []
    if not REGISTRY.is_dir():
        return reaped
    for entry in REGISTRY.glob("*.json"):
        try:
            info = json.loads(entry.read_text())
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        if _start_time(info["owner_pid"]) == info["owner_start"]:
            continue  # owner still running: someone else's live cluster
        kill_cluster_processes(Path(info["root"]))
        entry.unlink(missing_ok=True)
        reaped.append(info["root"])
    return reaped


class SlurmCluster:
    """One controller + one node on 127.0.0.1; `start(dir)`, `env()`, job helpers, `stop()`."""

    def __init__(self, partition: str = "debug", ready_timeout: float = 60.0):
        self.partition = partition
        self.ready_timeout = ready_timeout
        self.root: Path | None = None
        self.conf: Path | None = None
        self.node_name: str | None = None
        self.cpus: int | None = None
        self.startup_seconds: float | None = None  # start of daemons -> node idle
        self.munge_socket: Path | None = None
        self._procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self, tmpdir: str | os.PathLike) -> "SlurmCluster":
        ensure_installed()
        reap_stale_clusters()
        self.root = root = Path(tmpdir).resolve()
        kill_cluster_processes(root)  # leftovers of an earlier start in this same directory
        for sub in ("etc", "state", "spool", "log", "run", "munge-key", "munge-run"):
            shutil.rmtree(root / sub, ignore_errors=True)
            (root / sub).mkdir(parents=True)
        os.chmod(root, 0o755)
        os.chmod(root / "munge-key", 0o700)
        os.chmod(root / "munge-run", 0o755)
        self._register()
        t0 = time.monotonic()
        self._setup_network()
        self._start_munge()
        self.conf = self._write_conf()
        self._spawn_daemons({**os.environ, "SLURM_CONF": str(self.conf)})
        self._wait_idle()
        self.startup_seconds = time.monotonic() - t0
        return self

    # Hooks a multi-node cluster (tests/slurm_netns.py) overrides: one node on 127.0.0.1 here.
    node_count = 1

    def _setup_network(self) -> None:
        """Nothing to set up: controller and node share the host's loopback."""

    def _spawn_daemons(self, env: dict) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf), "-c", "-i"], env)
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)], env)

    def _controller_addr(self) -> str:
        return "127.0.0.1"

    def _node_lines(self, node_line: str) -> str:
        """slurm.conf's node definition(s), from `slurmd -C`'s line for this machine."""
        return f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN"

    def client_prefix(self) -> list[str]:
        """What client commands (sbatch, squeue, `rl submit`) run under to reach the controller."""
        return []

    def _register(self) -> None:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        info = {"owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()), "root": str(self.root)}
        self._registry_entry().write_text(json.dumps(info))

    def _registry_entry(self) -> Path:
        return REGISTRY / (hashlib.sha1(str(self.root).encode()).hexdigest()[:16] + ".json")

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)  # setsid: not hit by the test's own signals
        log.close()
        self._procs[name] = proc
        (self.root / "run" / f"{name}.pid").write_text(str(proc.pid))

    def _start_munge(self) -> None:
        key = self.root / "munge-key" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        os.chmod(key, 0o600)
        self.munge_socket = self.root / "munge-run" / "munge.socket"
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.root / 'munge-run' / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge-key' / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), "munged socket", 10)

    def _write_conf(self) -> Path:
        node_line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        node_line = node_line.splitlines()[0].strip()
        fields = dict(kv.split("=", 1) for kv in node_line.split())
        self.node_name, self.cpus = fields["NodeName"], int(fields["CPUs"])
        r = self.root
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
        ctld_port, slurmd_port = free_ports(2)
        conf = f"""\
# Written by tests/slurm_cluster.py for a throwaway test cluster.
ClusterName=entropyrl
SlurmctldHost={self.node_name}({self._controller_addr()})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.daemon.pid
SlurmdPidFile={r}/run/slurmd-%n.daemon.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
KillWait=10
InactiveLimit=0
SlurmdTimeout=300
{self._node_lines(node_line)}
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        path = r / "etc" / "slurm.conf"
        path.write_text(conf)
        return path

    def _wait(self, pred, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited while waiting for {what}:\n{self.logs()}")
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}:\n{self.logs()}")

    def _wait_idle(self) -> None:
        def idle() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False)
            return out.returncode == 0 and out.stdout.split() == ["idle"] * self.node_count

        self._wait(idle, "nodes idle", self.ready_timeout)

    def logs(self, tail: int = 3000) -> str:
        """Tail of each daemon log (for failure messages)."""
        parts = []
        for f in sorted((self.root / "log").glob("*")) if self.root else []:
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel all jobs, stop the daemons, kill leftover job processes, unregister."""
        if self.root is None:
            return
        if self.conf is not None and "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            ids = self.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
            if ids:
                self.run("scancel", *ids, check=False)
                end = time.monotonic() + 15
                while time.monotonic() < end and self.run("squeue", "-h", "-o", "%A", check=False).stdout.strip():
                    time.sleep(0.2)
        kill_cluster_processes(self.root)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()
        self._registry_entry().unlink(missing_ok=True)

    def __enter__(self) -> "SlurmCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ clients

    def env(self, base: dict | None = None) -> dict:
        """Environment for Slurm client commands: `base` (default os.environ) plus SLURM_CONF."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster (text output captured)."""
        proc = subprocess.run([*self.client_prefix(), *cmd], env=kw.pop("env", None) or self.env(), capture_output=True, text=True,
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sbatch(self, script: str | os.PathLike, *args: str, cwd: str | os.PathLike | None = None) -> str:
        """Submit a batch script file; returns the job id."""
        out = self.run("sbatch", "--parsable", *args, str(script), cwd=cwd).stdout.strip()
        return out.split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` fields (JobState, Restarts, Reason, StdOut, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)

    def wait_job(self, job_id: str, states=TERMINAL_STATES, timeout: float = 60) -> dict[str, str]:
        """Poll until the job's state is in `states`; returns its fields."""
        end = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > end:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout}s:\n{info}")
            time.sleep(0.1)

    def release_requeued(self, job_id: str, restarts: int = 1, timeout: float = 60) -> dict[str, str]:
        """Wait until a requeued job is pending again (Restarts>=restarts), then start it now.

        Slurm holds a requeued job ~120 s (Reason=BeginTime, the credential lifetime); `StartTime=now`
        skips that. Not within the requeue's own second, though: slurmd compares credential times
        in whole seconds and kills a relaunch whose credential is not newer than the revocation
        ("Job credential revoked", job FAILED). Hence the 2 s pause.
        """
        end = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if int(info.get("Restarts", 0)) >= restarts and info.get("JobState") == "PENDING":
                break
            if time.monotonic() > end:
                raise TimeoutError(f"job {job_id} not requeued after {timeout}s:\n{info}")
            time.sleep(0.1)
        time.sleep(2.0)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        return info
