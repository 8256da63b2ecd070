"""Training throughput of the default WaveNet, and of the input pipeline alone, in one run.

    python benchmarks/trainer_benchmark.py [--steps 12] [--batch_size 8] [--crop_samples N] [--steps_per_loop 1,10]
        [--mixed_precision] [--jit_compile] [--compare_crops 4096,16000]

1. Preprocesses the bundled clips at 16 kHz into 16,000-sample windows.
2. Trains the default model (receptive field 2,048) for --steps steps with
   `trainer.task.run` and reads its samples/s (measured after the first,
   compiling step, with evaluations and audio summaries off).
3. Reads the same tf.data input (same batch, crops, parsing) alone for
   --input_batches batches and reports its samples/s.
The input must be >= 10x what the model consumes, so it never starves training.
4. Times one training step (forward, gradient, Adam) of the same model on the
   same random codes in two formulations: the Keras model's forward over every
   position, sliced to the scored outputs (the trainer's until 2026-11-24), and
   `trainer.model.scored_logits` (the trainer's now), for each --compare_crops.
Runs on whatever device TensorFlow finds (CPU here; GPU where present).
"""

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines import contract, preprocess  # noqa: E402
from trainer import data, task  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--crop_samples", type=int, default=None, help="Training crops (default: whole windows).")
    parser.add_argument("--input_batches", type=int, default=200)
    parser.add_argument("--model", default="default")
    parser.add_argument("--mixed_precision", action="store_true")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--compare_crops", default="4096,16000", help="Crop lengths for the formulation comparison.")
    parser.add_argument("--compare_steps", type=int, default=5)
    parser.add_argument(
        "--steps_per_loop", default="1,10", help="Comma-separated values compared in this run (the first is the base)."
    )
    args = parser.parse_args()

    import tensorflow as tf

    # First, in a process that has trained nothing yet (TensorFlow's speed depended on what ran before: BENCHMARKS.md).
    formulations = {
        int(crop): compare_formulations(args.model, args.batch_size, int(crop), args.compare_steps)
        for crop in args.compare_crops.split(",")
    }
    with tempfile.TemporaryDirectory() as workdir:
        data_dir = os.path.join(workdir, "data")
        preprocess.run([f"--output={data_dir}", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
        description = contract.read_description(data_dir)
        window = description.window_samples
        crop = args.crop_samples or window
        rates = {}
        for steps_per_loop in [int(n) for n in args.steps_per_loop.split(",")]:
            flags = [
                f"--data={data_dir}", f"--job_dir={os.path.join(workdir, f'job-{steps_per_loop}')}",
                f"--preset={args.model}", f"--steps={args.steps}", f"--batch_size={args.batch_size}",
                "--eval_every=1000000", "--checkpoint_every=1000000", "--summary_audio_secs=0",
                f"--steps_per_loop={steps_per_loop}",
            ]  # fmt: skip
            flags += [f"--crop_samples={args.crop_samples}"] * bool(args.crop_samples)
            flags += ["--mixed_precision"] * args.mixed_precision + ["--jit_compile"] * args.jit_compile
            rates[steps_per_loop] = task.run(flags).samples_per_sec
        base = next(iter(rates))
        model_rate = rates[base]

        paths = data.split_paths(data_dir, description, contract.TRAIN)
        dataset = data.make_dataset(paths, window, args.batch_size, crop_samples=crop, seed=0,
                                    split_windows=description.splits[contract.TRAIN].windows)  # fmt: skip
        iterator = iter(dataset)
        next(iterator)
        started = time.perf_counter()
        for _ in range(args.input_batches):
            next(iterator)
        input_rate = args.input_batches * args.batch_size * crop / (time.perf_counter() - started)

    devices = [d.name for d in tf.config.list_logical_devices()]
    print(f"\ndevices: {devices}; model {args.model}, global batch {args.batch_size} x {crop} samples")
    for steps_per_loop, rate in rates.items():
        print(
            f"training, --steps_per_loop {steps_per_loop:>4}: {rate:>12,.0f} samples/s "
            f"({rate / description.sample_rate:.2f}x real time; {rate / model_rate:.2f}x --steps_per_loop {base})"
        )
    print(f"input only: {input_rate:>12,.0f} samples/s")
    print(f"input / training: {input_rate / model_rate:.0f}x (target >= 10x)")
    print(f"\none training step, Keras forward vs scored_logits, global batch {args.batch_size}:")
    for crop, (keras_rate, scored_rate) in formulations.items():
        print(
            f"crop {crop:>6}: Keras forward {keras_rate:>10,.0f} samples/s, scored_logits {scored_rate:>10,.0f} "
            f"samples/s ({scored_rate / keras_rate:.2f}x)"
        )


def compare_formulations(preset, batch_size, crop, steps):
    """Samples/s of a training step with the Keras model's forward and with scored_logits (same weights, codes)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer.model import PRESETS, build_wavenet, scored_logits

    wavenet_config = PRESETS[preset]
    rf = wavenet_config.receptive_field
    keras.utils.set_random_seed(0)
    model = build_wavenet(wavenet_config)
    codes = tf.constant(
        np.random.default_rng(0).integers(0, wavenet_config.quantization_channels, (batch_size, crop + 1))
    )
    codes = tf.cast(codes, tf.int32)

    def keras_logits(inputs):
        return model(inputs, training=True)[:, rf - 1 :]

    def scored(inputs):
        return scored_logits(model, wavenet_config, inputs)

    rates = []
    for logits_of in (keras_logits, scored):
        optimizer = keras.optimizers.Adam(1e-4)

        @tf.function
        def train_step(codes, logits_of=logits_of, optimizer=optimizer):
            with tf.GradientTape() as tape:
                logits = tf.cast(logits_of(codes[:, :-1]), tf.float32)
                loss = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(codes[:, rf:], logits, from_logits=True)
                )
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            return loss

        train_step(codes).numpy()  # Tracing and the first run.
        started = time.perf_counter()
        for _ in range(steps):
            train_step(codes).numpy()
        rates.append(steps * batch_size * crop / (time.perf_counter() - started))
    return tuple(rates)


if __name__ == "__main__":
    main()
