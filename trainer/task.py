"""python -m trainer.task: train a WaveNet on the output of pipelines.preprocess.

    python -m trainer.task --data OUTPUT_OF_PREPROCESS --job_dir DIR [--strategy auto] [--steps N]

The command line and the wiring: options, the tf.distribute strategy, the
model and optimizer built in its scope, checkpoints and input. The model is
`trainer.model`, the input `trainer.data`, the loop `trainer.loop`, the export
`trainer.export`, s3:// staging and job_dir mirroring `trainer.storage`. The
same code trains on one CPU, several GPUs (MirroredStrategy), several machines
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

from pipelines import contract
from trainer import data, distribute, export, loop, model, storage
from trainer.loop import TrainingError

_LOGGER = logging.getLogger(__name__)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
LR_SCHEDULES = ("constant", "cosine")
# Held-out music at the benchmark's budget (BENCHMARKS.md): 1e-3 3.55 nats, 3e-3 3.32, 5e-3 3.29. Not 5e-3:
# 0.03 nats is little for a rate that much nearer divergence on long runs and large batches.
DEFAULT_LEARNING_RATE = 3e-3
DEFAULT_LR_SCHEDULE = "constant"
DEFAULT_WARMUP_STEPS = 0
DEFAULT_CLIP_NORM = 0.0
# Steps per host round trip by device kind (BENCHMARKS.md): a CPU gains little, accelerators idle without it.
DEFAULT_STEPS_PER_LOOP = {"CPU": 10, "GPU": 100, "TPU": 200}


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
    parser.add_argument(
        "--condition_on",
        choices=contract.LABEL_KINDS,
        default=None,
        help="Condition the model on this label of the windows (global conditioning, WaveNet section 2.5): "
        "its vocabulary comes from dataset.json, and the sampler's --condition then asks for a value by name. "
        "Default: unconditioned.",
    )
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
    parser.add_argument(
        "--gain_augmentation_db",
        type=float,
        default=0.0,
        help="Train on each crop at a random level: a gain drawn uniformly within +/- this many dB, "
        "lowered where needed so nothing clips, applied to the audio the mu-law codes stand for "
        "(trainer.data.random_gain; 0 disables). Default: %(default)s.",
    )
    parser.add_argument(
        "--random_polarity",
        action="store_true",
        help="Train on half the crops with the waveform's sign inverted (it sounds the same; "
        "trainer.data.random_polarity_inversion).",
    )
    parser.add_argument(
        "--shuffle_buffer_windows",
        type=int,
        default=None,
        help="Windows in the training input's shuffle buffer (about window_samples bytes each). The pipeline "
        "writes each track's windows together, so a buffer smaller than the dataset mixes fewer tracks per "
        "batch. Default: as many as fit in 256 MiB per worker (16,777 windows of 16,000 samples).",
    )
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=DEFAULT_LEARNING_RATE,
        help="Adam's peak learning rate. Default: %(default)s (held-out benchmark, BENCHMARKS.md).",
    )
    parser.add_argument(
        "--adam_beta2",
        type=float,
        default=0.999,
        help="Adam's decay rate of the squared-gradient average (beta_2 of Kingma and Ba, 2015): its memory is "
        "about 1 / (1 - beta2) steps. Default: %(default)s.",
    )
    parser.add_argument(
        "--lr_schedule",
        choices=LR_SCHEDULES,
        default=DEFAULT_LR_SCHEDULE,
        help="constant: the learning rate after the warm-up; cosine: then a cosine decay to 0 at --steps "
        "(Loshchilov and Hutter, SGDR, 2017). Default: %(default)s.",
    )
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=DEFAULT_WARMUP_STEPS,
        help="Steps of linear warm-up from 0 to --learning_rate. Default: %(default)s.",
    )
    parser.add_argument(
        "--clip_norm",
        type=float,
        default=DEFAULT_CLIP_NORM,
        help="Clip the gradients to this global norm (0 disables). Default: %(default)s.",
    )
    parser.add_argument(
        "--steps_per_loop",
        type=int,
        default=None,
        help="Training steps run on the device between returns to Python (progress, summaries and NaN checks "
        "happen once per loop). Default: "
        + ", ".join(f"{kind} {n}" for kind, n in DEFAULT_STEPS_PER_LOOP.items())
        + " (BENCHMARKS.md).",
    )
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
        default=2.0,
        help="Seconds of audio generated at each evaluation for TensorBoard, by the sampler's fast engine, "
        "with its spectrogram (0 disables). Default: %(default)s.",
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


def run(argv=None, dataset_override=None, strategy_override=None, stop_after_steps=None):
    """Trains, checkpoints, evaluates and exports.

    Args:
      argv: command-line arguments; None reads sys.argv.
      dataset_override: callable(input_context) -> tf.data.Dataset of int32
        [per-replica batch, time] codes (with int32 [per-replica batch] label
        indices when conditioned), replacing the training input (tests).
      strategy_override: a tf.distribute.Strategy to use instead of --strategy.
      stop_after_steps: stop (as if preempted) after this many steps of this
        run, without exporting (tests of resumption).

    Returns:
      loop.TrainResult.

    Raises:
      contract.DatasetMismatchError: the data cannot serve the model.
      loop.TrainingError: the loss became NaN or Inf.
    """
    import keras
    import tensorflow as tf

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if storage.needs_staging(args.data):
        args.data = storage.stage_dataset(args.data, tempfile.mkdtemp(prefix="wavenet-data-"))
    mirror = None
    if storage.needs_staging(args.job_dir):
        mirror = storage.JobDirMirror(args.job_dir, tempfile.mkdtemp(prefix="wavenet-job-"))
        _LOGGER.warning("Working in %s, mirrored to %s (%d files pulled)", mirror.local, mirror.remote, mirror.pull())
        args.job_dir = mirror.local
    push = mirror.push if mirror else lambda: None
    if not contract.is_remote(args.job_dir):
        for path in export.remove_killed_writes(args.job_dir):
            _LOGGER.warning("Removed %s, left by a write that was killed", path)
    description = contract.read_description(args.data)
    for warning in data.check_shard_files(args.data, description):
        _LOGGER.warning("%s", warning)
    checkpoints = tf.train.latest_checkpoint(posixpath.join(args.job_dir, "checkpoints"))
    condition_kind, vocabulary = export.job_condition(args.job_dir, args.condition_on, description, checkpoints)
    config = dataclasses.replace(
        model.PRESETS[args.model],
        quantization_channels=description.quantization_channels,
        condition_values=len(vocabulary),
    )
    condition = (condition_kind, vocabulary) if condition_kind else None
    previous = export.read_exported_config(args.job_dir)
    contract.check_compatible(
        description,
        "the model",
        quantization_channels=config.quantization_channels,
        sample_rate=previous.sample_rate if previous else None,
        min_window_samples=config.receptive_field + 1,
    )
    if args.gain_augmentation_db < 0:
        raise ValueError(f"--gain_augmentation_db must be 0 or more, got {args.gain_augmentation_db}")
    if not 0 <= args.adam_beta2 < 1:
        raise ValueError(f"--adam_beta2 must lie in [0, 1), got {args.adam_beta2}")
    if args.shuffle_buffer_windows is not None and args.shuffle_buffer_windows < 1:
        raise ValueError(f"--shuffle_buffer_windows must be at least 1, got {args.shuffle_buffer_windows}")
    if args.steps_per_loop is not None and args.steps_per_loop < 1:
        raise ValueError(f"--steps_per_loop must be at least 1, got {args.steps_per_loop}")
    window = description.window_samples
    crop = args.crop_samples or window
    if not config.receptive_field + 1 <= crop <= window:
        raise contract.DatasetMismatchError(
            f"--crop_samples={crop} must lie between the receptive field + 1 ({config.receptive_field + 1}) "
            f"and the dataset's window_samples ({window})"
        )

    keras.utils.set_random_seed(args.seed)
    strategy = strategy_override or distribute.get_strategy(args.strategy, args.tpu)
    global_batch = args.batch_size
    if global_batch % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size={global_batch} must divide by {strategy.num_replicas_in_sync} replicas")
    write_dir = distribute.write_dir(args.job_dir, strategy)

    with strategy.scope():
        previous_policy = keras.mixed_precision.global_policy()
        if args.mixed_precision:
            # TPUs compute in bfloat16 (no loss scaling needed in principle, harmless); GPUs in float16.
            # Layers keep the policy they are built with; the global one is restored right after.
            policy = "mixed_bfloat16" if distribute.is_tpu(strategy) else "mixed_float16"
            keras.mixed_precision.set_global_policy(policy)
        try:
            wavenet = model.build_wavenet(config)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        optimizer = make_optimizer(args)
        optimizer.build(wavenet.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=wavenet, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, posixpath.join(write_dir, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        _LOGGER.warning("Resumed from %s at step %d", manager.latest_checkpoint, int(step.numpy()))

    train_paths = data.split_paths(args.data, description, contract.TRAIN)
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
            condition=condition,
            gain_db=args.gain_augmentation_db,
            random_polarity=args.random_polarity,
            shuffle_buffer_windows=args.shuffle_buffer_windows,
            quantization_channels=config.quantization_channels,
        )

    def validation_input():
        paths = data.split_paths(args.data, description, contract.VALIDATION)
        return strategy.distribute_datasets_from_function(
            lambda ctx: data.make_dataset(
                paths,
                window,
                ctx.get_per_replica_batch_size(global_batch),
                crop_samples=crop,
                shuffle=False,
                repeat=False,
                seed=args.seed,
                input_context=ctx,
                condition=condition,
            ).take(args.eval_batches)
        )

    settings = loop.LoopSettings(
        steps=args.steps,
        global_batch=global_batch,
        crop_samples=crop,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        summary_audio_secs=args.summary_audio_secs,
        sample_rate=description.sample_rate,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        seed=args.seed,
        steps_per_loop=args.steps_per_loop or DEFAULT_STEPS_PER_LOOP[distribute.device_kind(strategy)],
        condition_kind=condition_kind,
        condition_vocabulary=vocabulary,
    )
    try:
        result = loop.train(
            settings,
            strategy,
            wavenet,
            config,
            optimizer,
            step,
            manager,
            iter(strategy.distribute_datasets_from_function(train_input)),
            validation_input if description.splits[contract.VALIDATION].windows else None,
            write_dir,
            chief=distribute.is_chief(strategy),
            on_checkpoint=push,
            stop_after_steps=stop_after_steps,
        )
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        paths = train_paths + description.shard_paths(args.data, contract.VALIDATION)
        bad = data.find_bad_shard(paths, window) if dataset_override is None else None
        if bad is None:
            raise  # Not the input's fault.
        raise TrainingError(
            f"{bad[0]}: {bad[1]}. Training stopped at the last checkpoint; {data.verify_hint(args.data)}"
        ) from e
    if result.step < args.steps:
        return result  # Stopped early: no export.
    model_config = contract.ModelConfig(
        wavenet=config,
        sample_rate=description.sample_rate,
        step=result.step,
        condition_kind=condition_kind,
        condition_vocabulary=vocabulary,
    )
    result.export_dir = export.export(wavenet, model_config, posixpath.join(write_dir, contract.EXPORT_DIR))
    push()
    if mirror:
        result.export_dir = mirror.remote_path(result.export_dir)
    return result


SAGEMAKER_HYPERPARAMETERS = "/opt/ml/input/config/hyperparameters.json"


def make_optimizer(args):
    """Adam (Kingma and Ba, 2015) as the options ask: schedule, beta_2, clipping, loss scaling.

    Args:
      args: `parse_args`'s namespace.

    Returns:
      keras.optimizers.Adam, in a keras.optimizers.LossScaleOptimizer with --mixed_precision.
    """
    import keras

    optimizer = keras.optimizers.Adam(
        loop.learning_rate_schedule(args.lr_schedule, args.learning_rate, args.warmup_steps, args.steps),
        beta_2=args.adam_beta2,
        global_clipnorm=args.clip_norm or None,
    )
    return keras.optimizers.LossScaleOptimizer(optimizer) if args.mixed_precision else optimizer


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
    sys.exit(contract.run_command(_main, sagemaker_argv(sys.argv[1:])))


def _main(argv):
    result = run(argv)
    print(summary(result, parse_args(argv)))


def summary(result, args):
    """The closing lines of a run: where training got to, the losses, the baseline and the export."""
    if result.train_loss_nats is None:
        line = f"The job was already at step {result.step} of --steps {args.steps}: no step ran"
    else:
        line = f"Trained to step {result.step}: train loss {result.train_loss_nats:.3f} nats/sample"
    val = result.validation_loss_nats
    if val is not None:
        line += f", validation {val:.3f} nats ({val / math.log(2):.2f} bits)/sample"
    if not storage.needs_staging(args.data):
        description = contract.read_description(args.data)
        baseline = data.code_entropy_bits(
            data.split_paths(args.data, description, contract.TRAIN),
            description.window_samples,
            description.quantization_channels,
        )
        line += (
            f"; the code histogram's entropy (a model that learned nothing else) is {baseline * math.log(2):.3f} nats "
            f"({baseline:.2f} bits)"
        )
    if result.export_dir is None:
        return f"{line}\nStopped before --steps; not exported (run the same command again to resume)"
    return f"{line}\nExported to {result.export_dir}"


if __name__ == "__main__":
    main()
