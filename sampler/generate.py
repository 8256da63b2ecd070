"""python -m sampler.generate: audio from a trained WaveNet.

    python -m sampler.generate --model JOB_DIR_OR_EXPORT --seconds 5 --output clip.wav \\
        [--num_clips 4] [--condition ambient,rock] [--temperature 1.0] [--seed 0] [--primer song.mp3]
        [--spectrogram] [--engine auto|cpu|xla] [--threads N]

Generates with the cached (fast) algorithm of `sampler.loading`, all clips in one
batch, with a progress bar; writes 16-bit WAV files at the model's sample rate.
"""

import argparse
import contextlib
import errno
import logging
import math
import os
import secrets
import sys
import time
import wave

import numpy as np

from pipelines import contract
from pipelines.audio import recording
from sampler import loading

_LOGGER = logging.getLogger(__name__)


# A 16-bit mono WAV's data chunk and RIFF size are 32-bit: at most this many samples per file.
MAX_WAV_SAMPLES = (2**32 - 1 - 36) // 2
# Spectrograms show at most this much of each clip (the audio they are drawn from stays in memory).
SPECTROGRAM_MAX_SECS = 600.0


def _positive_finite(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _int_at_least(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high})" if high else f"must be >= {low}")
        return value

    return parse


def build_parser():
    """The parser of `python -m sampler.generate`."""
    parser = argparse.ArgumentParser(
        prog="python -m sampler.generate",
        description="Generate audio from a WaveNet exported by trainer.task.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, help="The training --job_dir, or its export/ directory: local, gs:// or s3://."
    )
    parser.add_argument(
        "--seconds",
        type=_positive_finite,
        required=True,
        help="Seconds of audio to generate per clip (a 16-bit WAV holds at most 2^31 samples: 37 h at 16 kHz).",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="WAV file to write; with --num_clips > 1, clips go to NAME-000.wav, NAME-001.wav, ...",
    )
    parser.add_argument("--num_clips", type=_int_at_least(1), default=1, help="Clips generated together as one batch.")
    parser.add_argument(
        "--condition",
        default=None,
        metavar="VALUE[,VALUE...]",
        help="For a model trained with --condition_on: the label value(s) to generate, by name (exact, or any "
        "case when that names one value). Several values are taken in turn by the clips of the batch: "
        "--condition ambient,rock --num_clips 4 gives ambient, rock, ambient, rock. An unknown name is an error "
        "that lists the model's values. Unconditioned models take none.",
    )
    parser.add_argument(
        "--temperature",
        type=_positive_finite,
        default=1.0,
        help="Softmax temperature: 1 samples the model's distribution, below 1 is more conservative.",
    )
    parser.add_argument(
        "--seed", type=_int_at_least(0, 2**63), default=0, help="Same seed and engine, same clips (0 .. 2^63-1)."
    )
    parser.add_argument(
        "--primer",
        default=None,
        help="Audio file to continue: decoded, downmixed, resampled to the model's rate and mu-law encoded as "
        "the preprocess pipeline does; its last receptive field fills the caches in one parallel pass. "
        "Default: start from silence.",
    )
    parser.add_argument(
        "--spectrogram",
        action="store_true",
        help=f"Also write a spectrogram PNG beside each clip (of its first {SPECTROGRAM_MAX_SECS:g} s at most).",
    )
    parser.add_argument(
        "--engine",
        choices=loading.ENGINES,
        default="auto",
        help="cpu: numba kernel, clips split across CPU threads; xla: one XLA-compiled loop (for GPUs); "
        "auto: xla when TensorFlow sees a GPU, else cpu.",
    )
    parser.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="CPU threads for the cpu engine (default: every core this process may use); "
        "each thread generates its share of the clips.",
    )
    contract.add_verbose_option(parser)
    contract.storage.add_arguments(parser)
    return parser


def parse_args(argv):
    return build_parser().parse_args(argv)


def pcm16(audio):
    """float audio in [-1, 1] -> little-endian int16 PCM bytes."""
    return np.clip(np.round(np.asarray(audio) * 32767), -32768, 32767).astype("<i2").tobytes()


def write_wav(path, audio, sample_rate):
    """Writes float audio in [-1, 1] as a mono 16-bit PCM WAV file."""
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm16(audio))


class WavWriters:
    """One mono 16-bit WAV per clip, written chunk by chunk, each made visible whole or not at all.

    Each clip goes to a hidden temporary file beside its path
    (`contract.temporary_name`), which `commit` renames into place; `abort`
    (or leaving the `with` block by an exception) removes them. Opening them
    first checks that the outputs can be written before any audio is generated.

    Raises (on creation):
      IsADirectoryError, NotADirectoryError, PermissionError, ...: a path cannot be written.
    """

    def __init__(self, paths, sample_rate, num_samples):
        self.paths = list(paths)
        self._files = []
        try:
            for path in self.paths:
                if os.path.isdir(path):
                    raise IsADirectoryError(errno.EISDIR, "is a directory (--output names the WAV file)", path)
                directory = os.path.dirname(os.path.abspath(path))
                os.makedirs(directory, exist_ok=True)
                temporary = os.path.join(
                    directory, contract.temporary_name(os.path.basename(path), secrets.token_hex(8))
                )
                handle = wave.open(temporary, "wb")
                self._files.append((temporary, handle))
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(sample_rate)
                handle.setnframes(num_samples)  # The header is final from the start: nothing to patch at close.
        except BaseException:
            self.abort()
            raise

    def write(self, audio):
        """Appends float audio [clips, n] in [-1, 1], one row per clip."""
        for (_, handle), clip in zip(self._files, audio, strict=True):
            handle.writeframesraw(pcm16(clip))

    def commit(self):
        for (temporary, handle), path in zip(self._files, self.paths, strict=True):
            handle.close()
            os.replace(temporary, path)
        self._files = []

    def abort(self):
        for temporary, handle in self._files:
            with contextlib.suppress(Exception):
                handle.close()
            with contextlib.suppress(OSError):
                os.remove(temporary)
        self._files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.abort()  # Nothing left to abort once committed.


def write_spectrogram(path, audio, sample_rate, title=""):
    """Writes a spectrogram PNG (`sampler.spectrogram.spectrogram_png`: axes in seconds and Hz, dB scale)."""
    from sampler import spectrogram

    contract.write_bytes(path, spectrogram.spectrogram_png(audio, sample_rate, title))


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
    values = [v.strip() for v in (condition or "").split(",") if v.strip()]
    config.check_condition_given(bool(values))
    if not config.conditioned:
        return [], None
    indices = config.condition_indices(values)
    names = [config.condition_vocabulary[indices[i % len(indices)]] for i in range(num_clips)]
    return names, np.asarray([indices[i % len(indices)] for i in range(num_clips)], np.int32)


def run(argv=None):
    """Generates clips and writes them; returns the list of WAV paths.

    Every option is checked, and every output opened, before the model loads
    and generation starts; the clips are streamed to disk chunk by chunk.

    Raises:
      FileNotFoundError: no exported model at --model.
      contract.ContractError: a damaged export.
      OSError: an output that cannot be written.
      ValueError: bad options.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    contract.configure_storage(contract.StorageSettings.from_options(args))
    contract.check_access([args.model, args.primer])
    paths = output_paths(args.output, args.num_clips)
    wavenet = loading.load(args.model, engine=args.engine, threads=args.threads)
    config = wavenet.config
    names, conditions = clip_conditions(config, args.condition, args.num_clips)
    sample_rate, channels = config.sample_rate, config.quantization_channels
    num_samples = int(round(args.seconds * sample_rate))
    if num_samples > MAX_WAV_SAMPLES:
        raise ValueError(
            f"--seconds {args.seconds:g} at {sample_rate} Hz is {num_samples:,} samples per clip; a 16-bit WAV holds "
            f"at most {MAX_WAV_SAMPLES:,} ({MAX_WAV_SAMPLES / sample_rate / 3600:.1f} h at {sample_rate} Hz)"
        )
    wavenet.check_batch(args.num_clips)
    primer = None
    if args.primer:
        # The primer's last receptive field, processed exactly as the pipeline processes a track.
        with contract.open_binary(args.primer) as f:
            codes = recording.recording_codes(f, sample_rate, channels, max_samples=config.receptive_field)
        primer = np.tile(codes[None, :].astype(np.int32), (args.num_clips, 1))

    kept = int(min(num_samples, SPECTROGRAM_MAX_SECS * sample_rate)) if args.spectrogram else 0
    shown = []  # The spectrograms' audio: the first `kept` samples of each clip.
    started = time.monotonic()
    total = num_samples * args.num_clips  # Counted over all clips, like the closing line's samples/s.
    with WavWriters(paths, sample_rate, num_samples) as writers:
        with contract.progress_bar(total, "sample", f"{args.num_clips} clip(s)") as bar:
            chunks = wavenet.generate_chunks(
                num_samples,
                batch_size=args.num_clips,
                temperature=args.temperature,
                seed=args.seed,
                primer_codes=primer,
                progress=lambda n: bar.update(n * args.num_clips),
                conditions=conditions,
            )
            done = 0
            for codes in chunks:
                audio = contract.mu_law_decode(codes, channels)
                writers.write(audio)
                if done < kept:
                    shown.append(audio[:, : kept - done])
                done += codes.shape[1]
        writers.commit()
    elapsed = time.monotonic() - started
    pngs = []
    if args.spectrogram:
        audio = np.concatenate(shown, axis=1) if shown else np.zeros((args.num_clips, 0), np.float32)
        for i, path in enumerate(paths):
            title = (
                f"{os.path.basename(path)}: model step {config.step}, seed {args.seed}, "
                f"temperature {args.temperature:g}" + (f", {config.condition_kind} {names[i]}" if names else "")
            )
            pngs.append(os.path.splitext(path)[0] + ".png")
            write_spectrogram(pngs[-1], audio[i], sample_rate, title)
    engine = f"{wavenet.engine} engine" + (f", {wavenet.threads} thread(s)" if wavenet.engine == "cpu" else "")
    print(
        f"Generated {args.num_clips} clip(s) of {args.seconds:g} s at {sample_rate} Hz in {elapsed:.1f} s: "
        f"{total / elapsed:,.0f} samples/s ({total / elapsed / sample_rate:.1f}x real time; {engine})"
    )
    listed = [
        path + (f" and {pngs[i]}" if pngs else "") + (f" ({config.condition_kind} {names[i]})" if names else "")
        for i, path in enumerate(paths)
    ]
    if len(listed) <= 8:
        for line in listed:
            print(f"  {line}")
    else:
        print(f"  {listed[0]}\n  ...\n  {listed[-1]}")
    return paths


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    contract.filter_native_logs(verbose=contract.VERBOSE_OPTION in sys.argv[1:])
    sys.exit(contract.run_command(run))


if __name__ == "__main__":
    main()
