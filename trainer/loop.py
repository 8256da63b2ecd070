"""The training loop: step builders, and a controller that runs them and its actions (as Orbit splits them).

`trainer.task` builds the strategy, the model and the input and hands them
here; this module owns what happens between the first step and the last:
`make_train_loop` and `make_evaluator` build the device functions (Orbit's
trainer and evaluator), `Controller` runs loops of steps to the end and, between
them, the NaN stop, progress, summaries and its `Action`s (checkpoints,
evaluations with their audio summaries), and `PreemptionCheckpoints` saves on
SIGTERM. What goes into TensorBoard is `trainer.summaries`.
"""

import dataclasses
import logging
import posixpath
import signal
import sys
import time

import numpy as np

from pipelines import contract


class TrainingError(contract.CommandError):
    """Training stopped; the message says why and what was kept."""


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Attributes:
      step: the global step reached.
      train_loss_nats: the last training loss in nats per sample (None if no step ran).
      validation_loss_nats: the last validation loss in nats per sample (None without
        a validation split or before the first evaluation).
      losses: list of (step, training loss in nats per sample), one per step of this run.
      export_dir: where the model was exported (None when the run stopped early).
      data_dir: the dataset as the run read it (a local copy of s3:// data), or None.
      samples_per_sec: training throughput from the end of the first loop (which
        includes tracing and compilation) to the end of the last, in audio
        samples of input per second (checkpoints and evaluations between loops
        count; the final ones do not); None with a single loop.
    """

    step: int
    train_loss_nats: float = None
    validation_loss_nats: float = None
    losses: list = dataclasses.field(default_factory=list)
    export_dir: str = None
    data_dir: str = None
    samples_per_sec: float = None


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How long to train and how often to stop for checkpoints, evaluations and summaries.

    Attributes:
      steps: the total steps to reach.
      global_batch: batch size over all replicas.
      crop_samples: samples per training example.
      checkpoint_every, eval_every: steps between checkpoints and between evaluations.
      summary_audio_secs: seconds of audio generated for TensorBoard at each evaluation (0: none).
      sample_rate: Hz of the data (for the audio summary).
      mixed_precision: scale the loss (float16/bfloat16 compute).
      jit_compile: compile the replica step with XLA.
      seed: seeds the audio summary's sampling.
      steps_per_loop: training steps run on the device between host round trips;
        progress, summaries and NaN checks happen once per loop, checkpoints and
        evaluations on loop boundaries.
      condition_kind, condition_vocabulary: the label a conditioned model is
        conditioned on and its values (index order); None and () otherwise.
    """

    steps: int
    global_batch: int
    crop_samples: int
    checkpoint_every: int
    eval_every: int
    summary_audio_secs: float
    sample_rate: int
    mixed_precision: bool = False
    jit_compile: bool = False
    seed: int = 0
    steps_per_loop: int = 1
    condition_kind: str = None
    condition_vocabulary: tuple = ()


def train(
    settings,
    strategy,
    model,
    wavenet_config,
    optimizer,
    step,
    checkpoint_manager,
    iterator,
    validation_dataset,
    tensorboard_dir,
    chief,
    on_checkpoint=lambda: None,
    stop_after_steps=None,
    preemption=None,
):
    """Runs training steps until `settings.steps`: the step builders wired to a `Controller` and its actions.

    Args:
      settings: LoopSettings.
      strategy: the tf.distribute.Strategy everything was built under.
      model: keras.Model; wavenet_config: its contract.WaveNetConfig.
      optimizer: built keras optimizer (a LossScaleOptimizer with mixed precision).
      step: int64 tf.Variable, the global step (checkpointed).
      checkpoint_manager: tf.train.CheckpointManager of model, optimizer and step.
      iterator: distributed iterator of int32 [per-replica batch, crop_samples] codes
        (with their int32 [per-replica batch] label indices for a conditioned model).
      validation_dataset: callable() -> distributed dataset of validation batches, or None.
      tensorboard_dir: where TensorBoard logs go (train/, validation/).
      chief: whether this worker shows progress and writes the audio summary.
      on_checkpoint: called after every checkpoint (mirrors the job_dir).
      stop_after_steps: stop after this many steps of this run, as if preempted (tests).
      preemption: a `PreemptionCheckpoints`, asked after every loop whether to save a checkpoint and stop
        (SIGTERM), or None.

    Returns:
      TrainResult (export_dir None).

    Raises:
      TrainingError: the loss became NaN or Inf; the last good checkpoint is kept.
    """
    import tensorflow as tf

    writers = {
        name: tf.summary.create_file_writer(posixpath.join(tensorboard_dir, name)) for name in ("train", "validation")
    }
    controller = Controller(
        settings,
        step,
        make_train_loop(settings, strategy, model, wavenet_config, optimizer, step),
        iterator,
        checkpoint=Action(settings.checkpoint_every, checkpoint_action(checkpoint_manager, on_checkpoint)),
        evaluation=Action(
            settings.eval_every,
            evaluation_action(
                settings,
                make_evaluator(strategy, model, wavenet_config, validation_dataset),
                writers["validation"],
                model,
                wavenet_config,
                chief,
            ),
        ),  # fmt: skip
        writer=writers["train"],
        optimizer=optimizer,
        chief=chief,
        describe_checkpoint=lambda: checkpoint_manager.latest_checkpoint,
        preemption=preemption,
    )
    try:
        return controller.run(stop_after_steps)
    finally:
        for writer in writers.values():
            writer.flush()


def make_train_loop(settings, strategy, model, wavenet_config, optimizer, step):
    """The training step, and a tf.function running `num_steps` of them on the device (Orbit's trainer).

    Returns:
      callable(iterator, int32 num_steps) -> float32 [num_steps] losses (nats per sample), reduced over replicas.
    """
    import tensorflow as tf

    from trainer.model import per_example_nats

    global_batch = settings.global_batch

    def train_replica(batch):
        with tf.GradientTape() as tape:
            per_example = per_example_nats(model, wavenet_config, batch)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if settings.mixed_precision else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    # XLA compiles the replica's computation; reading the input iterator stays outside it.
    compiled_replica = tf.function(train_replica, jit_compile=True) if settings.jit_compile else train_replica

    @tf.function
    def train_loop(iterator, num_steps):
        """num_steps steps on device without returning to Python; the loss of each, reduced over replicas."""
        losses = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            loss = strategy.run(compiled_replica, args=(next(iterator),))
            step.assign_add(1)
            losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None))
        return losses.stack()

    return train_loop


def make_evaluator(strategy, model, wavenet_config, validation_dataset):
    """The validation loss over a fresh pass of `validation_dataset` (Orbit's evaluator).

    Returns:
      callable() -> mean nats per sample over the validation windows, or None without validation data.
    """
    import tensorflow as tf

    from trainer.model import per_example_nats

    @tf.function
    def eval_step(codes):
        def replica(batch):
            per_example = per_example_nats(model, wavenet_config, batch)
            return tf.reduce_sum(per_example), tf.cast(tf.shape(per_example)[0], tf.float32)

        total, count = strategy.run(replica, args=(codes,))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None),
        )

    def validation_loss():
        if validation_dataset is None:
            return None
        total = count = 0.0
        for batch in validation_dataset():
            batch_total, batch_count = eval_step(batch)
            total, count = total + float(batch_total), count + float(batch_count)
        return total / count if count else None

    return validation_loss


@dataclasses.dataclass(frozen=True)
class Action:
    """Something the controller does every `every` steps and at the last step: callable(step, result)."""

    every: int
    run: object

    def due(self, step, last_step):
        return step % self.every == 0 or step == last_step

    def next_step(self, step):
        return (step // self.every + 1) * self.every


def checkpoint_action(checkpoint_manager, on_checkpoint):
    def save(step, result):
        checkpoint_manager.save(checkpoint_number=step)
        on_checkpoint()

    return save


def evaluation_action(settings, validation_loss, writer, model, wavenet_config, chief):
    """The validation loss into the result and TensorBoard, and the chief's audio summary."""
    from trainer import summaries  # It loads TensorFlow, which importing this module (trainer.task does) must not.

    def evaluate(step, result):
        result.validation_loss_nats = validation_loss()
        with writer.as_default():
            if result.validation_loss_nats is not None:
                summaries.write_loss(result.validation_loss_nats, step)
            if chief and settings.summary_audio_secs > 0:
                summaries.write_audio(model, wavenet_config, settings, step)

    return evaluate


class Controller:
    """Runs the training loop to `settings.steps` in loops of steps on the device, and its actions between them.

    As Orbit's Controller (tensorflow/models `orbit/controller.py`): each loop
    ends at the next step where an action is due (a checkpoint, an evaluation),
    the end, or `settings.steps_per_loop` steps; after each loop the controller
    records the losses, stops on NaN, reports progress and the time left, writes
    the training summaries, then runs the actions that are due.
    """

    def __init__(self, settings, step, train_loop, iterator, checkpoint, evaluation, writer, optimizer, chief,
                 describe_checkpoint, preemption=None):  # fmt: skip
        self._settings, self._step, self._train_loop, self._iterator = settings, step, train_loop, iterator
        self._actions = (checkpoint, evaluation)  # A checkpoint first: an evaluation's failure keeps the steps.
        self._writer, self._optimizer, self._chief = writer, optimizer, chief
        self._describe_checkpoint = describe_checkpoint
        self._preemption = preemption

    def run(self, stop_after_steps=None):
        import tensorflow as tf

        settings = self._settings
        start = int(self._step.numpy())
        stop = settings.steps if stop_after_steps is None else min(settings.steps, start + stop_after_steps)
        result = TrainResult(step=start)
        samples_per_step = settings.global_batch * settings.crop_samples
        progress = _progress_bar(start, settings.steps, enabled=self._chief)
        timed_from = None  # (step, time) after the first loop, which includes tracing and compilation.
        current = start
        try:
            while current < stop:
                num_steps = self._next_boundary(current, stop) - current
                losses = self._train_loop(self._iterator, tf.constant(num_steps, tf.int32)).numpy()
                first, current = current + 1, int(self._step.numpy())
                self._check_finite(losses, first)
                now = time.monotonic()
                rate = None
                if timed_from is None:
                    timed_from = (current, now)
                else:
                    rate = (current - timed_from[0]) * samples_per_step / (now - timed_from[1])
                    if result.samples_per_sec is None and self._chief and current < settings.steps:
                        progress.write(
                            _time_left(settings.steps - current, samples_per_step / rate, timed_from[0], current),
                            file=sys.stderr,
                        )
                    result.samples_per_sec = rate
                result.losses.extend(zip(range(first, current + 1), losses.tolist(), strict=True))
                result.step, result.train_loss_nats = current, float(losses[-1])
                progress.update(num_steps)
                progress.set_postfix(loss=f"{losses[-1]:.3f}", samples_per_s=f"{rate:,.0f}" if rate else "...")
                self._write_summaries(first, losses, rate)
                for action in self._actions:
                    if action.due(current, settings.steps):
                        action.run(current, result)
                if self._preemption is not None:
                    self._preemption.save_if_preempted(current)
        finally:
            progress.close()
        return result

    def _next_boundary(self, current, stop):
        """The step the next loop ends at: an action's, the end or the stop, at most steps_per_loop away."""
        return min(stop, current + self._settings.steps_per_loop, *(a.next_step(current) for a in self._actions))

    def _check_finite(self, losses, first):
        bad = np.flatnonzero(~np.isfinite(losses))
        if len(bad):
            raise TrainingError(
                f"the loss became {losses[bad[0]]} at step {first + bad[0]}; training stopped. The last good "
                f"checkpoint ({self._describe_checkpoint() or 'none'}) is kept; lower --learning_rate, "
                "set --clip_norm, or check the data."
            )

    def _write_summaries(self, first, losses, rate):
        from trainer import summaries

        # Leaving as_default() flushes the writer (as it does the evaluation's): the event files a checkpoint's push
        # sends hold every summary written before it.
        with self._writer.as_default():
            summaries.write_training(first, losses, float(np.asarray(self._optimizer.learning_rate)), rate)


class PreemptionCheckpoints:
    """A checkpoint on SIGTERM, then a stop: what spot VMs, GKE, Vertex AI, SageMaker spot and Slurm send before
    they take the machine (with a grace period of ~30 s or more).

    TensorFlow's own mechanism (`tf.distribute.experimental.PreemptionCheckpointHandler`):
    it watches for SIGTERM and, for every strategy, makes all workers agree on the
    step after which they save; asked after every loop (`save_if_preempted`), it
    saves through the job's CheckpointManager, then `on_saved` (the mirrors pushed)
    runs and the run stops with `contract.Interrupted` (SIGTERM): exit status 143,
    the status TensorFlow's GCE handler exits with for a restart, and one line. Not
    on GCE CPU machines, where TensorFlow's handler does not act on the signal.

    Args:
      strategy: the tf.distribute strategy (its cluster resolver, for multi-worker).
      checkpoint_manager: the job's tf.train.CheckpointManager.
      on_saved: called after the checkpoint is saved, before stopping.
    """

    def __init__(self, strategy, checkpoint_manager, on_saved=lambda: None):
        import tensorflow as tf

        # TensorFlow 2.21's handler reads its own deprecated property when it saves, which logs a deprecation
        # warning that is not the user's to act on.
        logging.getLogger("tensorflow").addFilter(_HANDLER_DEPRECATION)  # Added once: the same filter object.
        self._manager, self._on_saved, self._step = checkpoint_manager, on_saved, None
        self._previous_handler = signal.getsignal(signal.SIGTERM)
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            getattr(strategy, "cluster_resolver", None),
            checkpoint_manager,
            termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=self._stop),
        )

    def save_if_preempted(self, step):
        """Saves a checkpoint numbered `step` and stops if a SIGTERM came (on any worker); else nothing."""
        self._step = step
        self._handler.save_checkpoint_if_preempted(checkpoint_number=step)

    def _stop(self):
        self._on_saved()
        raise contract.Interrupted(
            signal.SIGTERM,
            f"saved a checkpoint at step {self._step} ({self._manager.latest_checkpoint}); run the same command "
            "to resume from it",
        )

    def close(self):
        """Gives SIGTERM back to the handler it had before."""
        signal.signal(signal.SIGTERM, self._previous_handler)


class _HandlerDeprecationFilter(logging.Filter):
    def filter(self, record):
        return "PreemptionCheckpointHandler.total_run_calls" not in record.getMessage()


_HANDLER_DEPRECATION = _HandlerDeprecationFilter()


def _time_left(steps_left, secs_per_step, timed_from, current):
    return (
        f"{steps_left:,} steps to go at {secs_per_step:.2f} s/step (measured over steps {timed_from + 1}-{current}): "
        f"about {contract.format_duration(steps_left * secs_per_step)}"
    )


def _progress_bar(initial, total, enabled):
    # A bar on a terminal; off one (a log file, Vertex AI, SageMaker, Slurm) a line every 30 s.
    return contract.progress_bar(total, "step", initial=initial, enabled=enabled)
