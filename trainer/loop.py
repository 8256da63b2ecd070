"""The training loop: steps, NaN stop, checkpoints, evaluation and TensorBoard summaries.

`trainer.task` builds the strategy, the model and the input and hands them
here; this module owns what happens between the first step and the last.
"""

import dataclasses
import math
import posixpath
import sys
import time

import numpy as np

from pipelines import contract


class TrainingError(RuntimeError):
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
      samples_per_sec: training throughput after the first step (which includes
        tracing and compilation), in audio samples of input per second; None
        with fewer than two steps.
    """

    step: int
    train_loss_nats: float = None
    validation_loss_nats: float = None
    losses: list = dataclasses.field(default_factory=list)
    export_dir: str = None
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


def train(
    settings,
    strategy,
    wavenet,
    wavenet_config,
    optimizer,
    step,
    checkpoint_manager,
    iterator,
    validation_dataset,
    write_dir,
    chief,
    on_checkpoint=lambda: None,
    stop_after_steps=None,
):
    """Runs training steps until `settings.steps`.

    Args:
      settings: LoopSettings.
      strategy: the tf.distribute.Strategy everything was built under.
      wavenet: keras.Model; wavenet_config: its contract.WaveNetConfig.
      optimizer: built keras optimizer (a LossScaleOptimizer with mixed precision).
      step: int64 tf.Variable, the global step (checkpointed).
      checkpoint_manager: tf.train.CheckpointManager of model, optimizer and step.
      iterator: distributed iterator of int32 [per-replica batch, crop_samples] codes.
      validation_dataset: callable() -> distributed dataset of validation batches, or None.
      write_dir: where TensorBoard logs go (logs/train, logs/validation).
      chief: whether this worker shows progress and writes the audio summary.
      on_checkpoint: called after every checkpoint (mirrors the job_dir).
      stop_after_steps: stop after this many steps of this run, as if preempted (tests).

    Returns:
      TrainResult (export_dir None).

    Raises:
      TrainingError: the loss became NaN or Inf; the last good checkpoint is kept.
    """
    import keras
    import tensorflow as tf

    rf = wavenet_config.receptive_field
    global_batch = settings.global_batch

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
            scaled = optimizer.scale_loss(loss) if settings.mixed_precision else loss
        grads = tape.gradient(scaled, wavenet.trainable_variables)
        optimizer.apply(grads, wavenet.trainable_variables)
        return loss

    # XLA compiles the replica's computation; reading the input iterator stays outside it.
    compiled_replica = tf.function(train_replica, jit_compile=True) if settings.jit_compile else train_replica

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
        if validation_dataset is None:
            return None
        total = count = 0.0
        for batch in validation_dataset():
            batch_total, batch_count = eval_step(batch)
            total, count = total + float(batch_total), count + float(batch_count)
        return total / count if count else None

    writers = {
        name: tf.summary.create_file_writer(posixpath.join(write_dir, "logs", name)) for name in ("train", "validation")
    }
    start_step = int(step.numpy())
    result = TrainResult(step=start_step)
    samples_per_step = global_batch * settings.crop_samples
    progress = _progress_bar(start_step, settings.steps, enabled=chief)
    started = time.monotonic()
    timed_from = None  # (step, time) after the first step, which includes tracing and compilation.
    while int(step.numpy()) < settings.steps:
        loss = float(train_step(iterator))
        current = int(step.numpy())
        if timed_from is None:
            timed_from = (current, time.monotonic())
        if not math.isfinite(loss):
            progress.close()
            raise TrainingError(
                f"the loss became {loss} at step {current}; training stopped. The last good checkpoint "
                f"({checkpoint_manager.latest_checkpoint or 'none'}) is kept; lower --learning_rate or check the data."
            )
        result.losses.append((current, loss))
        result.step, result.train_loss_nats = current, loss
        elapsed = time.monotonic() - started
        progress.update(1)
        progress.set_postfix(
            loss=f"{loss:.3f}", samples_per_s=f"{(current - start_step) * samples_per_step / elapsed:,.0f}"
        )
        with writers["train"].as_default(step=current):
            tf.summary.scalar("loss_nats", loss)
            tf.summary.scalar("loss_bits", loss / math.log(2))
            tf.summary.scalar("learning_rate", float(np.asarray(optimizer.learning_rate)))
        if current % settings.checkpoint_every == 0 or current == settings.steps:
            checkpoint_manager.save(checkpoint_number=current)
            on_checkpoint()
        if current % settings.eval_every == 0 or current == settings.steps:
            result.validation_loss_nats = validation_loss()
            with writers["validation"].as_default(step=current):
                if result.validation_loss_nats is not None:
                    tf.summary.scalar("loss_nats", result.validation_loss_nats)
                    tf.summary.scalar("loss_bits", result.validation_loss_nats / math.log(2))
                if chief and settings.summary_audio_secs > 0:
                    num_samples = int(settings.summary_audio_secs * settings.sample_rate)
                    clip = generate_naive(wavenet, wavenet_config, num_samples, settings.seed)
                    tf.summary.audio("generated", clip[None, :, None], settings.sample_rate)
        if stop_after_steps is not None and current - start_step >= stop_after_steps:
            break
    progress.close()
    for writer in writers.values():
        writer.flush()
    timed_steps = result.step - timed_from[0] if timed_from else 0
    if timed_steps:
        result.samples_per_sec = timed_steps * samples_per_step / (time.monotonic() - timed_from[1])
    return result


def generate_naive(wavenet, wavenet_config, num_samples, seed):
    """A short clip by the plain algorithm (a full pass per sample), for TensorBoard.

    Returns:
      float32 [num_samples] in [-1, 1].
    """
    import tensorflow as tf

    rf = wavenet_config.receptive_field

    @tf.function
    def loop(context):
        out = tf.TensorArray(tf.int32, size=num_samples)
        for i in tf.range(num_samples):
            logits = wavenet(context, training=False)[:, -1, :]
            code = tf.random.stateless_categorical(tf.cast(logits, tf.float32), 1, seed=[seed, i], dtype=tf.int32)
            context = tf.concat([context[:, 1:], code], axis=1)
            out = out.write(i, code[0, 0])
        return out.stack()

    start = tf.fill([1, rf], wavenet_config.quantization_channels // 2)
    codes = loop(start).numpy()
    return contract.mu_law_decode(codes, wavenet_config.quantization_channels)


def _progress_bar(initial, total, enabled):
    from tqdm import tqdm

    # In logs (no terminal) refresh rarely, so a long run does not write megabytes of bars.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(initial=initial, total=total, unit="step", disable=not enabled, mininterval=interval)
