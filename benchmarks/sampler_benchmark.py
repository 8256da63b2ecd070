"""Generation speed of the default WaveNet: cached (fast) against naive, 1 stream and a batch of 64.

    python benchmarks/sampler_benchmark.py [--seconds 2] [--batches 1,64] [--cores 1,2]

Each (cores, batch) runs in its own process pinned to that many cores before
TensorFlow starts. Weights are random: speed does not depend on their values.
"naive" generates by a full forward pass over the receptive field per sample,
what a plain `model(context)` loop costs. Targets on the project's 2-core CPU:
one stream >= 8,000 samples/s; a batch of 64 >= 10x real time at 16 kHz.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def measure(batch, seconds, naive_samples):
    import numpy as np

    from sampler.fast import FastWaveNet
    from trainer import model, task

    config = model.PRESETS["default"]
    wavenet = model.build_wavenet(config)
    exported = {"model": {**dataclasses.asdict(config), "dilations": list(config.dilations)},
                "receptive_field": config.receptive_field}  # fmt: skip
    fast = FastWaveNet(wavenet, exported)
    n = int(seconds * 16000)
    fast.generate(min(n, 4000), batch_size=batch)  # Compile both chunk sizes used below.
    fast.generate(n % 4000 or 4000, batch_size=batch)
    started = time.perf_counter()
    codes = fast.generate(n, batch_size=batch)
    fast_rate = codes.size / (time.perf_counter() - started)
    result = {"batch": batch, "fast_samples_per_sec": fast_rate}
    if naive_samples:
        task.generate_naive(wavenet, config, 8, 0)  # Trace once.
        started = time.perf_counter()
        task.generate_naive(wavenet, config, naive_samples, 0)
        result["naive_samples_per_sec"] = naive_samples / (time.perf_counter() - started)
        assert np.isfinite(result["naive_samples_per_sec"])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="Seconds generated per stream.")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--cores", default="1,2")
    parser.add_argument("--naive_samples", type=int, default=300, help="Samples for the naive rate (batch 1).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cores, batch = map(int, args.child.split(","))
        os.sched_setaffinity(0, set(range(cores)))  # Before TensorFlow starts its thread pools.
        result = measure(batch, args.seconds, args.naive_samples if batch == 1 else 0)
        print("RESULT " + json.dumps({**result, "cores": cores}))
        return

    print(f"default model, {args.seconds:g} s per stream at 16 kHz")
    rows = []
    for cores in map(int, args.cores.split(",")):
        for batch in map(int, args.batches.split(",")):
            child = [sys.executable, __file__, "--child", f"{cores},{batch}", "--seconds", str(args.seconds)]
            child += ["--naive_samples", str(args.naive_samples)]
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
            result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            rows.append(result)
            line = (
                f"{cores} core(s), batch {batch:>4}: {result['fast_samples_per_sec']:>10,.0f} samples/s aggregate, "
                f"{result['fast_samples_per_sec'] / batch:>8,.0f} per stream, "
                f"{result['fast_samples_per_sec'] / 16000:6.2f}x real time"
            )
            if "naive_samples_per_sec" in result:
                line += (
                    f"; naive {result['naive_samples_per_sec']:,.0f} samples/s -> cached is "
                    f"{result['fast_samples_per_sec'] / result['naive_samples_per_sec']:.0f}x faster"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
