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

import dataclasses
import logging
import math
import posixpath
import sys
import tempfile

from pipelines import contract
from trainer import distribute, export, jobdir, options, presets, storage
from trainer.loop import TrainingError  # noqa: F401 (what run raises; the loop imports TensorFlow lazily)
from trainer.options import parse_args, sagemaker_argv  # noqa: F401 (the command line, re-exported)

_LOGGER = logging.getLogger(__name__)


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
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import keras
    import tensorflow as tf

    from trainer import data, loop, model

    if storage.needs_staging(args.data):
        args.data = storage.stage_dataset(args.data, tempfile.mkdtemp(prefix="wavenet-data-"))
    mirror = None
    if storage.needs_staging(args.job_dir):
        mirror = storage.JobDirMirror(args.job_dir, tempfile.mkdtemp(prefix="wavenet-job-"))
        _LOGGER.warning("Working in %s, mirrored to %s (%d files pulled)", mirror.local, mirror.remote, mirror.pull())
        args.job_dir = mirror.local
    push = mirror.push if mirror else lambda: None
    if not contract.is_remote(args.job_dir):
        for path in jobdir.remove_killed_writes(args.job_dir):
            _LOGGER.warning("Removed %s, left by a write that was killed", path)
    description = contract.read_description(args.data)
    for warning in data.check_shard_files(args.data, description):
        _LOGGER.warning("%s", warning)
    checkpoints = tf.train.latest_checkpoint(posixpath.join(args.job_dir, "checkpoints"))
    preset = jobdir.job_preset(args.job_dir, args.preset, checkpoints)
    condition_kind, vocabulary = jobdir.job_condition(args.job_dir, args.condition_on, description, checkpoints)
    config = dataclasses.replace(
        model.PRESETS[preset],
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
    options.check_options(args)
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
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (ValueError, AssertionError) as e:  # A job dir started before job.json named its preset.
            raise contract.DatasetMismatchError(
                f"{args.job_dir}'s checkpoints hold another model than the {presets.describe(preset)} "
                f"({str(e).splitlines()[0][:160]}): pass the --preset it was started with, or use another --job_dir"
            ) from None
        _LOGGER.warning("Resumed from %s at step %d", manager.latest_checkpoint, int(step.numpy()))

    if not description.splits[contract.VALIDATION].windows:
        _LOGGER.warning(
            "%s has no validation windows: no validation loss will be reported. Preprocess with a larger "
            "--validation_fraction to hold tracks out.",
            args.data,
        )
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
        steps_per_loop=args.steps_per_loop or options.DEFAULT_STEPS_PER_LOOP[distribute.device_kind(strategy)],
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
        raise loop.TrainingError(
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


def make_optimizer(args):
    """Adam (Kingma and Ba, 2015) as the options ask: schedule, beta_2, clipping, loss scaling.

    Args:
      args: `options.parse_args`'s namespace.

    Returns:
      keras.optimizers.Adam, in a keras.optimizers.LossScaleOptimizer with --mixed_precision.
    """
    import keras

    from trainer import loop

    optimizer = keras.optimizers.Adam(
        loop.learning_rate_schedule(args.lr_schedule, args.learning_rate, args.warmup_steps, args.steps),
        beta_2=args.adam_beta2,
        global_clipnorm=args.clip_norm or None,
    )
    return keras.optimizers.LossScaleOptimizer(optimizer) if args.mixed_precision else optimizer


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sagemaker_argv(sys.argv[1:])
    contract.filter_native_logs(verbose="--verbose" in argv)
    sys.exit(contract.run_command(_main, argv))


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
        from trainer import data

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
