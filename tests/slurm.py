"""A real one-node Slurm cluster for the tests, on loopback: munged, slurmctld and slurmd, as root.

Debian's packages (`apt-get install -y slurmctld slurmd slurm-client munge`)
run here without systemd or cgroups: each daemon runs in the foreground as a
child of the test process, with its key, configuration, state, spool, logs and
sockets under one temporary directory, on ports found free on 127.0.0.1.
Tasks are tracked by process (`proctrack/linuxproc`) and bound to their CPUs
by `task/affinity` (so `srun --cpus-per-task=1` really runs on one CPU); the
node has the machine's CPUs and `select/cons_tres` hands them out by core.
Slurm reserves ports for each step (`MpiParams=ports=...`), which srun passes
to its tasks as SLURM_STEP_RESV_PORTS.

Clients (srun, sbatch, sinfo, ...) find the cluster through `SLURM_CONF`:
`cluster.env` is the environment to run them with.
"""

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time

PACKAGES = "slurmctld slurmd slurm-client munge"
COMMANDS = ("munged", "slurmctld", "slurmd", "sinfo", "srun", "sbatch", "scontrol", "scancel", "squeue")
NODE = "localhost"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
# Ports reserved for job steps (one per task of a node, and one more): enough for the tests' steps.
STEP_PORTS = 32


def missing():
    """Why no cluster can start here (a sentence naming the fix), or None."""
    absent = [name for name in COMMANDS if shutil.which(name) is None]
    if absent:
        return f"no {', '.join(absent)} on PATH: apt-get install -y {PACKAGES}"
    if os.geteuid() != 0:
        return "Slurm's daemons run as root here (SlurmUser=root, SlurmdUser=root): run the tests as root"
    return None


class Cluster:
    """One node (`localhost`, 127.0.0.1, all the machine's CPUs) in one partition, `debug`, the default.

    Attributes:
      root: the directory holding everything the daemons write.
      env: os.environ with SLURM_CONF pointing at this cluster's slurm.conf.
    """

    def __init__(self, root):
        self.root = str(root)
        self.conf = os.path.join(self.root, "slurm.conf")
        # The tests' own environment is not a job's, even when they run inside one.
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("SLURM_")}
        self.env["SLURM_CONF"] = self.conf
        self._processes = []

    def start(self, timeout=30.0):
        """Writes the key and configuration, starts the daemons, and waits until the node is idle.

        Returns:
          seconds the start took.

        Raises:
          RuntimeError: a daemon exited or the node did not become idle within `timeout` s (with the logs).
        """
        started = time.monotonic()
        for name in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(self.root, name), mode=0o700, exist_ok=True)
        socket_dir = os.path.join(self.root, "socket")
        os.makedirs(socket_dir, mode=0o755, exist_ok=True)  # munged wants its socket's directory open to all.
        key = os.path.join(self.root, "munge", "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400), "wb") as f:
            f.write(os.urandom(1024))
        munge_socket = os.path.join(socket_dir, "munge.socket")
        ports = _free_ports(2 + STEP_PORTS)
        with open(self.conf, "w") as f:
            f.write(self._config(munge_socket, ports))
        munge = os.path.join(self.root, "munge")
        self._start(
            "munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
            f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed",
        )  # fmt: skip
        self._wait(lambda: os.path.exists(munge_socket), started + timeout, "munged made no socket")
        self._start("slurmctld", "-D", "-f", self.conf)
        self._start("slurmd", "-D", "-f", self.conf, "-N", NODE)
        self._wait(lambda: self.node_state() == "idle", started + timeout, "the node did not become idle")
        return time.monotonic() - started

    def node_state(self):
        """The node's state as `sinfo` says it ("idle", "mix", "alloc", "down*", ...), or "" when it cannot."""
        result = subprocess.run(
            ["sinfo", "--noheader", "--format=%t", f"--nodes={NODE}"], env=self.env, capture_output=True, text=True
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def run(self, *command, timeout=120, check=True, **kwargs):
        """Runs a client command (srun, sbatch, ...) against this cluster; returns its CompletedProcess.

        Raises:
          AssertionError: with check, a non-zero exit (its output and the daemons' logs in the message).
          subprocess.TimeoutExpired: it ran past `timeout` s.
        """
        kwargs.setdefault("env", self.env)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode:
            raise AssertionError(
                f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}\n{self.logs()}"
            )
        return result

    def run_job(self, *options, script, args=(), timeout=300, **kwargs):
        """Submits a batch script and waits for the job to end; returns its final state ("COMPLETED", ...).

        Polls the job's state every 0.2 s: `sbatch --wait` polls at growing intervals
        (seconds apart), which adds up to ~10 s to a 30 s job.

        Raises:
          AssertionError: sbatch refused the job.
          TimeoutError: the job did not end within `timeout` s (it is cancelled).
        """
        job = self.run("sbatch", "--parsable", *options, script, *args, **kwargs).stdout.strip().split(";")[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.run("scontrol", "show", "job", "--oneliner", job, check=False, env=self.env).stdout
            state = re.search(r"\bJobState=(\S+)", shown)
            if state and state.group(1) in FINAL_STATES:
                return state.group(1)
            time.sleep(0.2)
        subprocess.run(["scancel", job], env=self.env, capture_output=True, timeout=30)
        raise TimeoutError(f"job {job} ({script}) did not end within {timeout} s\n{self.logs()}")

    def logs(self):
        """The last lines of every daemon's log, for failure messages."""
        lines = []
        for name in sorted(os.listdir(os.path.join(self.root, "log"))):
            with open(os.path.join(self.root, "log", name), errors="replace") as f:
                lines += [f"--- {name}"] + f.read().splitlines()[-15:]
        return "\n".join(lines)

    def stop(self, timeout=20.0):
        """Cancels what is left of the jobs, then stops the daemons this object started, by process group.

        The jobs' processes (slurmstepd and the tasks, in sessions of their own)
        end with the jobs: slurmd kills them when the jobs are cancelled, so the
        daemons stay up until no job is left, or `timeout` s.
        """
        if self._processes and self.node_state():
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True, timeout=30)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.run("squeue", "--noheader", check=False, timeout=30).stdout:
                time.sleep(0.2)
        for process in reversed(self._processes):  # slurmd, slurmctld, then munged.
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):  # What it left in its group goes too.
                os.killpg(process.pid, signal.SIGKILL)
        self._processes = []

    def _start(self, *command):
        log = open(os.path.join(self.root, "log", f"{command[0]}.out"), "wb")
        with log:
            self._processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )
            )

    def _wait(self, ready, deadline, what):
        while not ready():
            exited = [p.args[0] for p in self._processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} ({', '.join(exited) or 'none'} exited)\n{self.logs()}")
            time.sleep(0.1)

    def _config(self, munge_socket, ports):
        root = self.root
        return "\n".join(
            [
                "ClusterName=tests",
                f"SlurmctldHost={NODE}(127.0.0.1)",
                f"SlurmctldPort={ports[0]}",
                f"SlurmdPort={ports[1]}",
                f"MpiParams=ports={ports[2]}-{ports[-1]}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/log/slurmctld.log",
                f"SlurmdLogFile={root}/log/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/affinity",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "MpiDefault=none",
                "ReturnToService=2",
                "KillWait=5",  # Seconds between SIGTERM and SIGKILL when a job is cancelled (Slurm's default: 30).
                f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
                f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )


def _free_ports(count, low=20000, high=60000, tries=50):
    """`count` consecutive ports that nothing listens on at 127.0.0.1 now (Slurm's step ports need a range)."""
    for _ in range(tries):
        first = random.randrange(low, high - count)
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return list(range(first, first + count))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")
