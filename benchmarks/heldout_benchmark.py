"""Held-out quality of the default WaveNet after a fixed CPU budget, for two learning-rate schedules.

    python benchmarks/heldout_benchmark.py [--corpus ../shared/corpus] [--steps 400] [--configs constant,cosine]

1. Preprocesses the corpus (the Endgame: Singularity tracks) at 16 kHz into
   16,000-sample windows: the training data.
2. Fetches Debian's `asc-music` package (three tracks by another composer,
   about 10 MB; `apt-get download`, not bundled) and preprocesses it the same
   way, every track in the validation split: music the model never hears.
3. For each configuration, trains the default model for --steps steps
   (batch 16 x 4,096-sample crops) and scores the export on the held-out
   music with `trainer.evaluate`: nats per sample beside the entropy of the
   held-out code histogram.

Configurations: constant = constant learning rate 1e-3, no clipping (the
defaults, chosen by this benchmark); cosine = 50 warm-up steps, cosine decay
to 0 at --steps, global-norm clipping at 1.0.
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

CONFIGS = {
    "constant": ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0"],
    "cosine": ["--lr_schedule=cosine", "--warmup_steps=50", "--clip_norm=1.0"],
    "constant-3e-3": ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0", "--learning_rate=3e-3"],
    "batch-8-2e-3": ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0", "--learning_rate=2e-3",
                     "--batch_size=8"],
    "crop-8192-3e-3": ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0", "--learning_rate=3e-3",
                       "--batch_size=8", "--crop_samples=8192"],
    "batch-8-3e-3": ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0", "--learning_rate=3e-3",
                     "--batch_size=8"],
    "constant-5e-3": ["--lr_schedule=constant", "--warmup_steps=0", "--clip_norm=0", "--learning_rate=5e-3"],
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
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--configs", default="constant,cosine", help="Comma-separated: constant, cosine.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        train_data, held_out = os.path.join(workdir, "train"), os.path.join(workdir, "held-out")
        preprocess.run([f"--input={args.corpus}", f"--output={train_data}", "--validation_fraction=0", *LOCAL])
        tracks = held_out_music(workdir)
        preprocess.run([*(f"--input={t}" for t in tracks), f"--output={held_out}", "--validation_fraction=1", *LOCAL])
        rows = []
        for name in args.configs.split(","):
            job = os.path.join(workdir, f"job-{name}")
            started = time.monotonic()
            flags = [f"--data={train_data}", f"--job_dir={job}", "--model=default", f"--steps={args.steps}",
                     "--batch_size=16", "--crop_samples=4096", f"--eval_every={args.steps * 10}",
                     f"--checkpoint_every={args.steps}", "--summary_audio_secs=0"]  # fmt: skip
            result = task.run(flags + CONFIGS[name])
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
