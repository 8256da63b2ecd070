"""python -m trainer.task: train a WaveNet on the output of pipelines.preprocess.

    python -m trainer.task --data OUTPUT_OF_PREPROCESS --job_dir DIR [--strategy auto] [--steps N]

Owns the options, the tf.distribute strategy and the training loop; the model
is `trainer.model`, the input `trainer.data`. The same code trains on one
CPU, several GPUs (MirroredStrategy), several machines
(MultiWorkerMirroredStrategy, from TF_CONFIG) or a TPU.

In --job_dir: checkpoints/ (model, optimizer, step and input position, every
--checkpoint_every steps; a restarted run resumes from the latest),
logs/{train,validation}/ (TensorBoard: loss in nats and bits per sample,
learning rate, generated audio), export/ (model.keras and config.json, what
the sampler loads).
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import posixpath
import sys
import tempfile
import time

import numpy as np

from pipelines import contract
from trainer import data, model

_LOGGER = logging.getLogger(__name__)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
EXPORT_DIR, EXPORT_MODEL, EXPORT_CONFIG = contract.EXPORT_DIR, contract.MODEL_FILE, contract.MODEL_CONFIG_FILE


class TrainingError(RuntimeError):
    """Training stopped; the message says why and what was kept."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train a WaveNet on TFRecord windows written by pipelines.preprocess.",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="Output directory of pipelines.preprocess: local or gs:// (read directly), or s3:// and other "
        "Beam filesystems (staged to local disk first).",
    )
    parser.add_argument(
        "--job_dir",
        required=True,
        help="Directory for checkpoints, logs and the export: local or gs://, or s3:// (worked on locally, "
        "copied back after every checkpoint and the export; resumes from what it holds).",
    )
    parser.add_argument("--model", choices=sorted(model.PRESETS), default="default", help="Model preset.")
    parser.add_argument("--steps", type=int, default=100000, help="Total training steps. Default: %(default)s.")
    parser.add_argument(
        "--batch_size", type=int, default=16, help="Global batch size (all replicas). Default: %(default)s."
    )
    parser.add_argument(
        "--crop_samples",
        type=int,
        default=None,
        help="Random crop of each window, in samples (>= receptive field + 1); bounds memory. "
        "Default: the whole window.",
    )
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate. Default: %(default)s.")
    parser.add_argument(
        "--checkpoint_every", type=int, default=500, help="Steps between checkpoints. Default: %(default)s."
    )
    parser.add_argument(
        "--eval_every", type=int, default=1000, help="Steps between validation runs. Default: %(default)s."
    )
    parser.add_argument(
        "--eval_batches", type=int, default=20, help="Validation batches per evaluation. Default: %(default)s."
    )
    parser.add_argument(
        "--summary_audio_secs",
        type=float,
        default=0.1,
        help="Seconds of audio generated at each evaluation for TensorBoard (0 disables). Default: %(default)s.",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto", help="tf.distribute strategy.")
    parser.add_argument("--tpu", default=None, help="TPU name or address; with --strategy auto, selects TPU.")
    parser.add_argument(
        "--mixed_precision",
        action="store_true",
        help="float16 compute on GPU (bfloat16 on TPU) with float32 weights and loss scaling.",
    )
    parser.add_argument("--jit_compile", action="store_true", help="Compile the train step with XLA.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for weights, shuffling and cropping.")
    return parser.parse_args(argv)


def get_strategy(name="auto", tpu=None):
    """The one place strategies are made.

    auto: TPU when --tpu is given; several GPUs -> MirroredStrategy; TF_CONFIG
    naming several workers -> MultiWorkerMirroredStrategy; else one device.
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
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def _write_dir(job_dir, strategy):
    """The chief writes into job_dir; other workers (which must also save, in step) under job_dir/workers/."""
    if _is_chief(strategy):
        return job_dir
    resolver = strategy.cluster_resolver
    return posixpath.join(job_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def needs_staging(uri):
    """Whether TensorFlow cannot read/write `uri` itself: it does local paths and gs://, not s3://."""
    return "://" in uri and not uri.startswith("gs://")


def _copy(source, destination):
    import shutil

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if "://" not in destination:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
    with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as src:
        with FileSystems.create(destination, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def stage_dataset(data_uri, local_dir):
    """Copies dataset.json and every shard it lists to local_dir, through Beam's filesystems (s3://, ...).

    Returns:
      local_dir, a directory `trainer.data` reads like the original.
    """
    from apache_beam.io.filesystems import FileSystems

    _copy(FileSystems.join(data_uri, contract.DATASET_FILE), os.path.join(local_dir, contract.DATASET_FILE))
    description = data.read_description(local_dir)
    names = [name for split in description["splits"].values() for name in split["files"]]
    for name in names:
        _copy(FileSystems.join(data_uri, name), os.path.join(local_dir, name))
    _LOGGER.warning("Staged %s (%d shards) to %s", data_uri, len(names), local_dir)
    return local_dir


class JobDirMirror:
    """A local working copy of a job_dir that TensorFlow cannot write itself (s3://).

    `pull` copies what the remote job_dir holds (to resume); `push` uploads the
    files that changed since the last push (after each checkpoint and the export).
    """

    def __init__(self, remote, local):
        self.remote = remote.rstrip("/")
        self.local = local
        self._pushed = {}  # relative path -> (size, mtime) at the last push

    def pull(self):
        from apache_beam.io.filesystems import FileSystems

        matches = FileSystems.match([self.remote + "/**"])[0].metadata_list
        for metadata in matches:
            relative = metadata.path[len(self.remote) :].lstrip("/")
            _copy(metadata.path, os.path.join(self.local, relative))
            self._pushed[relative] = self._signature(relative)
        return len(matches)

    def push(self):
        from apache_beam.io.filesystems import FileSystems

        pushed = 0
        for root, _, files in os.walk(self.local):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), self.local)
                signature = self._signature(relative)
                if self._pushed.get(relative) != signature:
                    _copy(os.path.join(self.local, relative), FileSystems.join(self.remote, *relative.split(os.sep)))
                    self._pushed[relative] = signature
                    pushed += 1
        return pushed

    def _signature(self, relative):
        stat = os.stat(os.path.join(self.local, relative))
        return stat.st_size, stat.st_mtime_ns


def entropy_bits(description, data_dir, max_windows=2000):
    """Entropy in bits of the code histogram of the training split (the no-model baseline)."""
    import tensorflow as tf

    paths = data.shard_paths(data_dir, description, contract.TRAIN)
    counts = np.zeros(description["quantization_channels"], np.int64)
    dataset = tf.data.TFRecordDataset(paths).take(max_windows)
    for record in dataset.map(lambda r: data.parse_window(r, description["window_samples"])):
        counts += np.bincount(record.numpy(), minlength=len(counts))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def run(argv=None, dataset_override=None, strategy_override=None, stop_after_steps=None):
    """Trains, checkpoints, evaluates and exports.

    Args:
      argv: command-line arguments; None reads sys.argv.
      dataset_override: callable(input_context) -> tf.data.Dataset of int32
        [per-replica batch, time] codes, replacing the training input (tests).
      strategy_override: a tf.distribute.Strategy to use instead of --strategy.
      stop_after_steps: stop (as if preempted) after this many steps of this
        run, without exporting (tests of resumption).

    Returns:
      dict with step, train_loss_nats, validation_loss_nats (or None),
      losses (list of (step, loss)), export_dir (or None).

    Raises:
      data.DatasetMismatchError: the data cannot serve the model.
      TrainingError: the loss became NaN or Inf.
    """
    import keras
    import tensorflow as tf

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if needs_staging(args.data):
        args.data = stage_dataset(args.data, tempfile.mkdtemp(prefix="wavenet-data-"))
    mirror = None
    if needs_staging(args.job_dir):
        mirror = JobDirMirror(args.job_dir, tempfile.mkdtemp(prefix="wavenet-job-"))
        _LOGGER.warning("Working in %s, mirrored to %s (%d files pulled)", mirror.local, mirror.remote, mirror.pull())
        args.job_dir = mirror.local
    push = mirror.push if mirror else lambda: None
    config = dataclasses.replace(model.PRESETS[args.model])
    description = data.read_description(args.data)
    config = dataclasses.replace(config, quantization_channels=description["quantization_channels"])
    previous = _read_export_config(args.job_dir)
    data.check_compatible(
        description,
        config.quantization_channels,
        config.receptive_field,
        sample_rate=previous["sample_rate"] if previous else None,
    )
    window = description["window_samples"]
    crop = args.crop_samples or window
    if not config.receptive_field + 1 <= crop <= window:
        raise data.DatasetMismatchError(
            f"--crop_samples={crop} must lie between the receptive field + 1 ({config.receptive_field + 1}) "
            f"and the dataset's window_samples ({window})"
        )

    keras.utils.set_random_seed(args.seed)
    strategy = strategy_override or get_strategy(args.strategy, args.tpu)
    global_batch = args.batch_size
    if global_batch % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size={global_batch} must divide by {strategy.num_replicas_in_sync} replicas")
    write_dir = _write_dir(args.job_dir, strategy)
    chief = _is_chief(strategy)

    with strategy.scope():
        previous_policy = keras.mixed_precision.global_policy()
        if args.mixed_precision:
            # Layers keep the policy they are built with; the global one is restored right after.
            keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.tpu else "mixed_float16")
        try:
            wavenet = model.build_wavenet(config)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        optimizer = keras.optimizers.Adam(args.learning_rate)
        if args.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(wavenet.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=wavenet, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, posixpath.join(write_dir, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        _LOGGER.warning("Resumed from %s at step %d", manager.latest_checkpoint, int(step.numpy()))

    train_paths = data.shard_paths(args.data, description, contract.TRAIN)
    resumed_step = int(step.numpy())

    def train_input(input_context):
        if dataset_override is not None:
            return dataset_override(input_context)
        return data.make_dataset(
            train_paths,
            window,
            input_context.get_per_replica_batch_size(global_batch),
            crop_samples=crop,
            seed=args.seed,
            # The input is a deterministic stream: skip what the checkpointed steps consumed.
            skip_windows=resumed_step * global_batch // input_context.num_input_pipelines,
            input_context=input_context,
        )

    iterator = iter(strategy.distribute_datasets_from_function(train_input))
    has_validation = description["splits"][contract.VALIDATION]["windows"] > 0
    rf = config.receptive_field

    def replica_loss(codes, training):
        logits = wavenet(codes[:, :-1], training=training)
        # Only outputs that see a full receptive field are scored.
        per_sample = keras.losses.sparse_categorical_crossentropy(
            codes[:, rf:], tf.cast(logits[:, rf - 1 :], tf.float32), from_logits=True
        )
        return tf.reduce_mean(per_sample, axis=1)  # [batch] nats per sample

    def train_replica(codes):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(replica_loss(codes, True), global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if args.mixed_precision else loss
        grads = tape.gradient(scaled, wavenet.trainable_variables)
        optimizer.apply(grads, wavenet.trainable_variables)
        return loss

    # XLA compiles the replica's computation; reading the input iterator stays outside it.
    compiled_replica = tf.function(train_replica, jit_compile=True) if args.jit_compile else train_replica

    @tf.function
    def train_step(iterator):
        loss = strategy.run(compiled_replica, args=(next(iterator),))
        step.assign_add(1)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

    @tf.function
    def eval_step(codes):
        def replica(batch):
            return tf.reduce_sum(replica_loss(batch, False)), tf.cast(tf.shape(batch)[0], tf.float32)

        total, count = strategy.run(replica, args=(codes,))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None),
        )

    def validation_loss():
        if not has_validation:
            return None
        paths = data.shard_paths(args.data, description, contract.VALIDATION)
        dataset = strategy.distribute_datasets_from_function(
            lambda ctx: data.make_dataset(
                paths,
                window,
                ctx.get_per_replica_batch_size(global_batch),
                crop_samples=crop,
                shuffle=False,
                repeat=False,
                seed=args.seed,
                input_context=ctx,
            ).take(args.eval_batches)
        )
        total = count = 0.0
        for batch in dataset:
            batch_total, batch_count = eval_step(batch)
            total, count = total + float(batch_total), count + float(batch_count)
        return total / count if count else None

    sample_rate = description["sample_rate"]
    writers = {
        name: tf.summary.create_file_writer(posixpath.join(write_dir, "logs", name)) for name in ("train", "validation")
    }
    losses = []
    start_step = int(step.numpy())
    last_loss = val_loss = None
    samples_per_step = global_batch * crop
    progress = _progress_bar(start_step, args.steps, enabled=chief)
    started = time.monotonic()
    timed_from = None  # (step, time) after the first step, which includes tracing and compilation.
    while int(step.numpy()) < args.steps:
        loss = float(train_step(iterator))
        current = int(step.numpy())
        if timed_from is None:
            timed_from = (current, time.monotonic())
        if not math.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss} at step {current}; training stopped. The last good checkpoint "
                f"({manager.latest_checkpoint or 'none'}) is kept; lower --learning_rate or check the data."
            )
        losses.append((current, loss))
        last_loss = loss
        elapsed = time.monotonic() - started
        progress.update(1)
        progress.set_postfix(
            loss=f"{loss:.3f}", samples_per_s=f"{(current - start_step) * samples_per_step / elapsed:,.0f}"
        )
        with writers["train"].as_default(step=current):
            tf.summary.scalar("loss_nats", loss)
            tf.summary.scalar("loss_bits", loss / math.log(2))
            tf.summary.scalar("learning_rate", float(np.asarray(optimizer.learning_rate)))
        if current % args.checkpoint_every == 0 or current == args.steps:
            manager.save(checkpoint_number=current)
            push()
        if current % args.eval_every == 0 or current == args.steps:
            val_loss = validation_loss()
            with writers["validation"].as_default(step=current):
                if val_loss is not None:
                    tf.summary.scalar("loss_nats", val_loss)
                    tf.summary.scalar("loss_bits", val_loss / math.log(2))
                if chief and args.summary_audio_secs > 0:
                    clip = generate_naive(wavenet, config, int(args.summary_audio_secs * sample_rate), args.seed)
                    tf.summary.audio("generated", clip[None, :, None], sample_rate)
        if stop_after_steps is not None and current - start_step >= stop_after_steps:
            progress.close()
            return {"step": current, "train_loss_nats": last_loss, "validation_loss_nats": val_loss,
                    "losses": losses, "export_dir": None}  # fmt: skip
    progress.close()
    for writer in writers.values():
        writer.flush()
    export_dir = export(wavenet, config, description, int(step.numpy()), posixpath.join(write_dir, EXPORT_DIR))
    push()
    if mirror:
        export_dir = posixpath.join(mirror.remote, os.path.relpath(export_dir, mirror.local))
    timed_steps = int(step.numpy()) - timed_from[0] if timed_from else 0
    return {
        "step": int(step.numpy()),
        "train_loss_nats": last_loss,
        "validation_loss_nats": val_loss,
        "losses": losses,
        "export_dir": export_dir,
        # Training throughput after the first step (audio samples of input per second).
        "samples_per_sec": timed_steps * samples_per_step / (time.monotonic() - timed_from[1]) if timed_steps else None,
    }


def generate_naive(wavenet, config, num_samples, seed):
    """A short clip by the plain algorithm (a full pass per sample), for TensorBoard.

    Returns:
      float32 [num_samples] in [-1, 1].
    """
    import tensorflow as tf

    rf = config.receptive_field

    @tf.function
    def loop(context):
        out = tf.TensorArray(tf.int32, size=num_samples)
        for i in tf.range(num_samples):
            logits = wavenet(context, training=False)[:, -1, :]
            code = tf.random.stateless_categorical(tf.cast(logits, tf.float32), 1, seed=[seed, i], dtype=tf.int32)
            context = tf.concat([context[:, 1:], code], axis=1)
            out = out.write(i, code[0, 0])
        return out.stack()

    start = tf.fill([1, rf], config.quantization_channels // 2)
    codes = loop(start).numpy()
    return contract.mu_law_decode(codes, config.quantization_channels)


def export(wavenet, config, description, step, export_dir):
    """Saves the model and everything the sampler needs to use it.

    Writes export_dir/model.keras and export_dir/config.json: the model
    hyperparameters and receptive field, the dataset's sample rate, encoding
    and quantization channels, and the training step.

    Returns:
      export_dir.
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(export_dir)
    local = export_dir
    if "://" in export_dir:
        local = tempfile.mkdtemp()
    wavenet.save(os.path.join(local, EXPORT_MODEL))
    exported = {
        "format_version": 1,
        "model": json.loads(config.to_json()),
        "receptive_field": config.receptive_field,
        "sample_rate": description["sample_rate"],
        "encoding": description["encoding"],
        "quantization_channels": config.quantization_channels,
        "step": step,
    }
    with open(os.path.join(local, EXPORT_CONFIG), "w") as f:
        json.dump(exported, f, indent=2, sort_keys=True)
    if local != export_dir:
        for name in (EXPORT_MODEL, EXPORT_CONFIG):
            tf.io.gfile.copy(os.path.join(local, name), posixpath.join(export_dir, name), overwrite=True)
    return export_dir


def _read_export_config(job_dir):
    import tensorflow as tf

    path = posixpath.join(job_dir, EXPORT_DIR, EXPORT_CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _progress_bar(initial, total, enabled):
    from tqdm import tqdm

    # In logs (no terminal) refresh rarely, so a long run does not write megabytes of bars.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(initial=initial, total=total, unit="step", disable=not enabled, mininterval=interval)


SAGEMAKER_HYPERPARAMETERS = "/opt/ml/input/config/hyperparameters.json"


def sagemaker_argv(argv, hyperparameters_path=SAGEMAKER_HYPERPARAMETERS):
    """SageMaker starts a training container as `IMAGE train` with its settings in hyperparameters.json.

    Returns:
      argv with `train` replaced by --name=value for each hyperparameter (values
      arrive as strings, possibly JSON-quoted); argv unchanged otherwise.
    """
    if argv != ["train"] or not os.path.exists(hyperparameters_path):
        return argv
    with open(hyperparameters_path) as f:
        hyperparameters = json.load(f)
    flags = []
    for name, value in hyperparameters.items():
        if name.startswith("sagemaker_"):
            continue  # SageMaker's own settings.
        value = str(value)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        flags.append(f"--{name}" if value.lower() == "true" else f"--{name}={value}")
    return flags


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(sagemaker_argv(sys.argv[1:]))
    except (data.DatasetMismatchError, TrainingError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    val = result["validation_loss_nats"]
    line = f"Trained to step {result['step']}: train loss {result['train_loss_nats']:.3f} nats/sample"
    if val is not None:
        line += f", validation {val:.3f} nats ({val / math.log(2):.2f} bits)/sample"
    args = parse_args(sagemaker_argv(sys.argv[1:]))
    if not needs_staging(args.data):
        baseline = entropy_bits(data.read_description(args.data), args.data)
        line += f"; the code histogram's entropy (a model that learned nothing else) is {baseline:.2f} bits"
    print(f"{line}\nExported to {result['export_dir']}")


if __name__ == "__main__":
    main()
