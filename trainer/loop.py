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
      iterator: distributed iterator of int32 [per-replica batch, crop_samples] codes
        (with their int32 [per-replica batch] label indices for a conditioned model).
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
    import tensorflow as tf

    global_batch = settings.global_batch

    def train_replica(batch):
        with tf.GradientTape() as tape:
            per_example = per_example_nats(wavenet, wavenet_config, batch)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if settings.mixed_precision else loss
        grads = tape.gradient(scaled, wavenet.trainable_variables)
        optimizer.apply(grads, wavenet.trainable_variables)
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

    @tf.function
    def eval_step(codes):
        def replica(batch):
            per_example = per_example_nats(wavenet, wavenet_config, batch)
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

    def next_boundary(current):
        """The step the next loop ends at: a checkpoint, an evaluation, the end or the preemption."""
        ends = [
            settings.steps,
            (current // settings.checkpoint_every + 1) * settings.checkpoint_every,
            (current // settings.eval_every + 1) * settings.eval_every,
            current + settings.steps_per_loop,
        ]
        if stop_after_steps is not None:
            ends.append(start_step + stop_after_steps)
        return min(ends)

    writers = {
        name: tf.summary.create_file_writer(posixpath.join(write_dir, "logs", name)) for name in ("train", "validation")
    }
    start_step = int(step.numpy())
    result = TrainResult(step=start_step)
    samples_per_step = global_batch * settings.crop_samples
    progress = _progress_bar(start_step, settings.steps, enabled=chief)
    timed_from = None  # (step, time) after the first loop, which includes tracing and compilation.
    current = start_step
    while current < settings.steps and (stop_after_steps is None or current - start_step < stop_after_steps):
        num_steps = next_boundary(current) - current
        losses = train_loop(iterator, tf.constant(num_steps, tf.int32)).numpy()
        first, current = current + 1, int(step.numpy())
        now = time.monotonic()
        rate = None
        if timed_from is not None:
            rate = (current - timed_from[0]) * samples_per_step / (now - timed_from[1])
            if result.samples_per_sec is None and chief and current < settings.steps:
                secs_per_step = samples_per_step / rate
                progress.write(
                    f"{settings.steps - current:,} steps to go at {secs_per_step:.2f} s/step "
                    f"(measured over steps {timed_from[0] + 1}-{current}): about "
                    f"{contract.format_duration((settings.steps - current) * secs_per_step)}",
                    file=sys.stderr,
                )
            result.samples_per_sec = rate
        else:
            timed_from = (current, now)
        bad = np.flatnonzero(~np.isfinite(losses))
        if len(bad):
            progress.close()
            raise TrainingError(
                f"the loss became {losses[bad[0]]} at step {first + bad[0]}; training stopped. The last good "
                f"checkpoint ({checkpoint_manager.latest_checkpoint or 'none'}) is kept; lower --learning_rate, "
                "set --clip_norm, or check the data."
            )
        result.losses.extend(zip(range(first, current + 1), losses.tolist(), strict=True))
        result.step, result.train_loss_nats = current, float(losses[-1])
        progress.update(num_steps)
        progress.set_postfix(loss=f"{losses[-1]:.3f}", samples_per_s=f"{rate:,.0f}" if rate else "...")
        with writers["train"].as_default():
            for offset, loss in enumerate(losses.tolist()):
                tf.summary.scalar("loss_nats", loss, step=first + offset)
                tf.summary.scalar("loss_bits", loss / math.log(2), step=first + offset)
            tf.summary.scalar("learning_rate", float(np.asarray(optimizer.learning_rate)), step=current)
            if rate:
                tf.summary.scalar("samples_per_sec", rate, step=current)
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
                    write_audio_summary(wavenet, wavenet_config, settings, current)
    progress.close()
    for writer in writers.values():
        writer.flush()
    return result


def learning_rate_schedule(name, peak, warmup_steps, total_steps):
    """Linear warm-up from 0 to `peak` over warmup_steps, then constant or a cosine decay to 0 at total_steps.

    Keras' CosineDecay with warm-up (I. Loshchilov and F. Hutter, "SGDR", ICLR 2017; warm-up as in
    P. Goyal et al., "Accurate, Large Minibatch SGD", 2017, section 2.2).

    Returns:
      a keras LearningRateSchedule, or the float `peak` for a constant rate without warm-up.
    """
    import keras

    if warmup_steps <= 0 and name == "constant":
        return peak
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=1.0 if name == "constant" else 0.0,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def per_example_nats(wavenet, wavenet_config, batch):
    """Per-example cross-entropy of a WaveNet's predictions, over the outputs that see a full receptive field.

    The model reads codes[:, :-1]; output t predicts codes[:, t + 1]. Outputs
    before receptive_field - 1 see the zero padding of the causal convolutions,
    not music, and are not scored (the quantity the paper reports, van den
    Oord et al. 2016, section 3.2, as negative log-likelihood per sample); the
    logits are computed only where scored (`trainer.model.scored_logits`).

    Args:
      wavenet: keras.Model (`trainer.model.build_wavenet`); wavenet_config: its WaveNetConfig.
      batch: int32 [batch, time] mu-law codes (time static, > receptive_field), or
        (codes, int32 [batch] label indices) for a conditioned model.

    Returns:
      float32 [batch] mean nats per scored sample.
    """
    import keras
    import tensorflow as tf

    from trainer import model

    codes, condition = batch if isinstance(batch, tuple | list) else (batch, None)
    logits = model.scored_logits(wavenet, wavenet_config, codes[:, :-1], condition)
    per_sample = keras.losses.sparse_categorical_crossentropy(
        codes[:, wavenet_config.receptive_field :], tf.cast(logits, tf.float32), from_logits=True
    )
    return tf.reduce_mean(per_sample, axis=1)


SUMMARY_CONDITIONS = 4  # A conditioned model's audio summary: one clip for each of its first label values.


def write_audio_summary(wavenet, wavenet_config, settings, step):
    """A clip from the current weights, with its spectrogram, into the current TensorBoard writer.

    Generated by the sampler's fast engine (`sampler.loading.generate_audio`):
    seconds of audio in seconds of compute, where a full pass per sample
    would take minutes. A conditioned model gets one clip per label value
    (the first SUMMARY_CONDITIONS known values), generated as one batch.
    """
    import tensorflow as tf

    from pipelines import contract
    from sampler import loading, spectrogram

    model_config = contract.ModelConfig(
        wavenet=wavenet_config,
        sample_rate=settings.sample_rate,
        condition_kind=settings.condition_kind,
        condition_vocabulary=settings.condition_vocabulary,
    )
    num_samples = int(settings.summary_audio_secs * settings.sample_rate)
    if model_config.conditioned:
        known = [v for v in model_config.condition_vocabulary if v != contract.UNKNOWN_LABEL]
        names = (known or list(model_config.condition_vocabulary))[:SUMMARY_CONDITIONS]
        conditions = model_config.condition_indices(names)
        tags = [f"generated/{settings.condition_kind}={name}" for name in names]
    else:
        conditions, tags, names = None, ["generated"], [""]
    clips = loading.generate_audio(
        wavenet, model_config, num_samples, seed=settings.seed + step, num_clips=len(tags), conditions=conditions
    )
    for tag, name, clip in zip(tags, names, clips, strict=True):
        tf.summary.audio(tag, clip[None, :, None], settings.sample_rate, step=step)
        title = f"Generated at step {step}" + (f" ({settings.condition_kind} {name})" if name else "")
        png = spectrogram.spectrogram_png(clip, settings.sample_rate, title=title)
        tf.summary.image(
            tag.replace("generated", "generated_spectrogram", 1), tf.image.decode_png(png)[None], step=step
        )


def generate_naive(wavenet, wavenet_config, num_samples, seed):
    """A clip by the plain algorithm (a full pass per sample): the reference the sampler's benchmark compares with.

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
    # A bar on a terminal; off one (a log file, Vertex AI, SageMaker, Slurm) a line every 30 s.
    return contract.progress_bar(total, "step", initial=initial, enabled=enabled)
