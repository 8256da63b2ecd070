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
import threading

from pipelines import contract
from trainer import card, distribute, export, jobdir, optimization, options, presets, storage
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
      loop.TrainingError: the loss became NaN or Inf, or a shard is damaged.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_parsed(args, dataset_override, strategy_override, stop_after_steps)


def run_parsed(args, dataset_override=None, strategy_override=None, stop_after_steps=None):
    """`run` for parsed options (`options.parse_args`): the wiring, one step after another."""
    distribute.check_single_copy(args.strategy)  # Slurm wiring (trainer/distribute.py): refused before any write.
    import keras
    import tensorflow as tf

    from trainer import data, loop

    contract.configure_storage(contract.StorageSettings.from_options(args))
    contract.check_access([args.data, args.job_dir, args.export_dir, args.tensorboard_dir])
    keras.utils.set_random_seed(args.seed)
    strategy = strategy_override or distribute.get_strategy(args.strategy, args.tpu)
    chief = distribute.is_chief(strategy)  # Only the chief writes the job_dir; the other workers read it.
    work = storage.working_dirs(args.data, args.job_dir, args.tensorboard_dir, args.export_dir, clean=chief)
    push = work.push if chief else lambda: None
    description = contract.read_description(work.data)
    for warning in data.check_shard_files(work.data, description):
        _LOGGER.warning("%s", warning)
    # The chief's latest checkpoint: every worker resumes from it, at the same step.
    checkpoints = tf.train.latest_checkpoint(posixpath.join(work.job_dir, "checkpoints"))
    preset = jobdir.job_preset(work.job_dir, args.preset, checkpoints, write=chief)
    condition_kind, vocabulary = jobdir.job_condition(
        work.job_dir, args.condition_on, description, checkpoints, write=chief
    )
    config = _model_config(args, description, preset, len(vocabulary))
    crop = args.crop_samples or description.window_samples

    if args.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size={args.batch_size} must divide by {strategy.num_replicas_in_sync} replicas")
    write_dir = distribute.write_dir(work.job_dir, strategy)
    # Workers other than the chief save in step with it, into a directory of their own.
    tensorboard_dir = work.tensorboard_dir if chief else posixpath.join(write_dir, "logs")
    export_dir = args.export_dir if chief else posixpath.join(write_dir, contract.EXPORT_DIR)
    wavenet, optimizer, step, manager = _build(args, strategy, config, write_dir, preset, checkpoints)

    inputs = data.TrainingInputs(
        work.data, description, args.batch_size, crop, args.seed,
        condition=(condition_kind, vocabulary) if condition_kind else None,
        gain_db=args.gain_augmentation_db, random_polarity=args.random_polarity,
        shuffle_buffer_windows=args.shuffle_buffer_windows, eval_batches=args.eval_batches,
    )  # fmt: skip
    train_input = dataset_override or inputs.training(resumed_step=int(step.numpy()))
    if inputs.validation is None:
        _LOGGER.warning(
            "%s has no validation windows: no validation loss will be reported. Preprocess with a larger "
            "--validation_fraction to hold tracks out.",
            work.data,
        )
    validation = inputs.validation and (lambda: strategy.distribute_datasets_from_function(inputs.validation))
    settings = loop.LoopSettings(
        steps=args.steps,
        global_batch=args.batch_size,
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
    # SIGTERM (a preemption) saves a checkpoint first; signal handlers live in the main thread only.
    in_main_thread = threading.current_thread() is threading.main_thread()
    preemption = loop.PreemptionCheckpoints(strategy, manager, on_saved=push) if in_main_thread else None
    try:
        result = loop.train(
            settings, strategy, wavenet, config, optimizer, step, manager,
            iter(strategy.distribute_datasets_from_function(train_input)), validation, tensorboard_dir,
            chief=chief, on_checkpoint=push, stop_after_steps=stop_after_steps, preemption=preemption,
        )  # fmt: skip
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        bad = inputs.find_bad_shard() if dataset_override is None else None
        if bad is None:
            raise  # Not the input's fault.
        raise loop.TrainingError(
            f"{bad[0]}: {bad[1]}. Training stopped at the last checkpoint; {data.verify_hint(work.data)}"
        ) from e
    finally:
        if preemption is not None:
            preemption.close()
    result.data_dir = work.data
    if result.step < args.steps:
        return result  # Stopped early: no export.
    model_config = contract.ModelConfig(
        wavenet=config,
        sample_rate=description.sample_rate,
        step=result.step,
        condition_kind=condition_kind,
        condition_vocabulary=vocabulary,
    )
    result.export_dir = export.export(wavenet, model_config, export_dir)
    if chief:
        rows = _attribution(args.data)
        text = card.model_card(
            model_config, preset, wavenet.count_params(), description, rows, result,
            distribute.describe_hardware(strategy), args.data, args.command,
        )  # fmt: skip
        card.write_model_card(export_dir, text, rows)
    push()
    if not chief:  # Slurm wiring (trainer/distribute.py): a worker's files are scratch; the job's export is the chief's
        distribute.remove_worker_files(work.job_dir, strategy)
        result.export_dir = args.export_dir
    return result


def _attribution(data_uri):
    """The training data's attribution.csv rows, or None for a dataset made before licences were recorded."""
    try:
        return contract.read_attribution(data_uri)
    except FileNotFoundError:
        return None


def _model_config(args, description, preset, condition_values):
    """The WaveNetConfig to train, refused (naming both values) when the data cannot serve it or the options clash.

    Raises:
      contract.DatasetMismatchError, ValueError.
    """
    config = dataclasses.replace(
        presets.PRESETS[preset],
        quantization_channels=description.quantization_channels,
        condition_values=condition_values,
    )
    previous = export.read_exported_config(args.export_dir)
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
    return config


def _build(args, strategy, config, write_dir, preset, restore_from):
    """Model, optimizer and step made in the strategy's scope, restored from `restore_from` (the chief's latest
    checkpoint, or None), saved by the returned manager under write_dir.

    Returns:
      (keras.Model, optimizer, int64 step tf.Variable, tf.train.CheckpointManager).
    """
    import keras
    import tensorflow as tf

    from trainer import model

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
        optimizer = optimization.make_optimizer(args)
        optimizer.build(wavenet.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=wavenet, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, posixpath.join(write_dir, "checkpoints"), max_to_keep=3)
    if restore_from:
        try:
            # Values only the preemption handler reads (its run counter) are restored by it: expected here.
            checkpoint.restore(restore_from).assert_existing_objects_matched().expect_partial()
        except (ValueError, AssertionError) as e:  # A job dir started before job.json named its preset.
            raise contract.DatasetMismatchError(
                f"{args.job_dir}'s checkpoints hold another model than the {presets.describe(preset)} "
                f"({str(e).splitlines()[0][:160]}): pass the --preset it was started with, or use another --job_dir"
            ) from None
        _LOGGER.warning("Resumed from %s at step %d", restore_from, int(step.numpy()))
    return wavenet, optimizer, step, manager


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sagemaker_argv(sys.argv[1:])
    contract.filter_native_logs(verbose=contract.VERBOSE_OPTION in argv)
    sys.exit(contract.run_command(_main, argv))


def _main(argv):
    args = parse_args(argv)
    print(summary(run_parsed(args), args))


def summary(result, args):
    """The closing lines of a run: where training got to, the losses, the baseline and the export."""
    if result.train_loss_nats is None:
        line = f"The job was already at step {result.step} of --steps {args.steps}: no step ran"
    else:
        line = f"Trained to step {result.step}: train loss {result.train_loss_nats:.3f} nats/sample"
    val = result.validation_loss_nats
    if val is not None:
        line += f", validation {val:.3f} nats ({val / math.log(2):.2f} bits)/sample"
    data_dir = result.data_dir or args.data
    if not storage.needs_staging(data_dir):
        from trainer import data

        description = contract.read_description(data_dir)
        baseline = data.code_entropy_bits(
            data.split_paths(data_dir, description, contract.TRAIN),
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
