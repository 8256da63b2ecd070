"""Held-out quality of the default WaveNet after a fixed CPU budget, for several training configurations.

    python benchmarks/heldout_benchmark.py [--training_music soundtrack|corpus] [--corpus ../shared/corpus]
        [--steps 150] [--configs lr-1e-3,lr-3e-3] [--seeds 0,1]

1. Preprocesses the training music at 16 kHz into 16,000-sample windows: by
   default the whole Endgame: Singularity soundtrack in full tracks (Debian's
   `singularity-music`, about 50 MB, `apt-get download`, not bundled), or with
   --training_music corpus the clips of --corpus (the same composer).
2. Fetches Debian's `asc-music` package (three tracks by another composer,
   about 10 MB) and preprocesses it the same way, every track in the
   validation split: music the model never hears.
3. For each configuration, trains the default model for --steps steps
   (batch 16 x 4,096-sample crops unless the configuration says otherwise)
   and scores the export on the held-out music with `trainer.evaluate`: nats
   per sample beside the entropy of the held-out code histogram.

Configurations (CONFIGS): a constant learning rate of 1e-3, 3e-3 or 5e-3
without clipping; cosine-1e-3, 50 warm-up steps then a cosine decay to 0 at
--steps with global-norm clipping at 1.0; cosine-3e-3 and cosine-5e-3, 20
warm-up steps and the same decay without clipping, for runs of 650+ steps;
batch-8 variants (run them with twice the steps for the same compute) and
batch-4 ones (four times); cosine runs with augmentation: each crop at
a random level within +/- 6 or 12 dB (--gain_augmentation_db) and half of
them with the waveform's sign inverted (--random_polarity). Every configuration
shuffles through a buffer of 256 windows (the trainer's until 2026-11-24)
except the `-shuffled` ones (all of the soundtrack's windows), and the last
also averages Adam's squared gradients over ~100 steps (--adam_beta2=0.99).
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

# The training input's shuffle buffer until 2026-11-24: 256 windows, a few tracks' worth.
BUFFER_256 = ["--shuffle_buffer_windows=256"]
# A buffer of all the soundtrack's 3,819 windows.
BUFFER_ALL = ["--shuffle_buffer_windows=4096"]
CONSTANT = ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0", *BUFFER_256]
COSINE_SCHEDULE = ["--lr_schedule=cosine", "--warmup_steps=20", "--clip_norm=0"]  # Decays to 0 at --steps.
COSINE = [*COSINE_SCHEDULE, *BUFFER_256]
BATCH_8_COSINE_5E_3 = [*COSINE, "--learning_rate=5e-3", "--batch_size=8"]
GAIN_6DB_POLARITY = ["--gain_augmentation_db=6", "--random_polarity"]
BATCH_8_7E_3_AUG = [*COSINE_SCHEDULE, "--learning_rate=7e-3", "--batch_size=8", *GAIN_6DB_POLARITY]
# Every configuration names its learning rate, so a row of BENCHMARKS.md reruns the same whatever the defaults.
CONFIGS = {
    "lr-1e-3": [*CONSTANT, "--learning_rate=1e-3"],  # The defaults until 2026-11-24.
    "cosine-1e-3": [
        "--lr_schedule=cosine",
        "--warmup_steps=50",
        "--clip_norm=1.0",
        "--learning_rate=1e-3",
        *BUFFER_256,
    ],
    "lr-3e-3": [*CONSTANT, "--learning_rate=3e-3"],  # The defaults since.
    "lr-5e-3": [*CONSTANT, "--learning_rate=5e-3"],
    # A short warm-up, then a cosine decay to 0 at --steps, no clipping: for the runs of 650+ steps.
    "cosine-3e-3": [*COSINE, "--learning_rate=3e-3"],
    "cosine-5e-3": [*COSINE, "--learning_rate=5e-3"],
    # Half the batch: run with twice the --steps for the same compute.
    "batch-8-lr-2e-3": [*CONSTANT, "--learning_rate=2e-3", "--batch_size=8"],
    "batch-8-lr-3e-3": [*CONSTANT, "--learning_rate=3e-3", "--batch_size=8"],
    # Half the batch of twice the crop: the same samples per step, 3/4 of them scored instead of 1/2.
    "batch-8-crop-8192-lr-3e-3": [*CONSTANT, "--learning_rate=3e-3", "--batch_size=8", "--crop_samples=8192"],
    "batch-8-cosine-5e-3": BATCH_8_COSINE_5E_3,
    # A quarter of the batch: run with four times the --steps.
    "batch-4-cosine-5e-3": [*COSINE, "--learning_rate=5e-3", "--batch_size=4"],
    "batch-4-cosine-5e-3-gain-6db-polarity": [*COSINE, "--learning_rate=5e-3", "--batch_size=4", *GAIN_6DB_POLARITY],
    "batch-4-cosine-7e-3-gain-6db-polarity": [*COSINE, "--learning_rate=7e-3", "--batch_size=4", *GAIN_6DB_POLARITY],
    # Each crop at a random level within +/- 6 or 12 dB (never clipped); half the crops' polarity inverted.
    "batch-8-cosine-5e-3-gain-6db": [*BATCH_8_COSINE_5E_3, "--gain_augmentation_db=6"],
    "batch-8-cosine-5e-3-gain-12db": [*BATCH_8_COSINE_5E_3, "--gain_augmentation_db=12"],
    "batch-8-cosine-5e-3-gain-6db-polarity": [*BATCH_8_COSINE_5E_3, *GAIN_6DB_POLARITY],
    "batch-8-cosine-5e-3-gain-12db-polarity": [*BATCH_8_COSINE_5E_3, "--gain_augmentation_db=12", "--random_polarity"],
    "batch-8-cosine-7e-3-gain-6db-polarity": [*BATCH_8_7E_3_AUG, *BUFFER_256],
    "batch-8-cosine-1e-2-gain-6db-polarity": [*COSINE, "--learning_rate=1e-2", "--batch_size=8", *GAIN_6DB_POLARITY],
    "batch-8-cosine-7e-3-gain-6db-polarity-shuffled": [*BATCH_8_7E_3_AUG, *BUFFER_ALL],
    # And Adam's squared-gradient average over ~100 steps instead of ~1,000.
    "batch-8-cosine-7e-3-gain-6db-polarity-shuffled-beta2-0.99": [*BATCH_8_7E_3_AUG, *BUFFER_ALL, "--adam_beta2=0.99"],
}
# The best at 1,500 steps (BENCHMARKS.md): the README's CPU recipe is this configuration (tests/test_trainer.py).
CPU_RECIPE = "batch-8-cosine-7e-3-gain-6db-polarity-shuffled-beta2-0.99"
CPU_RECIPE_STEPS = 1500
AUDIO = (".mp3", ".ogg", ".flac", ".wav")


def training_flags(config, steps, seed, train_data, job):
    """The trainer's command line for one configuration: the shared flags, then the configuration's (later wins)."""
    return [
        f"--data={train_data}", f"--job_dir={job}", "--preset=default", f"--steps={steps}", "--batch_size=16",
        "--crop_samples=4096", f"--eval_every={steps * 10}", f"--checkpoint_every={steps}", "--summary_audio_secs=0",
        f"--seed={seed}", *CONFIGS[config],
    ]  # fmt: skip


LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory", "--sample_rate=16000", "--window_samples=16000"]


def debian_music(package, workdir):
    """The music files of a Debian package (`apt-get download`, unpacked, never installed): the directory."""
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True, capture_output=True)
    (deb,) = glob.glob(os.path.join(workdir, f"{package}_*.deb"))
    unpacked = os.path.join(workdir, package)
    subprocess.run(["dpkg-deb", "-x", deb, unpacked], check=True)
    return unpacked


def music_files(directory):
    return sorted(p for p in glob.glob(os.path.join(directory, "**", "*"), recursive=True) if p.endswith(AUDIO))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--training_music",
        choices=["soundtrack", "corpus"],
        default="soundtrack",
        help="soundtrack: the whole Endgame: Singularity soundtrack, full tracks (Debian's singularity-music, "
        "fetched like asc-music; 16 files, 64 min); corpus: the clips of --corpus (7 files, 6.4 min). "
        "Default: %(default)s.",
    )
    parser.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus"))
    parser.add_argument("--steps", type=int, default=150, help="Training steps per configuration.")
    parser.add_argument("--configs", default="lr-1e-3,lr-3e-3", help=f"Comma-separated, of: {', '.join(CONFIGS)}.")
    parser.add_argument(
        "--seeds", default="0", help="Comma-separated training seeds, each configuration once per seed: the spread."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        train_data, held_out = os.path.join(workdir, "train"), os.path.join(workdir, "held-out")
        music = debian_music("singularity-music", workdir) if args.training_music == "soundtrack" else args.corpus
        training = music_files(music)
        preprocess.run([*(f"--input={t}" for t in training), f"--output={train_data}", "--validation_fraction=0",
                        *LOCAL])  # fmt: skip
        tracks = music_files(debian_music("asc-music", workdir))
        preprocess.run([*(f"--input={t}" for t in tracks), f"--output={held_out}", "--validation_fraction=1", *LOCAL])
        rows = []
        for config, seed in [(c, int(s)) for c in args.configs.split(",") for s in args.seeds.split(",")]:
            name = f"{config} seed {seed} on the {args.training_music}"
            job = os.path.join(workdir, f"job-{config}-{seed}")
            started = time.monotonic()
            result = task.run(training_flags(config, args.steps, seed, train_data, job))
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
