"""Preprocessing speed and memory, measured as ratios in one run on the same files.

    python benchmarks/preprocess_benchmark.py [--corpus DIR] [--scaling_minutes 60] [--parts 1,2,3,4]

1. Per core: decode -> mono -> 16 kHz -> mu-law -> encoded tf.Examples (our
   `audio.Track` + `examples.ExampleEncoder`, the code a Beam worker runs)
   against `ffmpeg -threads 1 -i FILE -f null -` (decode alone, its own
   -benchmark rtime) and against the legacy recipe users run today (pydub
   writing a temporary WAV, scipy, resampy kaiser_best, np.digitize, pickle).
2. The whole pipeline on the local runner, 2 worker processes against 1, on
   --scaling_files files of --scaling_minutes each, with the fixed start-up
   cost measured on a 1-second file.
3. Peak memory (resident set of the whole process tree) of the pipeline on a
   60-minute mp3.
4. The whole CLI on one core (`--direct_num_workers 1 --direct_running_mode
   in_memory`) on a 60-minute mp3 plus the corpus's longest track: its
   steady-state throughput (the run's wall time minus the same command's on a
   1-second file) against ffmpeg decoding the same files, next to the
   per-core ratio of part 1 on those files; and the fixed start-up cost.

Needs ffmpeg on PATH and `pip install -e ".[benchmark]"`. Results go in BENCHMARKS.md.
"""

import argparse
import glob
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines import audio, examples  # noqa: E402
from pipelines.sources import AUDIO_EXTENSIONS  # noqa: E402

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 16000


def ffmpeg_decode_secs(path):
    """Wall time of FFmpeg decoding alone, one thread, from its own -benchmark rtime."""
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-benchmark", "-threads", "1", "-i", path, "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"rtime=([0-9.]+)s", result.stderr).group(1))


def ours(path):
    """Our worker path on one core: returns seconds of audio produced."""
    encoder = examples.ExampleEncoder()
    with open(path, "rb") as f:
        track = audio.Track(f, audio.AudioConfig(sample_rate=SAMPLE_RATE, window_samples=WINDOW_SAMPLES))
        batch = []
        for offset, codes in track:
            batch.append(examples.Window("benchmark", offset, codes.tobytes()))
            if len(batch) == 32:
                encoder.encode(batch)
                batch = []
        if batch:
            encoder.encode(batch)
    return track.stats.samples / SAMPLE_RATE


def legacy_recipe(path):
    """The recipe this project replaces: pydub -> temp WAV -> scipy -> resampy -> digitize -> pickle."""
    import pydub
    import resampy
    import scipy.io.wavfile

    segment = pydub.AudioSegment.from_file(path)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        segment.export(tmp.name, format="wav")
        rate, data = scipy.io.wavfile.read(tmp.name)
    x = data.astype(np.float32) / 32768.0
    if x.ndim == 2:
        x = x.mean(axis=1)
    y = resampy.resample(x, rate, SAMPLE_RATE, filter="kaiser_best")
    companded = np.sign(y) * np.log1p(255 * np.abs(y)) / np.log1p(255)
    codes = (np.digitize(companded, np.linspace(-1, 1, 256)) - 1).astype(np.uint8)
    windows = [codes[i : i + WINDOW_SAMPLES] for i in range(0, len(codes) - WINDOW_SAMPLES + 1, WINDOW_SAMPLES)]
    pickle.dumps(windows)
    return len(y) / SAMPLE_RATE


def best_of(repeats, fn, *args):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def per_core(files, repeats, with_recipe):
    print(f"\n## 1. Per core: ours vs ffmpeg decode alone vs legacy recipe (best of {repeats})")
    print(
        f"{'file':<34} {'audio s':>8} {'ffmpeg s':>9} {'ours s':>8} {'recipe s':>9} "
        f"{'ours/ffmpeg':>12} {'ours/recipe':>12}"
    )
    ours(files[0])  # Warm imports and caches.
    if with_recipe:
        legacy_recipe(files[0])  # resampy compiles with numba on first use.
    totals = {"audio": 0.0, "ffmpeg": 0.0, "ours": 0.0, "recipe": 0.0, "recipe_audio": 0.0}
    for path in files:
        ffmpeg_secs = min(ffmpeg_decode_secs(path) for _ in range(repeats))
        ours_secs, audio_secs = best_of(repeats, ours, path)
        recipe_secs = best_of(1, legacy_recipe, path)[0] if with_recipe else float("nan")
        totals["audio"] += audio_secs
        totals["ffmpeg"] += ffmpeg_secs
        totals["ours"] += ours_secs
        if with_recipe:
            totals["recipe"] += recipe_secs
            totals["recipe_audio"] += audio_secs
        print(
            f"{os.path.basename(path)[:34]:<34} {audio_secs:>8.1f} {ffmpeg_secs:>9.3f} {ours_secs:>8.3f} "
            f"{recipe_secs:>9.3f} {ffmpeg_secs / ours_secs:>11.2f}x {recipe_secs / ours_secs:>11.1f}x"
        )
    print(
        f"{'all files':<34} {totals['audio']:>8.1f} {totals['ffmpeg']:>9.3f} {totals['ours']:>8.3f} "
        f"{totals['recipe']:>9.3f} {totals['ffmpeg'] / totals['ours']:>11.2f}x "
        f"{totals['recipe'] / totals['ours']:>11.1f}x"
    )
    print(
        f"ours: {totals['audio'] / totals['ours']:.0f}x real time per core; ffmpeg decode alone: "
        f"{totals['audio'] / totals['ffmpeg']:.0f}x; legacy recipe: "
        f"{totals['recipe_audio'] / totals['recipe'] if with_recipe else float('nan'):.0f}x"
    )


def looped_mp3(source, seconds, path):
    """An mp3 of `seconds` made by looping `source` without re-encoding."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            source,
            "-t",
            str(seconds),
            "-c",
            "copy",
            path,
        ],
        check=True,
    )
    return path


def run_pipeline(inputs, output, extra_args):
    """Runs the pipeline as a user would; returns (wall seconds, peak RSS of the process tree in MB)."""
    import psutil

    args = [sys.executable, "-m", "pipelines.preprocess", f"--output={output}"]
    args += [f"--input={p}" for p in inputs] + extra_args
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"pipeline failed:\n{out}")
    return wall, peak[0] / 2**20, out


def scaling(source, workdir, minutes, n_files):
    print(f"\n## 2. DirectRunner scaling: {n_files} files of {minutes} min, 2 workers vs 1")
    inputs = [looped_mp3(source, minutes * 60, os.path.join(workdir, f"scaling-{i}.mp3")) for i in range(n_files)]
    tiny = looped_mp3(source, 1, os.path.join(workdir, "one-second.mp3"))
    results = {}
    for workers in (1, 2):
        args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing", "--window_samples=8000"]
        overhead, _, _ = run_pipeline([tiny], os.path.join(workdir, f"tiny-{workers}"), args)
        wall, _, out = run_pipeline(inputs, os.path.join(workdir, f"out-{workers}"), args)
        results[workers] = wall
        throughput = re.search(r"Throughput: .*", out)
        print(
            f"{workers} worker(s): {wall:.1f} s wall, of which ~{overhead:.1f} s fixed start-up "
            f"(the same job on a 1-second file); pipeline says {throughput.group(0) if throughput else '?'}"
        )
    print(f"speed-up 2 workers / 1 worker: {results[1] / results[2]:.2f}x ({os.cpu_count()} cores)")


def memory(source, workdir):
    print("\n## 3. Peak memory on a 60-minute mp3 (resident set of the whole process tree)")
    long_mp3 = looped_mp3(source, 3600, os.path.join(workdir, "sixty-minutes.mp3"))
    print(f"input: {os.path.getsize(long_mp3) / 2**20:.0f} MB mp3, 60 min")
    for mode in ("in_memory", "multi_processing"):
        wall, peak_mb, _ = run_pipeline(
            [long_mp3],
            os.path.join(workdir, f"out-memory-{mode}"),
            ["--direct_num_workers=1", f"--direct_running_mode={mode}"],
        )
        print(f"{mode:<17} peak {peak_mb:.0f} MB, {wall:.1f} s wall")
    decoded_mb = 3600 * 44100 * 2 * 4 / 2**20
    print(f"(for scale: the decoded song as float32 stereo at 44.1 kHz is {decoded_mb:.0f} MB)")


def whole_cli(source, workdir, repeats):
    print("\n## 4. The whole CLI on one core vs ffmpeg decode alone (steady state), and the fixed start-up")
    files = [looped_mp3(source, 3600, os.path.join(workdir, "cli-sixty-minutes.mp3")), source]
    tiny = looped_mp3(source, 1, os.path.join(workdir, "cli-one-second.mp3"))
    args = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    ffmpeg_secs = sum(min(ffmpeg_decode_secs(path) for _ in range(repeats)) for path in files)
    ours(tiny)  # Warm imports and caches.
    worker_secs = sum(best_of(repeats, ours, path)[0] for path in files)
    audio_secs = sum(ours(path) for path in files)
    fixed = min(run_pipeline([tiny], os.path.join(workdir, f"cli-tiny-{i}"), args)[0] for i in range(repeats))
    runs = [run_pipeline(files, os.path.join(workdir, f"cli-{i}"), args)[0] for i in range(repeats)]
    steady = min(runs) - fixed
    print(f"audio: {audio_secs:.0f} s in {len(files)} files; ffmpeg decode alone: {ffmpeg_secs:.2f} s")
    print(f"per core (worker path, part 1's `ours`): {worker_secs:.2f} s -> {ffmpeg_secs / worker_secs:.2f}x ffmpeg")
    print(
        f"whole CLI: {min(runs):.2f} s wall (runs: {', '.join(f'{r:.2f}' for r in runs)}) - {fixed:.2f} s fixed "
        f"= {steady:.2f} s steady state -> {ffmpeg_secs / steady:.2f}x ffmpeg (target >= 0.6x)"
    )
    print(f"fixed start-up (the same command on a 1-second file, best of {repeats}): {fixed:.2f} s (target <= 3 s)")


def main():
    default_corpus = os.path.join(REPO, "..", "shared", "corpus")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus",
        default=default_corpus if os.path.isdir(default_corpus) else os.path.join(REPO, "pipelines", "data"),
        help="Directory of audio files for part 1; its longest mp3 is looped for parts 2 and 3.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timing repeats in part 1 (best is kept).")
    parser.add_argument("--scaling_minutes", type=int, default=60, help="Length of each file of part 2.")
    parser.add_argument("--scaling_files", type=int, default=8, help="Number of files in part 2.")
    parser.add_argument("--skip_recipe", action="store_true", help="Leave out the slow legacy recipe.")
    parser.add_argument("--parts", default="1,2,3,4", help="Comma-separated parts to run.")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg must be on PATH")

    files = sorted(p for p in glob.glob(os.path.join(args.corpus, "*")) if p.lower().endswith(AUDIO_EXTENSIONS))
    mp3s = [p for p in files if p.lower().endswith(".mp3")]
    source = max(mp3s, key=os.path.getsize)
    print(f"corpus: {args.corpus} ({len(files)} files); looped source: {os.path.basename(source)}")
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as workdir:
        if "1" in parts:
            per_core(files, args.repeats, not args.skip_recipe)
        if "2" in parts:
            scaling(source, workdir, args.scaling_minutes, args.scaling_files)
        if "3" in parts:
            memory(source, workdir)
        if "4" in parts:
            whole_cli(source, workdir, args.repeats)


if __name__ == "__main__":
    main()
