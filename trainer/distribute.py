"""The one place tf.distribute strategies are made, and what the rest needs to know about them."""

import json
import os
import posixpath

from trainer import compat


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
        return compat.mirrored_strategy([d.name for d in (gpus or tf.config.list_logical_devices("CPU"))])
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    # On a CPU, TensorFlow's default strategy: OneDeviceStrategy ran every kernel slower there
    # (BENCHMARKS.md, "Training", "OneDeviceStrategy on a CPU").
    return tf.distribute.get_strategy()


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
