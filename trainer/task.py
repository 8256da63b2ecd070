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
      SystemExit: (status 2) an option the parser refuses, before anything is read or written (`parse_args`).
      NotADirectoryError: a local --job_dir, --export_dir or --tensorboard_dir runs through a file.
      contract.DatasetMismatchError: the data cannot serve the model.
      loop.TrainingError: the loss became NaN or Inf, or a shard is damaged.
    """
    argv = sys.argv[1:] if argv is None else argv
    return run_parsed(parse_args(argv), dataset_override, strategy_override, stop_after_steps, command=argv)


def run_parsed(args, dataset_override=None, strategy_override=None, stop_after_steps=None, command=()):
    """`run` for parsed options (`options.parse_args`): the wiring, one step after another.

    `command` is the command line, recorded in the model card (credentials left out).
    """
    distribute.check_single_copy(args.strategy, args.tpu)  # Slurm wiring (trainer/distribute.py): before any write.
    import keras
    import tensorflow as tf

    from trainer import data, loop, shards

    if args.deterministic:
        distribute.make_deterministic()
    contract.configure_storage(contract.StorageSettings.from_options(args))
    contract.check_access([args.data, args.job_dir, args.export_dir, args.tensorboard_dir])
    keras.utils.set_random_seed(args.seed)
    strategy = strategy_override or distribute.get_strategy(args.strategy, args.tpu)
    if args.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size={args.batch_size} must divide by {strategy.num_replicas_in_sync} replicas")
    chief = distribute.is_chief(strategy)  # Only the chief writes the job_dir; the other workers read it.
    work = storage.working_dirs(args.data, args.job_dir, args.tensorboard_dir, args.export_dir, clean=chief)
    push = work.push if chief else lambda: None
    description = contract.read_description(work.data_dir)
    for warning in shards.check_shard_files(work.data_dir, description):
        _LOGGER.warning("%s", warning)
    # The chief's latest checkpoint: every worker resumes from it, at the same step.
    checkpoints = tf.train.latest_checkpoint(posixpath.join(work.job_dir, "checkpoints"))
    # Check, then act: what the job dir holds and the data are checked against the options before it is written.
    preset = jobdir.job_preset(work.job_dir, args.preset, checkpoints, write=False)
    condition_kind, vocabulary = jobdir.job_condition(
        work.job_dir, args.condition_on, description, checkpoints, write=False
    )
    wavenet_config = _wavenet_config(args, description, preset, len(vocabulary))
    crop = args.crop_samples or description.window_samples
    if chief and not checkpoints:  # A new job records its preset and label vocabulary (trainer/jobdir.py).
        jobdir.job_preset(work.job_dir, preset, checkpoints)
        jobdir.job_condition(work.job_dir, condition_kind, description, checkpoints)
    write_dir = distribute.write_dir(work.job_dir, strategy)
    # Workers other than the chief save in step with it, into a directory of their own: what an earlier run left
    # there goes first, or the preemption handler would restore it over the chief's checkpoint.
    distribute.remove_worker_files(work.job_dir, strategy)
    tensorboard_dir = work.tensorboard_dir if chief else posixpath.join(write_dir, "logs")
    export_dir = args.export_dir if chief else posixpath.join(write_dir, contract.EXPORT_DIR)
    model, optimizer, step, manager = _build(args, strategy, wavenet_config, write_dir, preset, checkpoints)

    inputs = data.TrainingInputs(
        work.data_dir, description, args.batch_size, crop, args.seed,
        condition=(condition_kind, vocabulary) if condition_kind else None,
        gain_db=args.gain_augmentation_db, random_polarity=args.random_polarity,
        shuffle_buffer_windows=args.shuffle_buffer_windows, eval_batches=args.eval_batches,
    )  # fmt: skip
    train_input = dataset_override or inputs.training(resumed_step=int(step.numpy()))
    if inputs.validation is None and description.validation_fraction == 0:
        _LOGGER.warning("%s holds no validation split, as preprocessed (--validation_fraction 0)", work.data_dir)
    elif inputs.validation is None:
        _LOGGER.warning(
            "%s has no validation windows: no validation loss will be reported. Preprocess with a larger "
            "--validation_fraction to hold tracks out.",
            work.data_dir,
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
            settings, strategy, model, wavenet_config, optimizer, step, manager,
            iter(strategy.distribute_datasets_from_function(train_input)), validation, tensorboard_dir,
            chief=chief, on_checkpoint=push, stop_after_steps=stop_after_steps, preemption=preemption,
        )  # fmt: skip
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        read = inputs.train_paths + inputs.validation_paths if dataset_override is None else []
        bad = shards.find_bad_shard(read, description.window_samples)
        if bad is None:
            raise  # Not the input's fault.
        raise loop.TrainingError(
            f"{bad[0]}: {bad[1]}. Training stopped at the last checkpoint; {shards.verify_hint(work.data_dir)}"
        ) from e
    finally:
        if preemption is not None:
            preemption.close()
    result.data_dir = work.data_dir
    if result.step < args.steps:
        return result  # Stopped early: no export.
    model_config = contract.ModelConfig(
        wavenet_config=wavenet_config,
        sample_rate=description.sample_rate,
        step=result.step,
        condition_kind=condition_kind,
        condition_vocabulary=vocabulary,
    )
    result.export_dir = export.export(model, model_config, export_dir)
    if chief:
        rows = _attribution(args.data)
        text = card.model_card(
            model_config, preset, model.count_params(), description, rows, result,
            distribute.describe_hardware(strategy), args.data, contract.redact_command(command),
        )  # fmt: skip
        card.write_model_card(export_dir, text, rows)
    push()
    if not chief:  # Slurm wiring (trainer/distribute.py): a worker's files are scratch; the job's export is the chief's
        distribute.remove_worker_files(work.job_dir, strategy)
        result.export_dir = args.export_dir
    return result


def _attribution(data_dir):
    """The training data's attribution.csv rows, or None for a dataset made before licences were recorded."""
    try:
        return contract.read_attribution(data_dir)
    except FileNotFoundError:
        return None


def _wavenet_config(args, description, preset, condition_values):
    """The WaveNetConfig to train, refused (naming both values) when the data cannot serve it or the options clash.

    Raises:
      contract.DatasetMismatchError, ValueError.
    """
    wavenet_config = presets.preset_config(preset, description.quantization_channels, condition_values)
    previous = export.read_exported_config(args.export_dir)
    contract.check_compatible(
        description,
        "the model",
        quantization_channels=wavenet_config.quantization_channels,
        sample_rate=previous.sample_rate if previous else None,
        min_window_samples=wavenet_config.receptive_field + 1,
    )
    window = description.window_samples
    crop = args.crop_samples or window
    if not wavenet_config.receptive_field + 1 <= crop <= window:
        raise contract.DatasetMismatchError(
            f"--crop_samples={crop} must lie between the receptive field + 1 ({wavenet_config.receptive_field + 1}) "
            f"and the dataset's window_samples ({window})"
        )
    return wavenet_config


def _build(args, strategy, wavenet_config, write_dir, preset, restore_from):
    """Model, optimizer and step made in the strategy's scope, restored from `restore_from` (the chief's latest
    checkpoint, or None), saved by the returned manager under write_dir.

    Returns:
      (keras.Model, optimizer, int64 step tf.Variable, tf.train.CheckpointManager).
    """
    import keras
    import tensorflow as tf

    from trainer.model import build_wavenet

    with strategy.scope():
        previous_policy = keras.mixed_precision.global_policy()
        if args.mixed_precision:
            # TPUs compute in bfloat16 (no loss scaling needed in principle, harmless); GPUs in float16.
            # Layers keep the policy they are built with; the global one is restored right after.
            policy = "mixed_bfloat16" if distribute.is_tpu(strategy) else "mixed_float16"
            keras.mixed_precision.set_global_policy(policy)
        try:
            model = build_wavenet(wavenet_config)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        optimizer = optimization.make_optimizer(args)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, posixpath.join(write_dir, "checkpoints"), max_to_keep=3)
    if restore_from:
        jobdir.check_checkpoint_holds(args.job_dir, restore_from, model, wavenet_config, preset)
        try:
            status = checkpoint.restore(restore_from)
            # Values only the preemption handler reads (its run counter) are restored by it: expected here.
            status.expect_partial()
            status.assert_existing_objects_matched()
        except (ValueError, AssertionError) as e:  # What the shapes cannot tell apart.
            raise contract.DatasetMismatchError(
                f"{args.job_dir}'s checkpoints hold another model than the {presets.describe(preset)} "
                f"({str(e).splitlines()[0][:160]}): pass the --preset it was started with, or use another --job_dir"
            ) from None
        _LOGGER.warning("Resumed from %s at step %d", restore_from, int(step.numpy()))
    return model, optimizer, step, manager


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sagemaker_argv(sys.argv[1:])
    contract.filter_native_logs(verbose=contract.VERBOSE_OPTION in argv)
    sys.exit(contract.run_command(_main, argv))


def _main(argv):
    args = parse_args(argv)
    print(summary(run_parsed(args, command=argv), args))


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
        from trainer import data, statistics

        description = contract.read_description(data_dir)
        baseline = statistics.code_entropy_bits(
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
