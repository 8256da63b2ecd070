"""The CPUs this process may use, the Slurm job step it is one task of, and that task's GPUs.

Every "one per core" of the three programs (Beam's local workers, the sampler's
threads, the trainer's input threads) counts `usable_cpus()`, never the node's
cores: a process in a 1-CPU Slurm allocation, under `taskset`, or in a
container with a CPU quota that started one worker per core of the node would
run them all on its share. `slurm_step()` reads the Slurm variables of a job
step (what `srun` sets in each task it starts), for the commands that split
their work across a step's tasks; `bind_task_gpus()` gives each task of a node
its share of the GPUs they all see, one rule for the trainer and the sampler.

Sources: sched_getaffinity(2); the Linux kernel's cgroup v2 documentation
(Documentation/admin-guide/cgroup-v2.rst, "cpu.max") and v1 CFS bandwidth
control (Documentation/scheduler/sched-bwc.rst, "cpu.cfs_quota_us",
"cpu.cfs_period_us"); proc(5) for /proc/self/cgroup and /proc/self/mountinfo;
Slurm's srun(1) and sbatch(1), "OUTPUT ENVIRONMENT VARIABLES" (and srun(1)'s
--gpu-bind); CUDA's CUDA_VISIBLE_DEVICES (CUDA C Programming Guide, "CUDA
Environment Variables").
"""

import dataclasses
import math
import os
import re
import shutil
import subprocess

PROC_SELF = "/proc/self"


def usable_cpus(environ=None, proc_self=PROC_SELF):
    """The number of CPUs this process may use: at least 1.

    The smallest of: the CPUs of its affinity mask (`os.sched_getaffinity(0)`:
    `taskset`, cpusets, Slurm's task/affinity and task/cgroup plugins), its
    cgroup's CPU bandwidth quota rounded up (cgroup v2 `cpu.max`, v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`, the tightest of its cgroup and
    their ancestors: a container's `--cpus`), and `SLURM_CPUS_PER_TASK` inside
    a Slurm job step (`srun --cpus-per-task`; a cluster without a binding
    plugin states the allocation only there). Where none of these says
    anything, `os.cpu_count()`.

    Args:
      environ: the environment to read Slurm's variables from (default os.environ).
      proc_self: /proc/self, where the cgroup files are found (tests point it elsewhere).

    Returns:
      int >= 1.
    """
    environ = os.environ if environ is None else environ
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]
    counts.append(cgroup_cpu_limit(proc_self))
    if "SLURM_STEP_ID" in environ:  # The batch script of `sbatch -n 2 -c 1` may use both CPUs.
        counts.append(_positive_int(environ.get("SLURM_CPUS_PER_TASK")))
    return max(1, min(count for count in counts if count))


def cgroup_cpu_limit(proc_self=PROC_SELF):
    """The CPUs that this process's cgroup CPU quota allows (rounded up), or None without a quota.

    Reads the process's cgroups (`/proc/self/cgroup`), finds where each
    hierarchy is mounted (`/proc/self/mountinfo`), and takes the tightest quota
    of the cgroup and its ancestors up to the mount: cgroup v2 `cpu.max`
    ("QUOTA PERIOD" in microseconds, or "max PERIOD"), v1 `cpu.cfs_quota_us`
    (-1: none) over `cpu.cfs_period_us`. Files that cannot be read count as no
    quota.

    Returns:
      int >= 1, or None.
    """
    try:
        with open(os.path.join(proc_self, "cgroup")) as f:
            memberships = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
        with open(os.path.join(proc_self, "mountinfo")) as f:
            mounts = [_mount(line) for line in f]
    except OSError:
        return None
    limits = []
    for _, controllers, path in memberships:
        if controllers == "":  # cgroup v2: "0::/path".
            for root, point, fstype, _ in mounts:
                if fstype == "cgroup2":
                    limits.append(_tightest(_cgroup_dirs(root, point, path), _v2_cpus))
        elif "cpu" in controllers.split(","):
            for root, point, fstype, options in mounts:
                if fstype == "cgroup" and "cpu" in options:
                    limits.append(_tightest(_cgroup_dirs(root, point, path), _v1_cpus))
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


@dataclasses.dataclass(frozen=True)
class SlurmStep:
    """This process's place in a Slurm job step (what `srun` sets in each task it starts).

    Attributes:
      task: the task's rank in the step, in [0, tasks) (`SLURM_PROCID`).
      tasks: the step's tasks on all its nodes (`SLURM_STEP_NUM_TASKS`).
      local_task: the task's rank on its node, in [0, node_tasks) (`SLURM_LOCALID`).
      node_tasks: the step's tasks on this node (`SLURM_STEP_TASKS_PER_NODE`, e.g. "2(x3),1",
        at this node's index `SLURM_NODEID`).
      step: "JOB_ID.STEP_ID", for messages.
    """

    task: int
    tasks: int
    local_task: int
    node_tasks: int
    step: str


def slurm_step(environ=None):
    """The Slurm job step this process is a task of, or None outside one.

    A batch script is not a step of several tasks: `sbatch -n 4` runs its
    script once (with `SLURM_NTASKS=4` but no `SLURM_STEP_NUM_TASKS`); `srun`
    inside it starts the step's tasks.

    Args:
      environ: the environment to read (default os.environ).

    Returns:
      SlurmStep, or None where `SLURM_STEP_NUM_TASKS` or `SLURM_PROCID` is not set.

    Raises:
      ValueError: Slurm variables that are set but malformed, or a rank outside [0, tasks).
    """
    environ = os.environ if environ is None else environ
    if "SLURM_STEP_NUM_TASKS" not in environ or "SLURM_PROCID" not in environ:
        return None
    try:
        tasks, task = int(environ["SLURM_STEP_NUM_TASKS"]), int(environ["SLURM_PROCID"])
        local_task = int(environ.get("SLURM_LOCALID", "0"))
        per_node = _expand_tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE", str(tasks)))
        node_tasks = per_node[min(int(environ.get("SLURM_NODEID", "0")), len(per_node) - 1)]
    except (ValueError, IndexError):
        raise ValueError(
            "malformed Slurm step variables: SLURM_STEP_NUM_TASKS="
            f"{environ.get('SLURM_STEP_NUM_TASKS')!r}, SLURM_PROCID={environ.get('SLURM_PROCID')!r}, "
            f"SLURM_STEP_TASKS_PER_NODE={environ.get('SLURM_STEP_TASKS_PER_NODE')!r}"
        ) from None
    if not (0 <= task < tasks and 0 <= local_task < node_tasks):
        raise ValueError(
            f"Slurm says task {task} of {tasks} (local task {local_task} of {node_tasks} on this node): out of range"
        )
    step = f"{environ.get('SLURM_JOB_ID', '?')}.{environ.get('SLURM_STEP_ID', '?')}"
    return SlurmStep(task=task, tasks=tasks, local_task=local_task, node_tasks=node_tasks, step=step)


def slurm_array_task(environ=None):
    """(K, N): this job's place among the N tasks of its Slurm job array (sbatch(1), "--array"), or None outside one.

    Raises:
      ValueError: malformed array variables, or task ids that are not one evenly spaced range (--array=0-7 or
        0-14:2; a list such as 1,5,9 gives no task its place).
    """
    environ = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX")
    try:
        task, low, high = (int(environ[name]) for name in names)
        ids = range(low, high + 1, int(environ.get("SLURM_ARRAY_TASK_STEP", "1")))
        count = int(environ.get("SLURM_ARRAY_TASK_COUNT", len(ids)))
    except (KeyError, ValueError):
        raise ValueError(
            "malformed Slurm job array variables: " + ", ".join(f"{n}={environ.get(n)!r}" for n in names)
        ) from None
    if task not in ids or count != len(ids):
        raise ValueError(
            f"job array task {task} of {count} tasks from {low} to {high}: the ids are not one evenly spaced "
            "range (--array=0-7 or 0-14:2), so the task's share of the work is unknown: pass --shard K/N (the "
            "sampler's) instead"
        )
    return ids.index(task), len(ids)


def process_stat(pid):
    """The fields of /proc/PID/stat after the command name (proc(5): the list starts at field 3, the state), or
    None when there is no such process (or no /proc)."""
    try:
        with open(f"{PROC_SELF.rsplit('/', 1)[0]}/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces: the fields after its last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def visible_gpus(environ=None):
    """The GPUs this process sees, read without initialising them.

    CUDA_VISIBLE_DEVICES's entries where it is set (Slurm sets it to the GPUs
    it allocates; entries may be indices, UUIDs or MIG ids; empty: none), else
    the indices of the GPUs `nvidia-smi --list-gpus` lists on this machine
    (as TensorFlow's SlurmClusterResolver counts them), else none.

    Args:
      environ: the environment to read (default os.environ).

    Returns:
      list of str, CUDA_VISIBLE_DEVICES entries; [] without GPUs.
    """
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):  # A driver that hangs or fails: no GPU to count.
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in listing.splitlines()))]


def bind_task_gpus(environ=None, exclusive=False):
    """Narrows CUDA_VISIBLE_DEVICES to this task's share of the GPUs the tasks of its node all see.

    `srun -n 4` on a node with 4 GPUs allocated (`--gres=gpu:4`) shows every
    task all 4 (`visible_gpus`) unless Slurm binds them (`--gpus-per-task`,
    which sets SLURM_GPUS_PER_TASK, or `--gpu-bind` other than none,
    SLURM_GPU_BIND). Then task SLURM_LOCALID of the node's T tasks takes the
    SLURM_LOCALID-th contiguous block of len // T of them; with fewer GPUs than
    tasks, GPU SLURM_LOCALID mod len (shared), unless `exclusive`. What Slurm
    allocated is kept as it names it (CUDA_VISIBLE_DEVICES=4,5,6,7: task 1 of 2
    gets 6,7). Outside a step of several tasks on the node, or where Slurm
    bound the GPUs, nothing changes. Must run before TensorFlow (or anything
    using CUDA) initialises its GPUs: the trainer and the sampler both call it.

    Args:
      environ: the environment (default os.environ), changed in place.
      exclusive: refuse to share a GPU between tasks (the trainer's workers).

    Returns:
      list of str: the GPUs this task uses now (CUDA_VISIBLE_DEVICES entries); [] without GPUs.

    Raises:
      ValueError: `exclusive` and fewer GPUs than the node's tasks; malformed Slurm variables (`slurm_step`).
    """
    environ = os.environ if environ is None else environ
    step = slurm_step(environ)
    visible = visible_gpus(environ)
    bound = "SLURM_GPUS_PER_TASK" in environ or environ.get("SLURM_GPU_BIND", "none").split(",")[-1] != "none"
    if step is None or step.node_tasks < 2 or not visible or bound:
        return visible
    share = len(visible) // step.node_tasks
    if not share and exclusive:
        raise ValueError(
            f"{step.node_tasks} tasks of Slurm step {step.step} share {len(visible)} GPU(s) on a node: "
            "start at most one task per GPU (srun --ntasks-per-node)"
        )
    if share:
        mine = visible[step.local_task * share : (step.local_task + 1) * share]
    else:
        mine = [visible[step.local_task % len(visible)]]
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return mine


def _expand_tasks_per_node(text):
    """Slurm's tasks-per-node list ("2(x3),1") -> [2, 2, 2, 1]. Raises ValueError if malformed."""
    counts = []
    for part in text.split(","):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
    return counts


def _positive_int(text):
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _mount(line):
    """(root, mount point, file system type, super options) of a /proc/self/mountinfo line (proc(5))."""
    fields, _, rest = line.partition(" - ")
    fields, rest = fields.split(), rest.split()
    options = set(rest[2].split(",")) if len(rest) > 2 else set()
    return _unescape(fields[3]), _unescape(fields[4]), rest[0] if rest else "", options


def _unescape(text):
    """mountinfo's octal escapes (a space is \\040) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _cgroup_dirs(root, point, path):
    """The directories of cgroup `path` and its ancestors under a hierarchy mounted at `point` from `root`.

    A container may see its own cgroup as the mount's root while /proc/self/cgroup
    names the host's path: then only the mount point itself.
    """
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        return [point]
    dirs = [point]
    for part in [] if relative == "." else relative.split("/"):
        dirs.append(os.path.join(dirs[-1], part))
    return dirs


def _tightest(dirs, cpus_of):
    limits = [cpus_of(d) for d in dirs]
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def _read(path):
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def _v2_cpus(directory):
    values = _read(os.path.join(directory, "cpu.max"))
    if len(values) != 2 or values[0] == "max":
        return None
    return _quota_cpus(values[0], values[1])


def _v1_cpus(directory):
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    if len(quota) != 1 or len(period) != 1:
        return None
    return _quota_cpus(quota[0], period[0])


def _quota_cpus(quota, period):
    quota, period = _positive_int(quota), _positive_int(period)
    return max(1, math.ceil(quota / period)) if quota and period else None
