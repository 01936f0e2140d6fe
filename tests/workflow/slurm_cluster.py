"""A real single-node SLURM cluster on localhost, for the tests that submit through it.

munged, slurmctld and slurmd (Debian's ``munge`` and ``slurm-wlm``) run in the
foreground as children of the test, with every file in one temporary folder:
key, sockets, spool, state, logs and a generated ``slurm.conf``. The node offers
16 CPUs, 32 GB and 4 generic GPUs (``gres/gpu``) whose device files are
symlinks to ``/dev/null``: SLURM needs character devices to count and assign
GPUs, and then sets ``CUDA_VISIBLE_DEVICES`` for each job as on a real GPU node.
No accounting daemon (it needs a database server): job facts come from
``scontrol show job``, and finished jobs stay listed for an hour (MinJobAge).

Root is needed (slurmd launches jobs as their owner). :func:`start_cluster`
raises :class:`ClusterUnavailableError` with the reason when SLURM cannot start here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
NODE = "warpbio-node"
PARTITION = "warpbio"
NODE_CPUS = 16
NODE_MEMORY_MB = 32000
NODE_GPUS = 4


class ClusterUnavailableError(RuntimeError):
    """SLURM cannot run on this machine; the message says why."""


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows, as the key=value fields of scontrol."""
        done = self.run("scontrol", "show", "job", "--oneliner", check=False)
        if "No jobs in the system" in done.stdout + done.stderr:
            return []
        return [
            dict(re.findall(r"(\S+?)=(\S*)", line)) for line in done.stdout.splitlines() if line
        ]

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / "log" / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def missing_requirements() -> str | None:
    """Why SLURM cannot start here, or None."""
    if os.geteuid() != 0:
        return "needs root (slurmd launches jobs as their owner); CI runs as root"
    absent = [name for name in (*DAEMONS, *CLIENTS) if not _which(name)]
    if absent:
        return (
            f"{', '.join(absent)} not installed; install Debian's packages: "
            "apt-get install --no-install-recommends slurm-wlm munge"
        )
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_config(root: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    devices = root / "dev"
    devices.mkdir()
    for index in range(NODE_GPUS):
        (devices / f"nvidia{index}").symlink_to("/dev/null")
    conf = root / "etc"
    conf.mkdir()
    (conf / "gres.conf").write_text(
        f"NodeName={NODE} Name=gpu File={devices}/nvidia[0-{NODE_GPUS - 1}]\n"
    )
    settings = {
        "ClusterName": "warpbio-test",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge' / 'munge.socket'}",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "log" / "slurmctld.log",
        "SlurmdLogFile": root / "log" / "slurmd.log",
        # no cgroups: they need a writable cgroup tree, which containers often lack
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "MpiDefault": "none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "SchedulerType": "sched/backfill",
        "ReturnToService": 2,
        "MinJobAge": 3600,  # finished jobs stay in scontrol/squeue for the checks
        "SlurmdParameters": "config_overrides",  # the node may claim more than it has
        "GresTypes": "gpu",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(
        f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={NODE_CPUS} "
        f"RealMemory={NODE_MEMORY_MB} Gres=gpu:{NODE_GPUS} State=UNKNOWN"
    )
    lines.append(f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP")
    path = conf / "slurm.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _srun_shim(root: Path, slurm_conf: Path) -> Path:
    """``srun`` that finds this cluster's config.

    snakemake-executor-plugin-slurm-jobstep (0.6.1) strips every SLURM_* variable,
    SLURM_CONF included, before its nested ``srun``; a cluster whose config sits
    in /etc/slurm needs no shim, this temporary one does.
    """
    folder = root / "bin"
    folder.mkdir()
    shim = folder / "srun"
    shim.write_text(f'#!/bin/sh\nSLURM_CONF={slurm_conf} exec {_which("srun")} "$@"\n')
    shim.chmod(0o755)
    return folder


def _wait(condition, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in cluster.processes:
            if process.poll() is not None:
                raise ClusterUnavailableError(
                    f"{process.args[0]} exited ({process.returncode}) while waiting for "
                    f"{what}:\n{cluster.logs()}"
                )
        if condition():
            return
        time.sleep(0.2)
    raise ClusterUnavailableError(f"timed out waiting for {what}:\n{cluster.logs()}")


def start_cluster(root: Path) -> SlurmCluster:
    """munged + slurmctld + slurmd on localhost, every file under ``root``."""
    reason = missing_requirements()
    if reason:
        raise ClusterUnavailableError(reason)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for name in ("munge", "state", "spool", "log"):
        (root / name).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    slurm_conf = _write_config(root)
    env = dict(os.environ)
    env["SLURM_CONF"] = str(slurm_conf)
    env["PATH"] = f"{_srun_shim(root, slurm_conf)}:{env.get('PATH', '')}"
    cluster = SlurmCluster(root=root, env=env)
    munge = root / "munge"
    commands = {
        "munged": [
            _which("munged"),
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={munge / 'munge.socket'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        ],
        "slurmctld": [_which("slurmctld"), "-D", "-i", "-f", str(slurm_conf)],
        "slurmd": [_which("slurmd"), "-D", "-N", NODE, "-f", str(slurm_conf)],
    }
    try:
        for name in DAEMONS:
            process = subprocess.Popen(
                commands[name],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(root / "log" / f"{name}.stderr").open("w"),
                start_new_session=True,  # a Ctrl-C of the tests reaches us, not them
            )
            cluster.processes.append(process)
            if name == "munged":
                _wait((munge / "munge.socket").exists, 20, "the munge socket", cluster)
        _wait(lambda: _node_idle(cluster), 60, f"node {NODE} to become idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_idle(cluster: SlurmCluster) -> bool:
    done = cluster.run("sinfo", "--noheader", "--Node", "--format=%t", check=False)
    return done.returncode == 0 and done.stdout.strip() == "idle"
