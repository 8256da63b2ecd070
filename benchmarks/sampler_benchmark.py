"""Generation speed of a WaveNet preset (default: "default"): cached against naive, 1 stream and a batch of 64.

    python benchmarks/sampler_benchmark.py [--seconds 2] [--batches 1,64] [--cores 1,2] [--engines cpu,xla]
        [--preset default] [--condition_values 0]

Each (engine, cores, batch) runs in its own process pinned to that many cores
before TensorFlow starts; the cpu engine uses one thread per core. Weights are
random: speed does not depend on their values. "naive" generates by a full
forward pass over the receptive field per sample, what a plain `model(context)`
loop costs. Targets on the project's 2-core CPU: one stream >= 8,000 samples/s;
a batch of 64 >= 10x real time at 16 kHz. With --condition_values N the model
is globally conditioned on N label values, the clips of a batch taking them in
turn (what conditioning costs per step).
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CHUNK = 4000


def generate_naive(model, wavenet_config, num_samples, seed):
    """A clip by the plain algorithm (a full pass per sample over the receptive field): the reference here.

    Returns:
      float32 [num_samples] in [-1, 1].
    """
    import tensorflow as tf

    from pipelines import contract

    rf = wavenet_config.receptive_field

    @tf.function
    def loop(context):
        out = tf.TensorArray(tf.int32, size=num_samples)
        for i in tf.range(num_samples):
            logits = model(context, training=False)[:, -1, :]
            code = tf.random.stateless_categorical(tf.cast(logits, tf.float32), 1, seed=[seed, i], dtype=tf.int32)
            context = tf.concat([context[:, 1:], code], axis=1)
            out = out.write(i, code[0, 0])
        return out.stack()

    start = tf.fill([1, rf], wavenet_config.quantization_channels // 2)
    codes = loop(start).numpy()
    return contract.mu_law_decode(codes, wavenet_config.quantization_channels)


def measure(preset, engine, cores, batch, seconds, naive_samples, condition_values=0):
    import dataclasses

    import numpy as np

    from pipelines import contract
    from sampler import loading
    from trainer.model import PRESETS, build_wavenet

    wavenet_config = dataclasses.replace(PRESETS[preset], condition_values=condition_values)
    model = build_wavenet(wavenet_config)
    vocabulary = tuple(f"label {i}" for i in range(condition_values))
    model_config = contract.ModelConfig(
        wavenet_config=wavenet_config, sample_rate=16000, condition_kind="genre" if condition_values else None,
        condition_vocabulary=vocabulary,
    )  # fmt: skip
    generator = loading.make(model, model_config, engine=engine, threads=cores)
    conditions = np.arange(batch) % condition_values if condition_values else None
    n = int(seconds * 16000)
    # Compile (and for XLA trace both chunk sizes used below) before timing.
    generator.generate(min(n, CHUNK), batch_size=batch, chunk=CHUNK, conditions=conditions)
    generator.generate(n % CHUNK or CHUNK, batch_size=batch, chunk=CHUNK, conditions=conditions)
    started = time.perf_counter()
    codes = generator.generate(n, batch_size=batch, chunk=CHUNK, conditions=conditions)
    fast_rate = codes.size / (time.perf_counter() - started)
    assert codes.shape == (batch, n) and len(np.unique(codes)) > 1
    result = {"engine": engine, "cores": cores, "batch": batch, "fast_samples_per_sec": fast_rate}
    if naive_samples and not condition_values:
        generate_naive(model, wavenet_config, 8, 0)  # Trace once.
        started = time.perf_counter()
        generate_naive(model, wavenet_config, naive_samples, 0)
        result["naive_samples_per_sec"] = naive_samples / (time.perf_counter() - started)
        assert np.isfinite(result["naive_samples_per_sec"])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="Seconds generated per stream.")
    parser.add_argument("--batches", default="1,64", help="Comma-separated batch sizes (clips generated together).")
    parser.add_argument("--cores", default="1,2", help="Comma-separated core counts to pin each run to.")
    parser.add_argument("--engines", default="cpu,xla", help="Comma-separated engines (sampler.loading.ENGINES).")
    parser.add_argument(
        "--naive_samples", type=int, default=300, help="Samples for the naive rate (batch 1, cpu engine rows)."
    )
    parser.add_argument("--preset", default="default", help="Model preset (trainer.model.PRESETS).")
    parser.add_argument(
        "--condition_values", type=int, default=0, help="Label values of a globally conditioned model (0: none)."
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, cores, batch = args.child.split(",")
        cores, batch = int(cores), int(batch)
        os.sched_setaffinity(0, set(range(cores)))  # Before TensorFlow and numba start their threads.
        naive = args.naive_samples if batch == 1 and engine == "cpu" else 0
        result = measure(args.preset, engine, cores, batch, args.seconds, naive, args.condition_values)
        print("RESULT " + json.dumps(result))
        return

    conditioned = f", conditioned on {args.condition_values} label values" if args.condition_values else ""
    print(f"{args.preset} model{conditioned}, {args.seconds:g} s per stream at 16 kHz")
    for engine in args.engines.split(","):
        for cores in map(int, args.cores.split(",")):
            for batch in map(int, args.batches.split(",")):
                child = [sys.executable, __file__, "--child", f"{engine},{cores},{batch}"]
                child += ["--seconds", str(args.seconds), "--naive_samples", str(args.naive_samples)]
                child += ["--preset", args.preset, "--condition_values", str(args.condition_values)]
                out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
                result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
                rate = result["fast_samples_per_sec"]
                line = (
                    f"{engine} engine, {cores} core(s), batch {batch:>4}: {rate:>10,.0f} samples/s aggregate, "
                    f"{rate / batch:>8,.0f} per stream, {rate / 16000:6.2f}x real time"
                )
                if "naive_samples_per_sec" in result:
                    naive = result["naive_samples_per_sec"]
                    line += f"; naive {naive:,.0f} samples/s -> cached is {rate / naive:.0f}x faster"
                print(line, flush=True)


if __name__ == "__main__":
    main()
