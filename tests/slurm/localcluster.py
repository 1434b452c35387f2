#!/usr/bin/env python3
"""A throw-away single-node SLURM cluster on localhost, for testing the slurm profile.

Installs Debian's ``slurm-wlm`` and ``munge`` when missing (root + apt-get), writes a
self-contained configuration into one directory (munge key and socket, slurm.conf, spool,
state, logs: nothing under /etc or /run is touched), and starts ``munged``, ``slurmctld`` and
``slurmd`` in the foreground as child processes whose pids are recorded in
``<dir>/pids.json``. ``stop`` ends exactly those pids (TERM, then KILL) and nothing else.

The node has no GPU (no GRES), 2 CPUs (or fewer, as the machine has) and a long
``MinJobAge``, so that ``squeue`` still reports finished jobs: a bare cluster has no
accounting database, and the executor plugin checks job states with
``--slurm-status-command squeue``.

    python tests/slurm/localcluster.py start --dir /tmp/kryflow-slurm   # prints the env to export
    export SLURM_CONF=/tmp/kryflow-slurm/slurm.conf PATH=/tmp/kryflow-slurm/bin:$PATH
    sinfo; squeue
    python tests/slurm/localcluster.py stop --dir /tmp/kryflow-slurm

Used by tests/test_slurm.py through :func:`start` / :meth:`LocalCluster.stop`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = Path("/usr/sbin")
PARTITION = "debug"


class ClusterUnavailable(RuntimeError):
    """The local cluster cannot be set up here (not root, no apt-get, daemons do not start)."""


def binaries_present() -> bool:
    return all((SBIN / d).exists() for d in DAEMONS) and all(
        shutil.which(c) for c in ("sbatch", "squeue", "sinfo", "scontrol")
    )


def install() -> None:
    """Install slurm-wlm and munge with apt-get when they are missing (root only)."""
    if binaries_present():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurm-wlm/munge are not installed and this is not root (apt-get needs root)")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("slurm-wlm/munge are not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    if not binaries_present():
        raise ClusterUnavailable(f"{' '.join(PACKAGES)} installed but the daemons/commands are missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, cpus: int, real_memory_mb: int) -> dict:
    """slurm.conf (+ munge key) for one GPU-less node named after this host; returns the paths."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for sub in ("munge", "spool", "state", "log", "run", "bin"):
        (root / sub).mkdir(exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = _free_port(), _free_port()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""# kryflow test cluster (tests/slurm/localcluster.py): one node, no GPU, no accounting
ClusterName=kryflowtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/slurmd-%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# finished jobs stay visible to squeue for an hour (status checks without sacct)
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    # Inside a job the jobstep plugin drops every SLURM_* variable (SLURM_CONF too) before its
    # `srun`, which then looks for /etc/slurm/slurm.conf. A real cluster has its configuration
    # there; this one leaves /etc alone and puts an `srun` that knows the file first on PATH.
    srun = root / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun", path="/usr/local/bin:/usr/bin:/bin") or "/usr/bin/srun"} "$@"\n')
    srun.chmod(0o755)
    return {"conf": str(conf), "host": host, "key": str(key), "socket": str(root / "munge" / "munge.socket")}


@dataclass
class LocalCluster:
    root: Path
    conf: Path
    host: str
    pids: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)

    @property
    def env(self) -> dict:
        """What a client (sbatch, squeue, snakemake) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.root / 'bin'}:{os.environ.get('PATH', '')}"}

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")):
            out.append(f"--- {p}\n{p.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then end exactly the daemons it started, by pid (TERM, then KILL)."""
        if self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            try:
                subprocess.run(["scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name, "--full"],
                               env={**os.environ, **self.env}, capture_output=True, timeout=30)
                time.sleep(1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _stop_pids(self.pids)
        for proc in self.procs:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        pidfile = self.root / "pids.json"
        if pidfile.exists():
            pidfile.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as ended
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _stop_pids(pids: dict, grace: float = 15.0) -> None:
    # reverse start order: slurmd, slurmctld, then munged
    order = [n for n in reversed(DAEMONS) if n in pids]
    for name in order:
        try:
            os.kill(pids[name], signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace
        while _alive(pids[name]) and time.time() < deadline:
            time.sleep(0.2)
        if _alive(pids[name]):
            try:
                os.kill(pids[name], signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_for(predicate, timeout: float, what: str, cluster: LocalCluster) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        for name, proc in zip(cluster.pids, cluster.procs):
            if proc.poll() is not None:
                raise ClusterUnavailable(f"{name} exited ({proc.returncode}) while waiting for {what}\n{cluster.log_tail()}")
        time.sleep(0.5)
    raise ClusterUnavailable(f"timed out waiting for {what}\n{cluster.log_tail()}")


def start(root: Path, cpus: int | None = None, real_memory_mb: int = 8000) -> LocalCluster:
    """Write the configuration under ``root`` and start munged, slurmctld, slurmd (pids kept)."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("the local SLURM cluster runs its daemons as root (SlurmUser=root); not root here")
    install()
    root = Path(root).resolve()
    cpus = cpus or min(2, os.cpu_count() or 1)
    paths = write_config(root, cpus, real_memory_mb)
    cluster = LocalCluster(root=root, conf=Path(paths["conf"]), host=paths["host"])
    env = {**os.environ, "SLURM_CONF": paths["conf"]}
    log = root / "log"
    commands = {
        "munged": [str(SBIN / "munged"), "--foreground", "--force", f"--socket={paths['socket']}",
                   f"--key-file={paths['key']}", f"--log-file={log / 'munged.log'}",
                   f"--pid-file={root / 'run' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}"],
        # -i: ignore state left by an earlier run in the same directory
        "slurmctld": [str(SBIN / "slurmctld"), "-D", "-i", "-f", paths["conf"]],
        "slurmd": [str(SBIN / "slurmd"), "-D", "-f", paths["conf"], "-N", paths["host"]],
    }
    try:
        for name, cmd in commands.items():
            out = open(log / f"{name}.stdout", "w")
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            cluster.procs.append(proc)
            cluster.pids[name] = proc.pid
            (root / "pids.json").write_text(json.dumps(cluster.pids))
            if name == "munged":
                _wait_for(lambda: Path(paths["socket"]).exists(), 20, "the munge socket", cluster)
            elif name == "slurmctld":
                _wait_for(lambda: _run(["scontrol", "ping"], env).returncode == 0
                          and "UP" in _run(["scontrol", "ping"], env).stdout, 60, "slurmctld", cluster)

        def node_idle() -> bool:
            proc = _run(["sinfo", "-h", "-N", "-o", "%T"], env)
            return proc.returncode == 0 and proc.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated")

        _wait_for(node_idle, 60, "the node to become idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["install", "start", "stop", "status"])
    ap.add_argument("--dir", default="/tmp/kryflow-slurm", help="configuration, state and logs [%(default)s]")
    ap.add_argument("--cpus", type=int, default=None)
    ap.add_argument("--real-memory-mb", type=int, default=8000)
    args = ap.parse_args(argv)
    root = Path(args.dir).resolve()
    pidfile = root / "pids.json"
    try:
        if args.action == "install":
            install()
        elif args.action == "start":
            if pidfile.exists() and any(_alive(p) for p in json.loads(pidfile.read_text()).values()):
                print(f"already running (pids in {pidfile}); stop it first", file=sys.stderr)
                return 1
            cluster = start(root, args.cpus, args.real_memory_mb)
            for proc in cluster.procs:  # keep running after this process exits
                proc.returncode = 0
            print(f"started {cluster.pids} (recorded in {pidfile})")
            print(f"export SLURM_CONF={cluster.conf} PATH={cluster.root / 'bin'}:$PATH")
        elif args.action == "stop":
            if not pidfile.exists():
                print(f"nothing recorded in {pidfile}")
                return 0
            pids = json.loads(pidfile.read_text())
            _stop_pids(pids)
            pidfile.unlink()
            print(f"stopped {pids}")
        else:
            env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
            print(_run(["sinfo"], env).stdout + _run(["squeue"], env).stdout)
    except ClusterUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
