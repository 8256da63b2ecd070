"""The one place tf.distribute strategies are made, and what the rest needs to know about them."""

import itertools
import json
import os
import posixpath

# Collective group keys each MirroredStrategy made in this process may use (it needs a few).
_KEYS_PER_STRATEGY = 10_000
_key_ranges = itertools.count()


def get_strategy(name="auto", tpu=None):
    """The one place strategies are made.

    auto: TPU when --tpu is given; several GPUs -> MirroredStrategy; TF_CONFIG
    naming several workers -> MultiWorkerMirroredStrategy; else one device
    (OneDeviceStrategy on the first GPU; TensorFlow's default strategy on a CPU).
    """
    import tensorflow as tf

    if name == "auto":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        workers = sum(len(cluster.get(role, [])) for role in ("chief", "worker"))
        if tpu:
            name = "tpu"
        elif workers > 1:
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
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return mirrored([d.name for d in (gpus or tf.config.list_logical_devices("CPU"))])
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    # On a CPU, TensorFlow's default strategy: `python -m trainer.task` under OneDeviceStrategy("/cpu:0")
    # (or a one-device MirroredStrategy) trained the default model at 33,000 samples/s against 82,000
    # under the default strategy on this project's 2-core VM, every kernel about twice as slow (profiled:
    # MatMul 1.0 -> 1.9 s per step). In a process that had trained under the default strategy first,
    # OneDeviceStrategy ran as fast; the cause inside TensorFlow was not found (BENCHMARKS.md).
    return tf.distribute.get_strategy()


def mirrored(devices):
    """A MirroredStrategy over `devices` (names such as "/gpu:0") that can live beside others in one process.

    TensorFlow starts every MirroredStrategy's collective group keys at 1, so a second one in
    the same process (a notebook training twice, a test comparing strategies) reuses the first
    one's all-reduce instances and fails with "Shape mismatch in the collective instance"
    (tensorflow/tensorflow#62790). Each strategy made here gets its own range of keys through
    the attribute TensorFlow reads for that, `_collective_key_base` (private: the test
    `test_mirrored_strategies_made_one_after_another_in_one_process_each_reduce_their_own_shapes`
    fails by name if an upgrade changes it).
    """
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy.__new__(tf.distribute.MirroredStrategy)
    strategy._collective_key_base = next(_key_ranges) * _KEYS_PER_STRATEGY
    strategy.__init__(devices)
    return strategy


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


def is_tpu(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.TPUStrategy)


def device_kind(strategy):
    import tensorflow as tf

    if is_tpu(strategy):
        return "TPU"
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
