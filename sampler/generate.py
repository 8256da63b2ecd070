"""python -m sampler.generate: audio from a trained WaveNet.

    python -m sampler.generate --model JOB_DIR_OR_EXPORT --seconds 5 --output clip.wav \\
        [--num_clips 4] [--condition ambient,rock] [--temperature 1.0] [--seed 0] [--primer song.mp3]
        [--spectrogram] [--engine auto|cpu|xla] [--threads N]

Generates with the cached (fast) algorithm of `sampler.fast`, all clips in one
batch, with a progress bar; writes 16-bit WAV files at the model's sample rate.
"""

import argparse
import logging
import os
import sys
import time
import wave

import numpy as np

from pipelines import contract
from sampler import fast

_LOGGER = logging.getLogger(__name__)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m sampler.generate", description="Generate audio from a WaveNet exported by trainer.task."
    )
    parser.add_argument(
        "--model", required=True, help="The training --job_dir, or its export/ directory: local, gs:// or s3://."
    )
    parser.add_argument("--seconds", type=float, required=True, help="Seconds of audio to generate per clip.")
    parser.add_argument(
        "--output",
        required=True,
        help="WAV file to write; with --num_clips > 1, clips go to NAME-000.wav, NAME-001.wav, ...",
    )
    parser.add_argument("--num_clips", type=int, default=1, help="Clips generated together as one batch.")
    parser.add_argument(
        "--condition",
        default=None,
        metavar="VALUE[,VALUE...]",
        help="For a model trained with --condition_on: the label value(s) to generate, by name (exact, or any "
        "case when that names one value). Several values are taken in turn by the clips of the batch: "
        "--condition ambient,rock --num_clips 4 gives ambient, rock, ambient, rock. An unknown name is an error "
        "that lists the model's values.",
    )
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="Softmax temperature; below 1 is more conservative."
    )
    parser.add_argument("--seed", type=int, default=0, help="Same seed and engine, same clips (non-negative).")
    parser.add_argument(
        "--primer",
        default=None,
        help="Audio file to continue: decoded, downmixed, resampled to the model's rate and mu-law encoded as "
        "the preprocess pipeline does; its last receptive field fills the caches in one parallel pass.",
    )
    parser.add_argument("--spectrogram", action="store_true", help="Also write a spectrogram PNG beside each clip.")
    parser.add_argument(
        "--engine",
        choices=fast.ENGINES,
        default="auto",
        help="cpu: numba kernel, clips split across CPU threads; xla: one XLA-compiled loop (for GPUs); "
        "auto: xla when TensorFlow sees a GPU, else cpu.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the cpu engine (default: every core this process may use); "
        "each thread generates its share of the clips.",
    )
    return parser.parse_args(argv)


def write_wav(path, audio, sample_rate):
    """Writes float audio in [-1, 1] as a mono 16-bit PCM WAV file."""
    pcm = np.clip(np.round(np.asarray(audio) * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def write_spectrogram(path, audio, sample_rate, title=""):
    """Writes a spectrogram PNG (`sampler.spectrogram.spectrogram_png`: axes in seconds and Hz, dB scale)."""
    from sampler import spectrogram

    with open(path, "wb") as f:
        f.write(spectrogram.spectrogram_png(audio, sample_rate, title))


def output_paths(output, num_clips):
    if num_clips == 1:
        return [output]
    stem, extension = os.path.splitext(output)
    return [f"{stem}-{i:03d}{extension or '.wav'}" for i in range(num_clips)]


def clip_conditions(config, condition, num_clips):
    """The label of each clip from --condition.

    Args:
      config: the export's contract.ModelConfig.
      condition: --condition (comma-separated names) or None.
      num_clips: clips in the batch.

    Returns:
      (names, indices): the value of each clip (a list of str) and int32 [num_clips]
      indices; ([], None) for an unconditioned model.

    Raises:
      ValueError: a conditioned model without --condition, an unconditioned one with it,
        or a name the model does not know (the message lists the ones it knows).
    """
    if not config.conditioned:
        if condition:
            raise ValueError("--condition: this model was trained without --condition_on; generate without it")
        return [], None
    if not condition or not condition.strip(","):
        vocabulary = ", ".join(config.condition_vocabulary[:50])
        raise ValueError(f"the model is conditioned on {config.condition_kind}: give --condition, one of {vocabulary}")
    values = [v.strip() for v in condition.split(",") if v.strip()]
    indices = config.condition_indices(values)
    names = [config.condition_vocabulary[indices[i % len(indices)]] for i in range(num_clips)]
    return names, np.asarray([indices[i % len(indices)] for i in range(num_clips)], np.int32)


def run(argv=None):
    """Generates clips and writes them; returns the list of WAV paths.

    Raises:
      FileNotFoundError: no exported model at --model.
      ValueError: bad options.
    """
    from tqdm import tqdm

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.seconds <= 0 or args.num_clips < 1:
        raise ValueError("--seconds must be positive and --num_clips at least 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    wavenet = fast.load(args.model, engine=args.engine, threads=args.threads)
    names, conditions = clip_conditions(wavenet.config, args.condition, args.num_clips)
    sample_rate = wavenet.config.sample_rate
    channels = wavenet.config.quantization_channels
    num_samples = int(round(args.seconds * sample_rate))
    primer = None
    if args.primer:
        # The primer's last receptive field, processed exactly as the pipeline processes a track.
        with open(args.primer, "rb") as f:
            codes = contract.recording_codes(f, sample_rate, channels, max_samples=wavenet.config.receptive_field)
        primer = np.tile(codes[None, :].astype(np.int32), (args.num_clips, 1))

    started = time.monotonic()
    # Counted over all clips, like the closing line's samples/s.
    total = num_samples * args.num_clips
    with tqdm(total=total, unit="sample", unit_scale=True, desc=f"{args.num_clips} clip(s)") as bar:
        codes = wavenet.generate(
            num_samples,
            batch_size=args.num_clips,
            temperature=args.temperature,
            seed=args.seed,
            primer_codes=primer,
            progress=lambda n: bar.update(n * args.num_clips),
            conditions=conditions,
        )
    elapsed = time.monotonic() - started
    paths = output_paths(args.output, args.num_clips)
    for i, (path, clip) in enumerate(zip(paths, codes, strict=True)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        audio = contract.mu_law_decode(clip, channels)
        write_wav(path, audio, sample_rate)
        if args.spectrogram:
            title = os.path.basename(path) + (f" ({wavenet.config.condition_kind} {names[i]})" if names else "")
            write_spectrogram(os.path.splitext(path)[0] + ".png", audio, sample_rate, title)
    engine = f"{wavenet.engine} engine" + (f", {wavenet.threads} thread(s)" if wavenet.engine == "cpu" else "")
    print(
        f"Generated {args.num_clips} clip(s) of {args.seconds:g} s at {sample_rate} Hz in {elapsed:.1f} s: "
        f"{total / elapsed:,.0f} samples/s ({total / elapsed / sample_rate:.1f}x real time; {engine})"
    )
    if len(paths) <= 8:
        for i, path in enumerate(paths):
            print(f"  {path}" + (f" ({wavenet.config.condition_kind} {names[i]})" if names else ""))
    else:
        print(f"  {paths[0]} ... {paths[-1]}")
    return paths


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run()
    except (FileNotFoundError, ValueError, contract.TrackError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
