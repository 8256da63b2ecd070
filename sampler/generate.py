"""python -m sampler.generate: audio from a trained WaveNet.

    python -m sampler.generate --model JOB_DIR_OR_EXPORT --seconds 5 --output clip.wav \\
        [--num_clips 4] [--condition ambient,rock] [--temperature 1.0] [--seed 0] [--primer song.mp3]
        [--spectrogram] [--engine auto|cpu|xla] [--threads N] [--shard K/N]

Generates with the cached (fast) algorithm of `sampler.loading`, all clips in one
batch, with a progress bar; writes 16-bit WAV files at the model's sample rate.
Several processes share the clips (`clip_shard`): each generates its own
contiguous block, named by the clips' indices, and clip i is the same wherever
it is generated (its random numbers derive from --seed and i alone).
"""

import argparse
import contextlib
import errno
import logging
import os
import secrets
import struct
import sys
import time
import wave

import numpy as np

from pipelines import contract
from pipelines.audio import recording
from sampler import loading

_LOGGER = logging.getLogger(__name__)


# A WAV's RIFF size counts 36 bytes before the samples ("WAVE", the fmt chunk, the data chunk's header).
WAV_HEADER_BYTES = 36
# Spectrograms show at most this much of each clip (the audio they are drawn from stays in memory).
SPECTROGRAM_MAX_SECS = 600.0


def _shard(text):
    """--shard K/N -> (K, N), with N >= 1 and K in [0, N)."""
    index, slash, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (this process's shard of N, from 0), got {text!r}") from None
    if not slash or count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"K/N needs N >= 1 and K in [0, N), got {text}")
    return index, count


def build_parser():
    """The parser of `python -m sampler.generate` (the convention of every command: `contract.commands`)."""
    positive = contract.commands.number_in(0, above=True)
    parser = contract.commands.ArgumentParser(
        prog="python -m sampler.generate",
        description="Generate audio from a WaveNet exported by trainer.task.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="The training --job_dir, or its export/ directory: local, gs:// or s3://. Required.",
    )
    parser.add_argument(
        "--seconds",
        type=positive,
        required=True,
        help="Seconds of audio to generate per clip (a 16-bit WAV holds at most 2^31 samples: 37 h at 16 kHz). "
        "Required.",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="WAV file to write; with --num_clips > 1, clips go to NAME-000.wav, NAME-001.wav, ... Required.",
    )
    parser.add_argument(
        "--num_clips",
        type=contract.commands.int_in(1),
        default=1,
        help="Clips generated together as one batch. Default: %(default)s.",
    )
    parser.add_argument(
        "--condition",
        default=None,
        metavar="VALUE[,VALUE...]",
        help="For a model trained with --condition_on: the label value(s) to generate, by name (exact, or any "
        "case when that names one value). Several values are taken in turn by the clips of the batch: "
        "--condition ambient,rock --num_clips 4 gives ambient, rock, ambient, rock. An unknown name is an error "
        "that lists the model's values. Unconditioned models take none. Default: none.",
    )
    parser.add_argument(
        "--temperature",
        type=positive,
        default=1.0,
        help="Softmax temperature: 1 samples the model's distribution, below 1 is more conservative. "
        "Default: %(default)s.",
    )
    parser.add_argument(
        "--seed",
        type=contract.commands.int_in(0, 2**63),
        default=0,
        help="Same seed and engine, same clips (0 .. 2^63-1). Default: %(default)s.",
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
        help=f"Also write a spectrogram PNG beside each clip (of its first {SPECTROGRAM_MAX_SECS:g} s at most). "
        "Default: off.",
    )
    parser.add_argument(
        "--engine",
        choices=loading.ENGINES,
        default="auto",
        help="cpu: numba kernel, clips split across CPU threads; xla: one XLA-compiled loop (for GPUs); "
        "auto: xla when TensorFlow sees a GPU, else cpu. Default: %(default)s.",
    )
    parser.add_argument(
        "--threads",
        type=contract.commands.int_in(1),
        default=None,
        help="CPU threads for the cpu engine; each thread generates its share of the clips. Default: every core "
        "this process may use.",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="Generate only shard K (from 0) of N of the --num_clips clips, for N processes sharing them: "
        "clip i is the same in any shard and keeps its name (NAME-00i.wav). Default: from Slurm, the step's "
        "task (srun -n N: SLURM_PROCID of SLURM_STEP_NUM_TASKS) within the job array's task "
        "(SLURM_ARRAY_TASK_ID from SLURM_ARRAY_TASK_MIN to _MAX); else all clips.",
    )
    contract.add_verbose_option(parser)
    contract.storage.add_arguments(parser)
    return parser


def parse_args(argv):
    """The options of a command line (`build_parser`), refused before any work when --output cannot be written there.

    Raises:
      SystemExit: (status 2, the usage and the reason on stderr) an unknown option or a bad value.
      NotADirectoryError: --output runs through an existing file (naming that file).
    """
    args = build_parser().parse_args(argv)
    contract.commands.check_directory_path(os.path.dirname(args.output) or ".")
    return args


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
      IsADirectoryError, NotADirectoryError, PermissionError, ...: a path cannot be written (naming it, or the
        file in the way of its directory).
      contract.CommandError: a file system that takes no new files or directories there (`/proc/x`).
    """

    def __init__(self, paths, sample_rate, num_samples, info=None):
        self.paths = list(paths)
        self._info = list(info) if info is not None else [None] * len(self.paths)
        self._files = []  # (temporary path, file object, wave.Wave_write)
        try:
            for path in self.paths:
                if os.path.isdir(path):
                    raise IsADirectoryError(errno.EISDIR, "is a directory (--output names the WAV file)", path)
                directory = os.path.dirname(path) or "."
                contract.commands.make_directories(directory)
                temporary = os.path.join(
                    directory, contract.temporary_name(os.path.basename(path), secrets.token_hex(8))
                )
                # Opened here, not by wave.open: a Wave_write whose own open fails is left half-made, and its
                # __del__ prints a traceback after the error's one line.
                try:
                    file = open(temporary, "xb")  # Closed by commit or abort.
                except OSError as e:
                    raise contract.commands.creation_error(e, path) from e
                handle = wave.open(file, "wb")
                self._files.append((temporary, file, handle))
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(sample_rate)
                handle.setnframes(num_samples)  # The header is final from the start: nothing to patch at close.
        except BaseException:
            self.abort()
            raise

    def write(self, audio):
        """Appends float audio [clips, n] in [-1, 1], one row per clip."""
        for (_, _, handle), clip in zip(self._files, audio, strict=True):
            handle.writeframesraw(pcm16(clip))

    def commit(self):
        for (temporary, file, handle), path, info in zip(self._files, self.paths, self._info, strict=True):
            handle.close()
            file.close()  # Wave_write closes only files it opened.
            if info:
                append_info(temporary, info)
            os.replace(temporary, path)
        self._files = []

    def abort(self):
        for temporary, file, handle in self._files:
            with contextlib.suppress(Exception):
                handle.close()  # Leaves the Wave_write closed even when its last write fails (a full disk).
            with contextlib.suppress(OSError):
                file.close()
            with contextlib.suppress(OSError):
                os.remove(temporary)
        self._files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.abort()  # Nothing left to abort once committed.


def clip_info(model_path, model_config, title):
    """The RIFF INFO tags of a generated clip: the software, the model, and where its card is.

    Args:
      model_path: --model as given.
      model_config: the export's contract.ModelConfig.
      title: the clip's name.

    Returns:
      dict INFO id -> text (ISFT software, INAM title, ICMT comment, ICRD creation date).
    """
    return {
        "ISFT": f"{contract.software()} (python -m sampler.generate)",
        "INAM": title,
        "ICMT": f"Generated by the WaveNet model {model_path} (step {model_config.step}); its model card, with the "
        f"terms of its training data: MODEL_CARD.md in its export",
        "ICRD": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def info_chunk(tags):
    """A RIFF `LIST` chunk of type `INFO` (Microsoft/IBM RIFF specification, 1991, section 2-14) holding `tags`.

    Args:
      tags: dict four-letter INFO id (ISFT, INAM, ICMT, ...) -> text (written UTF-8, NUL-terminated, padded
        to an even length).

    Returns:
      bytes.
    """
    body = b"INFO"
    for key, text in tags.items():
        data = text.encode("utf-8") + b"\0"
        body += key.encode("ascii") + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)
    return b"LIST" + struct.pack("<I", len(body)) + body


def max_wav_samples(tags=None):
    """The most samples a 16-bit mono WAV holds with the INFO chunk of `tags` (`info_chunk`) appended.

    Its RIFF size (all that follows the first 8 bytes: `WAV_HEADER_BYTES`, 2 bytes a sample and the INFO
    chunk) is a 32-bit field (Microsoft/IBM RIFF specification, 1991, section 2-1): at most 2**32 - 1 bytes.

    Returns:
      int samples.
    """
    return (2**32 - 1 - WAV_HEADER_BYTES - (len(info_chunk(tags)) if tags else 0)) // 2


def append_info(path, tags):
    """Appends an INFO chunk (`info_chunk`) to a closed WAV file and corrects its RIFF size."""
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(info_chunk(tags))
        size = f.tell()
        f.seek(4)
        f.write(struct.pack("<I", size - 8))


def write_spectrogram(path, audio, sample_rate, title=""):
    """Writes a spectrogram PNG (`sampler.spectrogram.spectrogram_png`: axes in seconds and Hz, dB scale)."""
    from sampler import spectrogram

    contract.write_bytes(path, spectrogram.spectrogram_png(audio, sample_rate, title))


def output_paths(output, num_clips):
    if num_clips == 1:
        return [output]
    stem, extension = os.path.splitext(output)
    return [f"{stem}-{i:03d}{extension or '.wav'}" for i in range(num_clips)]


def clip_conditions(model_config, condition, num_clips):
    """The label of each clip from --condition.

    Args:
      model_config: the export's contract.ModelConfig.
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
    model_config.check_condition_given(bool(values))
    if not model_config.conditioned:
        return [], None
    indices = model_config.condition_indices(values)
    names = [model_config.condition_vocabulary[indices[i % len(indices)]] for i in range(num_clips)]
    return names, np.asarray([indices[i % len(indices)] for i in range(num_clips)], np.int32)


def clip_shard(num_clips, shard=None, environ=None):
    """The clips this process generates, when several share --num_clips.

    The shard is --shard when given (any scheduler); else, under Slurm, this
    task's place in the job array (one job per array task) times the tasks of
    the job step (`srun -n N`): array task a of A and step task k of T is
    shard a * T + k of A * T. Shard K of N gets the contiguous clips
    [ceil(K * num_clips / N), ceil((K + 1) * num_clips / N)): every clip once over
    all shards, the first shards one more when N does not divide num_clips.

    Args:
      num_clips: --num_clips.
      shard: (K, N) from --shard, or None.
      environ: the environment to read Slurm's variables from (default os.environ).

    Returns:
      (clips, K, N, source): the range of clip indices (empty when N > num_clips
      leaves this shard none), the shard, and what chose it (for the closing line).

    Raises:
      ValueError: a job array whose task ids are not one evenly spaced range (--array=0-7 or 0-14:2;
        pass --shard), or malformed Slurm variables.
    """
    environ = os.environ if environ is None else environ
    if shard is not None:
        index, count, source = *shard, "--shard"
    else:
        index, count, sources = 0, 1, []
        array = contract.slurm_array_task(environ)
        if array is not None:
            index, count = array
            sources.append("SLURM_ARRAY_TASK_ID")
        step = contract.slurm_step(environ)
        if step is not None and step.tasks > 1:
            index, count = index * step.tasks + step.task, count * step.tasks
            sources.append("SLURM_PROCID")
        source = " and ".join(sources)
    return range(-(-index * num_clips // count), -(-(index + 1) * num_clips // count)), index, count, source


def run(argv=None):
    """Generates clips and writes them; returns the list of WAV paths.

    Every option is checked, and every output opened, before the model loads
    and generation starts; the clips are streamed to disk chunk by chunk. With
    several shards (`clip_shard`), only this shard's clips.

    Raises:
      FileNotFoundError: no exported model at --model.
      contract.ContractError: a damaged export.
      OSError: an output that cannot be written.
      ValueError: bad options.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    contract.configure_storage(contract.StorageSettings.from_options(args))
    contract.check_access([args.model, args.primer])
    clips, shard, shards, source = clip_shard(args.num_clips, args.shard)
    paths = output_paths(args.output, args.num_clips)[clips.start : clips.stop]
    batch = len(clips)
    if not batch:
        print(f"Generated no clips: shard {shard}/{shards} (from {source}) gets none of --num_clips {args.num_clips}")
        return []
    of_shards = (
        f" (clips {clips.start}-{clips.stop - 1} of {args.num_clips}: shard {shard}/{shards} from {source})"
        if shards > 1
        else ""
    )
    if contract.slurm_step() is not None:  # Each task of a step on a node its share of the GPUs, as the trainer's.
        contract.bind_task_gpus()
    generator = loading.load(args.model, engine=args.engine, threads=args.threads)
    model_config = generator.model_config
    names, conditions = clip_conditions(model_config, args.condition, args.num_clips)
    names = names[clips.start : clips.stop]
    conditions = None if conditions is None else conditions[clips.start : clips.stop]
    sample_rate, channels = model_config.sample_rate, model_config.quantization_channels
    info = [
        clip_info(
            args.model, model_config, f"{os.path.splitext(os.path.basename(path))[0]}" + (f" ({name})" if name else "")
        )
        for path, name in zip(paths, names or [None] * len(paths), strict=True)
    ]
    num_samples = int(round(args.seconds * sample_rate))
    most = min(max_wav_samples(tags) for tags in info)
    if num_samples > most:
        raise ValueError(
            f"--seconds {args.seconds:g} at {sample_rate} Hz is {num_samples:,} samples per clip; a 16-bit WAV holds "
            f"at most {most:,} ({most / sample_rate / 3600:.1f} h at {sample_rate} Hz) with its INFO chunk"
        )
    generator.check_batch(batch)
    primer = None
    if args.primer:
        # The primer's last receptive field, processed exactly as the pipeline processes a track.
        with contract.open_binary(args.primer) as f:
            codes = recording.recording_codes(f, sample_rate, channels, max_samples=model_config.receptive_field)
        primer = np.tile(codes[None, :].astype(np.int32), (batch, 1))

    kept = int(min(num_samples, SPECTROGRAM_MAX_SECS * sample_rate)) if args.spectrogram else 0
    shown = []  # The spectrograms' audio: the first `kept` samples of each clip.
    started = time.monotonic()
    total = num_samples * batch  # Counted over all clips, like the closing line's samples/s.
    with WavWriters(paths, sample_rate, num_samples, info) as writers:
        with contract.progress_bar(total, "sample", f"{batch} clip(s)") as bar:
            chunks = generator.generate_chunks(
                num_samples,
                batch_size=batch,
                temperature=args.temperature,
                seed=args.seed,
                primer_codes=primer,
                progress=lambda n: bar.update(n * batch),
                conditions=conditions,
                first_clip=clips.start,
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
        audio = np.concatenate(shown, axis=1) if shown else np.zeros((batch, 0), np.float32)
        for i, path in enumerate(paths):
            title = (
                f"{os.path.basename(path)}: model step {model_config.step}, seed {args.seed}, "
                f"temperature {args.temperature:g}" + (f", {model_config.condition_kind} {names[i]}" if names else "")
            )
            pngs.append(os.path.splitext(path)[0] + ".png")
            write_spectrogram(pngs[-1], audio[i], sample_rate, title)
    engine = f"{generator.engine} engine" + (f", {generator.threads} thread(s)" if generator.engine == "cpu" else "")
    print(
        f"Generated {batch} clip(s) of {args.seconds:g} s at {sample_rate} Hz{of_shards} in {elapsed:.1f} s: "
        f"{total / elapsed:,.0f} samples/s ({total / elapsed / sample_rate:.1f}x real time; {engine})"
    )
    listed = [
        path + (f" and {pngs[i]}" if pngs else "") + (f" ({model_config.condition_kind} {names[i]})" if names else "")
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
