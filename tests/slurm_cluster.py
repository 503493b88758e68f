"""A real single-node SLURM cluster on localhost, for the tests of the job scripts in slurm/.

Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` (``.ci/run`` installs them);
started as root by the test itself: no systemd, no cgroups, no accounting. Everything the
daemons write (munge key and socket, slurm state, spool and logs) lives in a temporary folder,
and the three daemons are stopped by their process ids when the context ends, whatever
happened, so nothing keeps running after a test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "munge")


def missing_tools() -> list[str]:
    """The SLURM and munge programs this harness needs that are not installed."""
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [tool for tool in DAEMONS + CLIENTS if shutil.which(tool, path=paths) is None]


def _tool(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_conf(root: Path, host: str, cpus: int, memory_mb: int) -> str:
    ctld_port, d_port = _free_port(), _free_port()
    return f"""\
ClusterName=llmfbntest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/socket
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU={memory_mb // cpus}
DependencyParameters=kill_invalid_depend
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """A running cluster: ``env`` (with ``SLURM_CONF``) for its commands, and helpers."""

    def __init__(self, root: Path, env: dict):
        self.root = root
        self.env = env

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([_tool(args[0]), *args[1:]], env=self.env, capture_output=True,
                              text=True, timeout=120, **kwargs)

    def wait(self, job_ids: list[str], timeout_s: float) -> None:
        """Until none of ``job_ids`` is pending or running."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            queued = self.run("squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)).stdout
            if not queued.strip():
                return
            time.sleep(2)
        raise TimeoutError(f"jobs {job_ids} still queued after {timeout_s} s:\n{queued}")

    def states(self, job_id: str) -> list[str]:
        """Final states of a job, one per array task."""
        shown = self.run("scontrol", "show", "job", job_id).stdout
        return re.findall(r"JobState=(\S+)", shown)


@contextlib.contextmanager
def local_slurm(cpus: int = 2, memory_mb: int = 6000):
    """Start munged, slurmctld and slurmd in a new temporary folder; yield a
    :class:`Cluster`; stop them and remove the folder."""
    # not under pytest's tmp_path: munged wants every folder above its socket searchable
    root = Path(tempfile.mkdtemp(prefix="llmfbn-slurm-"))
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for folder in (root, root / "munge"):   # munged wants its socket's folders searchable
        folder.chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, host, cpus, memory_mb))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    commands = [
        [_tool("munged"), "-F", f"--socket={root}/munge/socket", f"--key-file={key}",
         f"--log-file={root}/log/munged.log", f"--pid-file={root}/munge/munged.pid",
         f"--seed-file={root}/munge/seed"],
        [_tool("slurmctld"), "-D", "-c", "-f", str(conf)],
        [_tool("slurmd"), "-D", "-f", str(conf)],
    ]
    try:
        for command in commands:
            with open(root / "log" / f"{Path(command[0]).name}.out", "w") as log:
                procs.append(subprocess.Popen(command, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            if command[0].endswith("munged"):
                _wait_for(lambda: (root / "munge" / "socket").exists(), 30, "munged socket",
                          root, procs)
        cluster = Cluster(root, env)
        _wait_for(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T").stdout, 60,
                  "an idle node", root, procs)
        yield cluster
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(condition, timeout_s: float, what: str, root: Path, procs) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if condition():
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}"
                     for p in sorted((root / "log").glob("*")) if p.is_file())
    raise RuntimeError(f"no {what} (daemon exit codes: {[p.poll() for p in procs]})\n{logs}")
