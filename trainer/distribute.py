"""The one place tf.distribute strategies are made, and what the rest needs to know about them."""

import contextlib
import json
import os
import posixpath
import re

from pipelines import contract
from trainer import compat

# Without ports reserved by Slurm for the step (SLURM_STEP_RESV_PORTS), a step's workers listen from a port
# derived from its job and step ids: PORT_BASE + PORT_STRIDE * ((16 * job + step) mod PORT_SLOTS) + local task.
PORT_BASE, PORT_STRIDE, PORT_SLOTS = 20000, 32, 1000


def get_strategy(name="auto", tpu=None):
    """The one place strategies are made.

    auto: TPU when --tpu is given; TF_CONFIG naming several workers, or a Slurm
    job step of several tasks (`srun -n N`), -> MultiWorkerMirroredStrategy;
    several GPUs -> MirroredStrategy; else one device (OneDeviceStrategy on the
    first GPU; TensorFlow's default strategy on a CPU). Under Slurm without
    TF_CONFIG the cluster comes from TensorFlow's SlurmClusterResolver
    (`slurm_cluster_resolver`). Whether this process is one of several copies
    that would each train their own model is `check_single_copy`, which
    `trainer.task` asks once, before anything is written.

    Raises:
      ValueError: Slurm's variables form no cluster.
    """
    import tensorflow as tf

    step = contract.slurm_step()
    slurm_cluster = step is not None and step.tasks > 1 and "TF_CONFIG" not in os.environ
    if name == "auto":
        if tpu:
            name = "tpu"
        elif _tf_config_workers() > 1 or slurm_cluster:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        resolver = slurm_cluster_resolver() if slurm_cluster else None
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return compat.mirrored_strategy([d.name for d in (gpus or tf.config.list_logical_devices("CPU"))])
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    # On a CPU, TensorFlow's default strategy: OneDeviceStrategy ran every kernel slower there
    # (BENCHMARKS.md, "Training", "OneDeviceStrategy on a CPU").
    return tf.distribute.get_strategy()


def check_single_copy(strategy_name, tpu=None, environ=None):
    """Refuses to run as one of several copies that would each train their own model into one job dir.

    `srun -n N python -m trainer.task ...` starts N copies of the command (the
    tasks of one Slurm job step). They train one model together only under a
    multi-worker strategy spanning all N (`--strategy auto` or `multi_worker`,
    with the cluster from Slurm, or from a TF_CONFIG naming N workers); any
    other strategy would make N independent trainings that all write
    checkpoints and an export into the same --job_dir; so would `--strategy
    auto` with --tpu, which makes a TPU strategy in each. A batch script
    (`sbatch -n N`) runs once and is not refused.

    Args:
      strategy_name: --strategy.
      tpu: --tpu (under --strategy auto, a TPU strategy).
      environ: the environment to read (default os.environ).

    Raises:
      ValueError: one line naming the step, the strategy and the fix.
    """
    environ = os.environ if environ is None else environ
    step = contract.slurm_step(environ)
    if step is None or step.tasks == 1:
        return
    copies = f"{step.tasks} copies of this command run as the tasks of Slurm step {step.step} (srun -n {step.tasks})"
    if strategy_name not in ("auto", "multi_worker") or (strategy_name == "auto" and tpu):
        given, fix = f"--strategy {strategy_name}", "use --strategy auto"
        if strategy_name == "auto":
            given, fix = f"{given} with --tpu", "drop --tpu"
        raise ValueError(
            f"{copies}, and {given} would train {step.tasks} separate models into one --job_dir: "
            f"{fix} (one multi-worker training across the tasks), or srun -n 1"
        )
    workers = _tf_config_workers(environ)
    if "TF_CONFIG" in environ and workers != step.tasks:
        raise ValueError(
            f"{copies}, but TF_CONFIG names {workers} worker(s): they would not train as one job; "
            "unset TF_CONFIG to take the cluster from Slurm, or start one task per worker it names"
        )


def slurm_cluster_resolver(environ=None):
    """TensorFlow's SlurmClusterResolver for this Slurm job step, set up for its GPUs (or none).

    The cluster: one worker per task of the step, on the step's nodes
    (SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE), ranked by SLURM_PROCID,
    worker k of a node listening on port base + k: the first port Slurm reserved
    for the step (SLURM_STEP_RESV_PORTS: `srun --resv-ports`, or a cluster with
    `MpiParams=ports=...`), else one derived from the job and step ids
    (`slurm_port_base`).

    GPUs, set before TensorFlow initialises them, by the rule the sampler
    follows too (`contract.bind_task_gpus`): a task Slurm bound to its own GPUs
    uses those; otherwise the tasks of a node each take their share of the
    GPUs they see; a task that sees none trains on its CPUs. The resolver never
    sets CUDA_VISIBLE_DEVICES itself (`auto_set_gpu=False`): it would number a
    node's GPUs from 0 whatever Slurm allocated, and set it again at every
    `cluster_spec()`.

    Args:
      environ: the environment to read (default os.environ; CUDA_VISIBLE_DEVICES is set there); the resolver
        itself reads os.environ.

    Returns:
      a tf.distribute.cluster_resolver.ClusterResolver: the SlurmClusterResolver, or on
      CPU-only tasks a SimpleClusterResolver of its cluster with no GPUs.

    Raises:
      ValueError: Slurm's variables form no cluster, or a node has fewer GPUs than tasks.
    """
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    step = contract.slurm_step(environ)
    if step is None:
        raise ValueError("not a task of a Slurm job step: SLURM_STEP_NUM_TASKS and SLURM_PROCID are not set")
    port = slurm_port_base(environ)
    gpus = len(contract.bind_task_gpus(environ, exclusive=True))
    # GPUs per node as the step's tasks times the task's: enough for the busiest node (its cluster_spec steps
    # through a node's GPUs by gpus_per_task, one task each). It cannot give a task 0 GPUs: a CPU-only task's
    # resolver counts one per task, and its cluster is handed on with none.
    per_task = max(gpus, 1)
    try:
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port, gpus_per_node=per_task * step.tasks, gpus_per_task=per_task, auto_set_gpu=False
        )
        cluster = resolver.cluster_spec()  # Sets task_type and task_id.
    except (RuntimeError, KeyError) as e:
        raise ValueError(
            f"Slurm says {step.tasks} tasks in step {step.step}, but TensorFlow's SlurmClusterResolver formed no "
            f"cluster from its variables ({e}): run under srun, or with --strategy one_device in a single task"
        ) from None
    if gpus:
        return resolver
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, task_type=resolver.task_type, task_id=resolver.task_id, num_accelerators={"GPU": 0},
        rpc_layer=resolver.rpc_layer,
    )  # fmt: skip


def slurm_port_base(environ=None):
    """The port the first worker of a node listens on, for a Slurm job step.

    The first port of SLURM_STEP_RESV_PORTS ("12000-12003"), which Slurm reserves
    for the step on every node (`srun --resv-ports`, or `MpiParams=ports=...` in
    slurm.conf) when it holds one per task of the node; else PORT_BASE +
    PORT_STRIDE x ((16 x job id + step id) mod PORT_SLOTS), distinct for the
    steps running at one time unless their ids collide modulo PORT_SLOTS.

    Returns:
      int port.
    """
    environ = os.environ if environ is None else environ
    step = contract.slurm_step(environ)
    node_tasks = step.node_tasks if step else 1
    reserved = re.match(r"(\d+)(?:-(\d+))?", environ.get("SLURM_STEP_RESV_PORTS", ""))
    if reserved and int(reserved.group(2) or reserved.group(1)) - int(reserved.group(1)) + 1 >= node_tasks:
        return int(reserved.group(1))
    job, step_id = (int(environ.get(name, "0") or 0) for name in ("SLURM_JOB_ID", "SLURM_STEP_ID"))
    return PORT_BASE + PORT_STRIDE * ((16 * job + step_id) % PORT_SLOTS)


def _tf_config_workers(environ=None):
    environ = os.environ if environ is None else environ
    cluster = json.loads(environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def write_dir(job_dir, strategy):
    """The chief writes into job_dir; other workers (which must also save, in step) under job_dir/workers/."""
    if is_chief(strategy):
        return job_dir
    resolver = strategy.cluster_resolver
    return posixpath.join(job_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def remove_worker_files(job_dir, strategy):
    """Removes what a worker other than the chief wrote (its `write_dir`), and job_dir/workers/ once empty.

    What those workers save (in step with the chief, as TensorFlow's
    collectives require) is scratch. Called by every worker when training has
    ended, and when it starts, before anything is restored: TensorFlow's
    PreemptionCheckpointHandler restores the latest checkpoint in the
    directory its manager saves to, which on a worker is this scratch, so a
    killed run's would replace the chief's checkpoint on that worker. Does
    nothing on the chief. Local paths and gs:// (through tf.io.gfile).
    """
    import tensorflow as tf

    if is_chief(strategy):
        return
    own = write_dir(job_dir, strategy)
    if tf.io.gfile.exists(own):
        tf.io.gfile.rmtree(own)
    if not contract.is_remote(job_dir):  # An object store has no empty directories.
        with contextlib.suppress(OSError):  # Not empty while other workers' files are there: the last one removes it.
            os.rmdir(posixpath.dirname(own))


def is_tpu(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.TPUStrategy)


def device_kind(strategy):
    import tensorflow as tf

    if is_tpu(strategy):
        return "TPU"
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


def describe_hardware(strategy):
    """What trained, in words, for the model card: "2 replicas on GPU (NVIDIA H100 80GB HBM3)"."""
    import tensorflow as tf

    kind = device_kind(strategy)
    names = []
    if kind == "GPU":
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
    replicas = strategy.num_replicas_in_sync
    resolver = getattr(strategy, "cluster_resolver", None)
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = sum(len(jobs.get(job, [])) for job in ("chief", "worker"))
    where = f" over {workers} workers" if workers > 1 else ""
    return f"{replicas} replica{'s' if replicas != 1 else ''} on {kind}{where}" + (
        f" ({', '.join(dict.fromkeys(names))})" if names else ""
    )


def make_deterministic():
    """Bit-identical runs: TensorFlow's op determinism, and one op at a time.

    Op determinism alone left two runs of the default preset apart within
    five steps on a 2-core CPU: ops that run side by side (inter-op
    parallelism) gave gradients that differed in their last bits from call to
    call. One op at a time, the runs were bit-identical (docs/training.md).

    Raises:
      ValueError: TensorFlow already started in this process without it (it fixes its threads when it starts).
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        if tf.config.threading.get_inter_op_parallelism_threads() != 1:
            raise ValueError(
                "--deterministic needs a process in which TensorFlow has not run yet: run the command on its own"
            ) from None
