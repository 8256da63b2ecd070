"""Held-out quality of the default WaveNet after a fixed CPU budget, for several training configurations.

    python benchmarks/heldout_benchmark.py [--corpus ../shared/corpus] [--steps 150]
        [--configs lr-1e-3,lr-3e-3] [--seeds 0,1]

1. Preprocesses the corpus (the Endgame: Singularity tracks) at 16 kHz into
   16,000-sample windows: the training data.
2. Fetches Debian's `asc-music` package (three tracks by another composer,
   about 10 MB; `apt-get download`, not bundled) and preprocesses it the same
   way, every track in the validation split: music the model never hears.
3. For each configuration, trains the default model for --steps steps
   (batch 16 x 4,096-sample crops unless the configuration says otherwise)
   and scores the export on the held-out music with `trainer.evaluate`: nats
   per sample beside the entropy of the held-out code histogram.

Configurations (CONFIGS): a constant learning rate of 1e-3, 3e-3 (the
trainer's default, chosen by this benchmark) or 5e-3 without clipping;
cosine-1e-3, 50 warm-up steps then a cosine decay to 0 at --steps with
global-norm clipping at 1.0; batch-8 variants (run them with twice the
steps for the same compute).
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines import preprocess  # noqa: E402
from trainer import evaluate, task  # noqa: E402

CONSTANT = ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0"]
# Every configuration names its learning rate, so a row of BENCHMARKS.md reruns the same whatever the defaults.
CONFIGS = {
    "lr-1e-3": [*CONSTANT, "--learning_rate=1e-3"],  # The defaults until 2026-11-24.
    "cosine-1e-3": ["--lr_schedule=cosine", "--warmup_steps=50", "--clip_norm=1.0", "--learning_rate=1e-3"],
    "lr-3e-3": [*CONSTANT, "--learning_rate=3e-3"],  # The defaults since.
    "lr-5e-3": [*CONSTANT, "--learning_rate=5e-3"],
    # Half the batch: run with twice the --steps for the same compute.
    "batch-8-lr-2e-3": [*CONSTANT, "--learning_rate=2e-3", "--batch_size=8"],
    "batch-8-lr-3e-3": [*CONSTANT, "--learning_rate=3e-3", "--batch_size=8"],
    # Half the batch of twice the crop: the same samples per step, 3/4 of them scored instead of 1/2.
    "batch-8-crop-8192-lr-3e-3": [*CONSTANT, "--learning_rate=3e-3", "--batch_size=8", "--crop_samples=8192"],
}
LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory", "--sample_rate=16000", "--window_samples=16000"]


def held_out_music(workdir):
    """The asc-music tracks, from Debian's package (downloaded, unpacked, never installed)."""
    subprocess.run(["apt-get", "download", "asc-music"], cwd=workdir, check=True, capture_output=True)
    (deb,) = glob.glob(os.path.join(workdir, "asc-music_*.deb"))
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(workdir, "asc")], check=True)
    return sorted(glob.glob(os.path.join(workdir, "asc", "**", "*.mp3"), recursive=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus"))
    parser.add_argument("--steps", type=int, default=150, help="Training steps per configuration.")
    parser.add_argument("--configs", default="lr-1e-3,lr-3e-3", help=f"Comma-separated, of: {', '.join(CONFIGS)}.")
    parser.add_argument(
        "--seeds", default="0", help="Comma-separated training seeds, each configuration once per seed: the spread."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        train_data, held_out = os.path.join(workdir, "train"), os.path.join(workdir, "held-out")
        preprocess.run([f"--input={args.corpus}", f"--output={train_data}", "--validation_fraction=0", *LOCAL])
        tracks = held_out_music(workdir)
        preprocess.run([*(f"--input={t}" for t in tracks), f"--output={held_out}", "--validation_fraction=1", *LOCAL])
        rows = []
        for config, seed in [(c, int(s)) for c in args.configs.split(",") for s in args.seeds.split(",")]:
            name = f"{config} seed {seed}"
            job = os.path.join(workdir, f"job-{config}-{seed}")
            started = time.monotonic()
            flags = [f"--data={train_data}", f"--job_dir={job}", "--model=default", f"--steps={args.steps}",
                     "--batch_size=16", "--crop_samples=4096", f"--eval_every={args.steps * 10}",
                     f"--checkpoint_every={args.steps}", "--summary_audio_secs=0", f"--seed={seed}"]  # fmt: skip
            result = task.run(flags + CONFIGS[config])
            wall = time.monotonic() - started
            scored = evaluate.evaluate(job, held_out, progress=False)
            rows.append((name, wall, result, scored))
            print(f"{name}: {args.steps} steps in {wall / 60:.1f} min ({result.samples_per_sec:,.0f} samples/s), "
                  f"train loss {result.train_loss_nats:.3f}; held-out {scored.loss_nats:.3f} nats "
                  f"({scored.loss_bits:.3f} bits)/sample over {scored.windows} windows; "
                  f"histogram entropy {scored.entropy_nats:.3f} nats", flush=True)  # fmt: skip
    print("\n| config | steps | wall | train loss (nats) | held-out (nats/sample) | held-out entropy (nats) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, wall, result, scored in rows:
        print(f"| {name} | {args.steps} | {wall / 60:.1f} min | {result.train_loss_nats:.3f} | "
              f"{scored.loss_nats:.3f} | {scored.entropy_nats:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
