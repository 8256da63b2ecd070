"""The contracts shared by the pipeline, the trainer and the sampler: their one home.

`trainer/` and `sampler/` import nothing else from `pipelines` (import-linter
checks it in CI). This module owns:

- the dataset contract: file and feature names, the mu-law codec, and
  `DatasetDescription` (dataset.json: built, validated, read, written, and the
  one compatibility check, `check_compatible`);
- the model contract: `WaveNetConfig` (the architecture), layer names, and
  `ModelConfig` (export/config.json: built, validated, read, written);
- the failure vocabulary: `TrackError`, the stage names, `failure_record`;
- `recording_codes`: a recording turned into codes exactly as the pipeline
  turns a track into windows (what the sampler's primer needs).

It imports numpy only at module level, so Beam workers, the trainer and the
sampler all import it cheaply; files are read and written through Beam's
filesystems (local, gs://, s3://), imported when first used.
"""

import contextlib
import dataclasses
import errno
import functools
import json
import os
import posixpath
import re
import secrets
import sys

import numpy as np

# 3: each window carries its track's labels (label/KIND features), dataset.json each kind's vocabulary.
# 2: per-run track index and failures files, named in `runs` (1: one tracks.jsonl, `runs` a count).
DATASET_FORMAT_VERSION = 3
# 2: the model may be conditioned on a label (config.json names the kind and its vocabulary);
# an unconditioned model is still written as 1, so samplers that predate conditioning read it.
MODEL_FORMAT_VERSION = 2
UNCONDITIONED_MODEL_FORMAT_VERSION = 1
ENCODING = "mu-law"

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_QUANTIZATION_CHANNELS = 256
DEFAULT_WINDOW_SAMPLES = 16000
# Bounds that no real dataset or model reaches; past them a description or config is damaged or hostile,
# and trusting it would allocate without limit.
MAX_SAMPLE_RATE = 768000  # Hz: the highest rate of common audio converters.
MAX_WINDOW_SAMPLES = 1 << 30  # 1 GiB of codes in one tf.train.Example (protobuf's limit is 2 GiB).
MAX_RECEPTIVE_FIELD = 1 << 24  # samples: 17 min at 16 kHz, hundreds of times the paper's.
MAX_CHANNELS = 1 << 14
MAX_CONDITION_VALUES = 1 << 24

# tf.train.Example feature keys.
AUDIO_FEATURE = "audio"  # bytes: window_samples uint8 mu-law codes
TRACK_ID_FEATURE = "track_id"  # bytes: stable hash of the track's identity
OFFSET_FEATURE = "offset"  # int64: window start, in samples at sample_rate

# Labels: every window carries its track's value of each kind (UNKNOWN_LABEL when none was found).
LABEL_KINDS = ("genre", "artist")
UNKNOWN_LABEL = "unknown"


def label_feature(kind):
    """tf.train.Example key of a label kind: bytes, the track's value (UTF-8)."""
    return f"label/{kind}"


FEATURES = {
    AUDIO_FEATURE: "bytes: window_samples uint8 mu-law codes",
    TRACK_ID_FEATURE: "bytes: stable hash of the track's identity",
    OFFSET_FEATURE: "int64: window start in samples at sample_rate",
    **{
        label_feature(kind): f"bytes: the track's {kind} (UTF-8; '{UNKNOWN_LABEL}' when it has none)"
        for kind in LABEL_KINDS
    },
}

# Files written into the output directory. dataset.json is the commit point: it alone says which
# of the others belong to the dataset; each run writes its own, named with its run id. This is the one
# definition of those names: the writers build them here, and cleanup removes only names that match them.
DATASET_FILE = "dataset.json"
TFRECORD_SUFFIX = ".tfrecord"
JSONL_SUFFIX = ".jsonl"
TRACKS_PREFIX = "tracks"
FAILURES_PREFIX = "failures"
# UTC start time to the second, then 32 random bits: unique even for runs started in the same second.
RUN_ID_PATTERN = r"\d{8}T\d{6}Z-[0-9a-f]{8}"


def tracks_file(run_id):
    """Name of a run's track index (JSON lines, one record per track processed)."""
    return f"{TRACKS_PREFIX}-{run_id}{JSONL_SUFFIX}"


def failures_file(run_id):
    """Name of a run's failures file (JSON lines, one `failure_record` per unusable input)."""
    return f"{FAILURES_PREFIX}-{run_id}{JSONL_SUFFIX}"


def shard_prefix(split, run_id):
    """Prefix of a run's TFRecord shards of one split: `<prefix>-SSSSS-of-NNNNN.tfrecord`.

    A streaming run's per-window files start with the same prefix (and
    `stream_prefix` for its track and failure files), then the window's bounds.
    """
    return f"{split}-{run_id}"


def stream_prefix(kind, run_id):
    """Prefix of a streaming run's per-window track (kind TRACKS_PREFIX) or failure files."""
    return f"{kind}-{run_id}"


def stream_files_glob(kind, run_id):
    """The glob that dataset.json names for a streaming run's per-window files of one kind."""
    return f"{stream_prefix(kind, run_id)}-*{JSONL_SUFFIX}"


def temporary_name(name, token):
    """The hidden temporary file an atomic write of `name` goes through (`write_text`); token: 16 hex digits."""
    return f".{name}.{token}.tmp"


# Full-name patterns of everything a run writes, group "run" its run id. Beam's file sinks write
# `<prefix>-SSSSS-of-NNNNN<suffix>` (WriteToTFRecord, fileio's default naming, with the window's
# bounds for a stream) after staging in `beam-temp-<last path component>-<uuid hex>` directories.
_SPLIT_NAMES = "train|validation"
_RUN = f"(?P<run>{RUN_ID_PATTERN})"
_STREAM_WINDOW = r"(?:-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:\+00:00)?){2}"
_SHARD = r"-\d{5}-of-\d{5}"
_FILE_PATTERNS = (
    re.compile(rf"(?:{_SPLIT_NAMES})-{_RUN}(?:{_STREAM_WINDOW})?{_SHARD}{re.escape(TFRECORD_SUFFIX)}"),
    re.compile(rf"(?:{TRACKS_PREFIX}|{FAILURES_PREFIX})-{_RUN}{re.escape(JSONL_SUFFIX)}"),
    re.compile(rf"(?:{TRACKS_PREFIX}|{FAILURES_PREFIX})-{_RUN}{_STREAM_WINDOW}{_SHARD}{re.escape(JSONL_SUFFIX)}"),
)
_BEAM_TEMP_PATTERNS = (
    re.compile(rf"beam-temp-(?:{_SPLIT_NAMES}|{TRACKS_PREFIX}|{FAILURES_PREFIX})-{_RUN}-[0-9a-f]{{32}}"),
    re.compile(rf"beam-temp-(?:{TRACKS_PREFIX}|{FAILURES_PREFIX})-{_RUN}{re.escape(JSONL_SUFFIX)}-[0-9a-f]{{32}}"),
)
_TEMPORARY_PATTERN = re.compile(rf"\.{re.escape(DATASET_FILE)}\.[0-9a-f]{{16}}\.tmp")


def run_file_owner(name):
    """The run id in the name of a file a run writes, or None when no run could have written a file of that name.

    Args:
      name: a plain file name (no directory).
    """
    for pattern in _FILE_PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            return match.group("run")
    return None


def run_temp_directory_owner(name):
    """The run id of a `beam-temp-...` directory that a run's sinks stage in, or None for any other name."""
    for pattern in _BEAM_TEMP_PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            return match.group("run")
    return None


def is_commit_temporary(name):
    """Whether `name` is the temporary file of a commit of dataset.json (left by a commit that was killed)."""
    return bool(_TEMPORARY_PATTERN.fullmatch(name))


TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)

# The model contract: what trainer.task exports and sampler.generate loads.
MODEL_FILE = "model.keras"  # Keras built-in layers only
MODEL_CONFIG_FILE = "config.json"  # `ModelConfig`
EXPORT_DIR = "export"
EMBEDDING_LAYER = "embedding"
CAUSAL_CONV_LAYER = "causal_conv"
SKIP_OUT_LAYER = "skip_out"
LOGITS_LAYER = "logits"


def gate_layer(index):
    """Name of dilated layer `index`'s filter-and-gate convolution (2 x dilation_channels outputs)."""
    return f"gate_{index}"


def condition_layer(index):
    """Name of dilated layer `index`'s label embedding (2 x dilation_channels per label value; conditioned models)."""
    return f"condition_{index}"


CONDITION_INPUT = "condition"  # The conditioned model's second input: int32 [batch] label indices.


def residual_skip_layer(index):
    """Name of dilated layer `index`'s 1x1 residual-and-skip convolution (residual, then skip channels)."""
    return f"residual_skip_{index}"


# ---------------------------------------------------------------------------------------------------------------
# Failures: every input that cannot be used ends as one record with the stage that failed and why.

STAGE_MATCH = "match"  # an input pattern matched no file
STAGE_READ = "read"  # a file or URL could not be opened or downloaded
STAGE_DECODE = "decode"  # no decodable audio
STAGE_PROCESS = "process"  # an unexpected error while processing a track
STAGE_WINDOW = "window"  # shorter than one window
STAGE_SCRAPE = "scrape"  # a listing page could not be read
STAGE_MESSAGE = "message"  # a streaming message named no track
STAGES = (STAGE_MATCH, STAGE_READ, STAGE_DECODE, STAGE_PROCESS, STAGE_WINDOW, STAGE_SCRAPE, STAGE_MESSAGE)


class TrackError(Exception):
    """An input could not be used.

    Attributes:
      stage: one of STAGES, where it failed.
      status: the HTTP status of a failed request, or None.
    """

    def __init__(self, stage, message, status=None):
        super().__init__(message)
        self.stage = stage
        self.status = status


def failure_record(uri, error):
    """One line of the failures file.

    Args:
      uri: the input (path, URL, pattern, or a message's text).
      error: a TrackError (any other exception is recorded at stage 'process').

    Returns:
      dict {"uri", "stage", "error"} plus "status" for HTTP failures.
    """
    record = {"uri": uri, "stage": getattr(error, "stage", STAGE_PROCESS), "error": str(error)}
    if getattr(error, "status", None) is not None:
        record["status"] = error.status
    return record


# ---------------------------------------------------------------------------------------------------------------
# mu-law


def mu_law_encode(audio, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """Companding and uniform quantization of audio into mu-law codes.

    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), mu = quantization_channels - 1,
    then f in [-1, 1] is mapped to the nearest of `quantization_channels`
    levels: code = rint((f + 1) mu / 2), in float32 (`mu_law_encode_reference`).
    Source: ITU-T G.711 (1988); used as in van den Oord et al., "WaveNet: A
    Generative Model for Raw Audio" (2016), section 2.2.

    Computed without log1p (5x slower than log in numpy's float32 code): an
    estimate from log(1 + mu |x|), within one level of the exact code, is
    corrected against the exact decision thresholds, i.e. the smallest float32
    input of each code under the reference formula (`mu_law_thresholds`). The
    result equals the reference's for every float32 input.

    Args:
      audio: float array [...] in [-1, 1]; values outside are clipped, NaN is read as -1.
      quantization_channels: number of levels, 2..256.

    Returns:
      uint8 array of the same shape, codes in [0, quantization_channels).

    Raises:
      ValueError: if quantization_channels is outside 2..256.
    """
    mu = _mu(quantization_channels)
    thresholds = mu_law_thresholds(quantization_channels)
    x = _clip_unit(audio)
    estimate = np.abs(x)
    estimate *= mu
    estimate += np.float32(1.0)
    np.log(estimate, out=estimate)
    estimate *= np.float32(mu / 2.0 / np.log1p(mu))
    np.copysign(estimate, x, out=estimate)
    estimate += mu / 2.0
    codes = np.rint(estimate).astype(np.int32)
    np.clip(codes, 0, quantization_channels - 1, out=codes)
    codes -= x < thresholds[codes]
    codes += x >= thresholds[codes + 1]
    return codes.astype(np.uint8)


def mu_law_encode_reference(audio, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """`mu_law_encode` written as the formula, one float32 operation after another (slower; the definition)."""
    mu = _mu(quantization_channels)
    x = _clip_unit(audio)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.float32(np.log1p(mu))
    return np.rint((companded + 1.0) * (mu / 2.0)).astype(np.uint8)


@functools.cache
def mu_law_thresholds(quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """The decision thresholds of `mu_law_encode_reference`, exact to the float32.

    Returns:
      float32 [quantization_channels + 1]: entry k (1 <= k < quantization_channels)
      is the smallest float32 x in [-1, 1] whose reference code is >= k; entry 0
      is -inf and the last +inf. The reference formula is non-decreasing in x,
      so code(x) = k exactly when thresholds[k] <= x < thresholds[k + 1].
      Found by bisection over the ordered float32 values (32 rounds).
    """
    levels = np.arange(1, quantization_channels)
    low = np.full(len(levels), _ordered_key(np.float32(-1.0)), np.int64)  # Code < k there (or -1.0 itself).
    high = np.full(len(levels), _ordered_key(np.float32(1.0)), np.int64)  # Code >= k there.
    while np.any(high - low > 1):
        middle = (low + high) // 2
        at_least = mu_law_encode_reference(_from_ordered_key(middle), quantization_channels) >= levels
        high, low = np.where(at_least, middle, high), np.where(at_least, low, middle)
    thresholds = np.empty(quantization_channels + 1, np.float32)
    thresholds[0], thresholds[-1] = -np.inf, np.inf
    thresholds[1:-1] = _from_ordered_key(high)
    thresholds.flags.writeable = False
    return thresholds


def _clip_unit(audio):
    """float32 audio clipped to [-1, 1]; NaN becomes -1 (fmax and fmin drop NaN, np.clip keeps it)."""
    return np.fmin(np.fmax(np.asarray(audio, dtype=np.float32), np.float32(-1.0)), np.float32(1.0))


def _ordered_key(x):
    """float32 -> int64 keys in the same order as the floats (adjacent floats differ by 1)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.int64)
    return np.where(bits & 0x80000000, -(bits & 0x7FFFFFFF), bits)


def _from_ordered_key(keys):
    keys = np.asarray(keys, np.int64)
    return np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32).view(np.float32)


def mu_law_decode(codes, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """Inverse of `mu_law_encode`: codes back to amplitudes.

    x = sign(y) ((1 + mu)^|y| - 1) / mu with y = 2 code / mu - 1.
    Source: ITU-T G.711 (1988); WaveNet (van den Oord et al., 2016), section 2.2.

    Args:
      codes: integer array [...] of codes in [0, quantization_channels).
      quantization_channels: number of levels, 2..256.

    Returns:
      float32 array of the same shape, in [-1, 1].

    Raises:
      ValueError: if quantization_channels is outside 2..256.
    """
    mu = _mu(quantization_channels)
    companded = np.asarray(codes, dtype=np.float32) * np.float32(2.0 / mu) - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.float32(np.log1p(mu))) / mu).astype(np.float32)


def _mu(quantization_channels):
    if not 2 <= quantization_channels <= 256:
        raise ValueError(f"quantization_channels must be in 2..256 to fit uint8 codes, got {quantization_channels}")
    return np.float32(quantization_channels - 1)


def recording_codes(fileobj, sample_rate, quantization_channels, max_samples=None):
    """A recording as mu-law codes, decoded, downmixed and resampled exactly as the pipeline does.

    Uses the pipeline's default decoder (PyAV) and resampler (soxr_hq); no
    windowing and no silence dropping. Memory is bounded by `max_samples`.

    Args:
      fileobj: readable, seekable binary file object of any format FFmpeg decodes.
      sample_rate: output sample rate in Hz.
      quantization_channels: mu-law levels, 2..256.
      max_samples: keep only the last this many samples (None keeps all).

    Returns:
      uint8 [n] codes in [0, quantization_channels), n <= max_samples.

    Raises:
      TrackError: stage 'decode' when the file holds no decodable audio.
    """
    from pipelines import audio  # Decoders and resamplers: imported only by callers that need them.

    config = audio.AudioConfig(sample_rate=sample_rate, quantization_channels=quantization_channels)
    tail = np.zeros(0, np.float32)
    for mono in audio.Track(fileobj, config).mono_blocks():
        tail = np.concatenate([tail, mono])
        if max_samples is not None:
            tail = tail[-max_samples:]
    return mu_law_encode(tail, quantization_channels)


# ---------------------------------------------------------------------------------------------------------------
# The dataset contract: dataset.json


class DatasetMismatchError(ValueError):
    """A dataset does not match what its user needs; the message names both values."""


class ContractError(ValueError):
    """A dataset.json or config.json is malformed or of an unknown format version."""


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    """One split of a dataset.

    Attributes:
      files: TFRecord shard names, relative to the dataset directory (plain names, no directories).
      windows: windows in those shards.
      tracks: tracks whose windows are there (a track never straddles splits).
      seconds: audio in the split's tracks, in seconds at the dataset's sample rate.
    """

    files: tuple = ()
    windows: int = 0
    tracks: int = 0
    seconds: float = 0.0

    def __post_init__(self):
        _check(isinstance(self.files, tuple), f"a split's files must be a list of names, got {self.files!r}")
        _check_count(self.windows, "a split's windows")
        _check_count(self.tracks, "a split's tracks")
        _check_number(self.seconds, "a split's seconds", 0.0)

    def plus(self, other):
        """The union of two disjoint summaries."""
        return SplitSummary(
            files=tuple(sorted(set(self.files) | set(other.files))),
            windows=self.windows + other.windows,
            tracks=self.tracks + other.tracks,
            seconds=self.seconds + other.seconds,
        )


@dataclasses.dataclass(frozen=True)
class LabelCount:
    """How much of a dataset carries one label value.

    Attributes:
      windows: windows with that value.
      tracks: tracks with that value.
    """

    windows: int = 0
    tracks: int = 0

    def __post_init__(self):
        _check_count(self.windows, "a label's windows")
        _check_count(self.tracks, "a label's tracks")

    def plus(self, other):
        return LabelCount(self.windows + other.windows, self.tracks + other.tracks)


def merge_label_counts(first, second):
    """Two {kind: {value: LabelCount}} dicts added up value by value (a new dict; neither input changes)."""
    return add_label_counts({kind: dict(values) for kind, values in first.items()}, second)


def add_label_counts(into, other):
    """Adds the {kind: {value: LabelCount}} `other` into `into` in place (cost: the size of `other`); returns `into`."""
    for kind, values in other.items():
        target = into.setdefault(kind, {})
        for value, count in values.items():
            target[value] = target.get(value, LabelCount()).plus(count)
    return into


@dataclasses.dataclass(frozen=True)
class Accounting:
    """What became of a run's inputs: tracks_ok + tracks_failed + tracks_skipped_existing == tracks_input.

    Attributes:
      tracks_input: distinct tracks found, plus patterns and listing pages that yielded none.
      tracks_ok: tracks processed into the dataset (silent ones included).
      tracks_failed: lines of the failures file.
      tracks_skipped_existing: tracks already in the output, not processed again.
      tracks_silent: tracks whose every window was digital silence.
      tracks_truncated: tracks kept up to corrupt data (`decode_error` in the track index).
      windows_silent_dropped: windows dropped as digital silence.
    """

    tracks_input: int = 0
    tracks_ok: int = 0
    tracks_failed: int = 0
    tracks_skipped_existing: int = 0
    tracks_silent: int = 0
    tracks_truncated: int = 0
    windows_silent_dropped: int = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_count(getattr(self, field.name), f"accounting {field.name}")

    def plus(self, other):
        """Field-by-field sum (a stream's accounting adds up over its windows)."""
        return Accounting(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def unaccounted(self):
        """Inputs neither ok, failed nor skipped (0 when nothing was lost; negative if counted twice)."""
        return self.tracks_input - self.tracks_ok - self.tracks_failed - self.tracks_skipped_existing


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One committed run of the pipeline.

    Attributes:
      run_id: unique id (UTC start time and a random part); its files carry it in their names.
      tracks_file: its track index, a plain name in the dataset directory (a glob for a stream's windows).
      failures_file: its failures file, likewise.
      accounting: its Accounting.
    """

    run_id: str
    tracks_file: str
    failures_file: str
    accounting: Accounting

    def __post_init__(self):
        _check(isinstance(self.run_id, str), f"a run_id must be a string, got {self.run_id!r}")
        _check(isinstance(self.accounting, Accounting), "a run's accounting is malformed")
        _check_plain_name(self.tracks_file)
        _check_plain_name(self.failures_file)


@dataclasses.dataclass(frozen=True)
class DatasetDescription:
    """dataset.json: what a preprocess output holds and how it was made.

    Attributes:
      sample_rate: Hz of every window.
      quantization_channels: mu-law levels, 2..256.
      window_samples, hop_samples: window length and distance between window starts, in samples.
      decoder, resampler: how the audio was decoded and resampled.
      silence_threshold_db: windows with a lower peak (dBFS) were dropped.
      validation_fraction: share of tracks assigned to validation by a stable hash.
      splits: dict split name (SPLITS) -> SplitSummary, describing everything the output holds.
      runs: tuple of RunRecord, every run whose output this description holds, oldest first.
      labels: dict kind (LABEL_KINDS) -> dict value -> LabelCount over all splits: each kind's
        vocabulary. Datasets of format 1 and 2 read as every window UNKNOWN_LABEL.
      encoding: always ENCODING.
      format_version: DATASET_FORMAT_VERSION.
    """

    sample_rate: int
    quantization_channels: int
    window_samples: int
    hop_samples: int
    decoder: str
    resampler: str
    silence_threshold_db: float
    validation_fraction: float
    splits: dict
    runs: tuple
    labels: dict = dataclasses.field(default_factory=dict)
    encoding: str = ENCODING
    format_version: int = DATASET_FORMAT_VERSION

    def __post_init__(self):
        _check_audio_fields(self, DATASET_FORMAT_VERSION, "")
        _check_count(self.window_samples, "window_samples", 1, MAX_WINDOW_SAMPLES)
        _check_count(self.hop_samples, "hop_samples", 1, MAX_WINDOW_SAMPLES)
        _check_number(self.validation_fraction, "validation_fraction", 0.0, 1.0)
        _check(
            isinstance(self.silence_threshold_db, int | float) and not isinstance(self.silence_threshold_db, bool),
            f"silence_threshold_db must be a number, got {self.silence_threshold_db!r}",
        )
        _check(isinstance(self.splits, dict), "splits must be an object")
        _check(isinstance(self.runs, tuple), "runs must be a list")
        _check(isinstance(self.labels, dict), "labels must be an object")
        _check(set(self.splits) == set(SPLITS), f"splits must be {SPLITS}, got {sorted(self.splits)}")
        _check(len(self.runs) >= 1, "a dataset holds at least one run")
        for summary in self.splits.values():
            for name in summary.files:
                _check_plain_name(name)
        for kind, values in self.labels.items():
            _check(isinstance(kind, str) and isinstance(values, dict), f"malformed labels of kind {kind!r}")
            _check(all(isinstance(v, LabelCount) for v in values.values()), f"malformed label counts of {kind!r}")

    def vocabulary(self, kind):
        """The values of a label kind, as a model indexes them: UNKNOWN_LABEL first, then the others sorted.

        Raises:
          DatasetMismatchError: kind is not one of LABEL_KINDS.
        """
        if kind not in LABEL_KINDS:
            raise DatasetMismatchError(f"unknown label kind {kind!r}: one of {', '.join(LABEL_KINDS)}")
        values = set(self.labels.get(kind, {})) - {UNKNOWN_LABEL}
        return (UNKNOWN_LABEL, *sorted(values))

    @property
    def accounting(self):
        """The Accounting of the last run committed."""
        return self.runs[-1].accounting

    @property
    def run_ids(self):
        return [run.run_id for run in self.runs]

    @property
    def seconds(self):
        """Seconds of audio in all splits."""
        return sum(split.seconds for split in self.splits.values())

    @property
    def windows(self):
        """Windows in all splits."""
        return sum(split.windows for split in self.splits.values())

    def with_run(self, splits, run, labels=None):
        """This description with another run's output added.

        Args:
          splits: dict split -> SplitSummary of the run's shards and tracks (disjoint from these).
          run: the run's RunRecord.
          labels: the run's {kind: {value: LabelCount}}, or None.

        Returns:
          a new DatasetDescription: the union of the splits and the runs.

        Raises:
          ContractError: the run is already in the description.
        """
        _check(run.run_id not in self.run_ids, f"run {run.run_id} is already in the dataset")
        return dataclasses.replace(
            self,
            splits={name: self.splits[name].plus(splits[name]) for name in SPLITS},
            runs=(*self.runs, run),
            labels=merge_label_counts(self.labels, labels or {}),
        )

    def shard_paths(self, directory, split):
        """Paths of a split's shards under `directory` (local or any Beam filesystem)."""
        return [join(directory, name) for name in self.splits[split].files]

    def to_dict(self):
        """The JSON object written as dataset.json."""
        out = dataclasses.asdict(self)
        out["runs"] = [dataclasses.asdict(run) for run in self.runs]
        out["accounting"] = dataclasses.asdict(self.accounting)  # The last run's, for readers at a glance.
        out["splits"] = {
            name: {**dataclasses.asdict(s), "files": list(s.files), "seconds": round(s.seconds, 3)}
            for name, s in self.splits.items()
        }
        out["labels"] = {
            kind: {value: dataclasses.asdict(count) for value, count in sorted(values.items())}
            for kind, values in self.labels.items()
        }
        out["features"] = dict(FEATURES)
        return out

    @classmethod
    def from_dict(cls, raw):
        """Parses and validates a dataset.json object.

        Raises:
          ContractError: malformed, unknown format version, or shard names that
            are not plain file names (a description never chooses where a reader writes).
        """
        with _parsing(DATASET_FILE):
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in raw.items() if k in fields}
            for split in raw["splits"].values():
                _check(isinstance(split.get("files"), list), "a split's files must be a list of names")
            values["splits"] = {
                name: SplitSummary(**{**split, "files": tuple(split["files"])}) for name, split in raw["splits"].items()
            }
            if raw.get("format_version") == 1:
                # One track index for all runs, a count of runs: read as one run (shards and splits are unchanged).
                values["format_version"] = DATASET_FORMAT_VERSION
                values["runs"] = (
                    RunRecord("format-1", raw["tracks_file"], raw["failures_file"], Accounting(**raw["accounting"])),
                )
            else:
                values["runs"] = tuple(
                    RunRecord(**{**run, "accounting": Accounting(**run["accounting"])}) for run in raw["runs"]
                )
            if raw.get("format_version") in (1, 2):
                # Windows written before labels carry none: every one reads as UNKNOWN_LABEL.
                values["format_version"] = DATASET_FORMAT_VERSION
                everything = LabelCount(
                    windows=sum(s.windows for s in values["splits"].values()),
                    tracks=sum(s.tracks for s in values["splits"].values()),
                )
                values["labels"] = {kind: {UNKNOWN_LABEL: everything} for kind in LABEL_KINDS}
            else:
                values["labels"] = {
                    kind: {value: LabelCount(**count) for value, count in counts.items()}
                    for kind, counts in raw.get("labels", {}).items()
                }
            return cls(**values)


def read_description(directory):
    """The DatasetDescription of a dataset directory (local, gs://, s3://).

    Raises:
      FileNotFoundError: when the directory has no dataset.json.
      ContractError: when it is malformed.
    """
    path = join(directory, DATASET_FILE)
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: expected an output directory of python -m pipelines.preprocess"
        ) from None
    _check(isinstance(raw, dict), f"{path} is not a JSON object")
    try:
        return DatasetDescription.from_dict(raw)
    except ContractError as e:
        raise ContractError(f"{path}: {e}") from None


def write_description(directory, description):
    """Writes dataset.json into `directory` atomically (`write_text`); returns its path.

    Raises:
      OSError: the write failed; the dataset.json before it is unchanged.
    """
    path = join(directory, DATASET_FILE)
    write_text(path, json.dumps(description.to_dict(), indent=2, sort_keys=True))
    return path


def check_compatible(
    description,
    who,
    sample_rate=None,
    quantization_channels=None,
    window_samples=None,
    hop_samples=None,
    min_window_samples=None,
):
    """The one compatibility check: refuses a dataset whose settings differ from what `who` needs.

    Args:
      description: DatasetDescription.
      who: names the other side in messages ("this run", "the model").
      sample_rate, quantization_channels, window_samples, hop_samples: values
        that must be equal; None skips the check.
      min_window_samples: windows must be at least this long (a model's
        receptive field + 1); None skips it.

    Raises:
      DatasetMismatchError: naming the dataset's value and `who`'s.
    """
    for key, wanted in (
        ("quantization_channels", quantization_channels),
        ("sample_rate", sample_rate),
        ("window_samples", window_samples),
        ("hop_samples", hop_samples),
    ):
        have = getattr(description, key)
        if wanted is not None and have != wanted:
            unit = " Hz" if key == "sample_rate" else ""
            raise DatasetMismatchError(f"the dataset has {key}={have}{unit}, {who} has {key}={wanted}{unit}")
    if min_window_samples is not None and description.window_samples < min_window_samples:
        raise DatasetMismatchError(
            f"the dataset's windows have window_samples={description.window_samples}, shorter than "
            f"{who} needs ({min_window_samples} samples)"
        )


# ---------------------------------------------------------------------------------------------------------------
# The model contract: export/config.json


@dataclasses.dataclass(frozen=True)
class WaveNetConfig:
    """Hyperparameters of a WaveNet (van den Oord et al., 2016), shared by the trainer and the sampler.

    Attributes:
      quantization_channels: number of mu-law codes (input vocabulary and softmax size).
      residual_channels: channels of the residual stream.
      dilation_channels: channels of each gated unit.
      skip_channels: channels of the skip connections and the output stack.
      filter_width: kernel size of the causal and dilated convolutions.
      dilations: dilation of each layer, in order.
      condition_values: values of the label the model is globally conditioned on (0: unconditioned).
        Each dilated layer then has an embedding of the label added to its filter and gate
        pre-activations: tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h) with h the one-hot label
        (van den Oord et al. 2016, section 2.5, global conditioning).
    """

    quantization_channels: int = DEFAULT_QUANTIZATION_CHANNELS
    residual_channels: int = 32
    dilation_channels: int = 32
    skip_channels: int = 128
    filter_width: int = 2
    dilations: tuple = tuple(2**i for i in range(10)) * 2
    condition_values: int = 0

    def __post_init__(self):
        _check_count(self.quantization_channels, "quantization_channels", 2, 256)
        for name in ("residual_channels", "dilation_channels", "skip_channels"):
            _check_count(getattr(self, name), name, 1, MAX_CHANNELS)
        _check_count(self.filter_width, "filter_width", 1, 64)
        _check(
            isinstance(self.dilations, tuple) and len(self.dilations) >= 1,
            f"dilations must be a non-empty list, got {self.dilations!r}",
        )
        for dilation in self.dilations:
            _check_count(dilation, "every dilation", 1, MAX_RECEPTIVE_FIELD)
        _check_count(self.condition_values, "condition_values", 0, MAX_CONDITION_VALUES)
        _check(
            self.receptive_field <= MAX_RECEPTIVE_FIELD,
            f"the receptive field ({self.receptive_field} samples) is more than {MAX_RECEPTIVE_FIELD}: not a "
            "WaveNet this toolkit trains (a damaged config?)",
        )

    @property
    def receptive_field(self):
        """Samples of input that one output sees, the current sample included.

        The initial causal convolution sees `filter_width` samples; each dilated
        layer adds (filter_width - 1) * dilation.
        """
        return (self.filter_width - 1) * sum(self.dilations) + self.filter_width

    def to_dict(self):
        out = {**dataclasses.asdict(self), "dilations": list(self.dilations)}
        if not self.condition_values:
            del out["condition_values"]  # An unconditioned model's config reads as before conditioning existed.
        return out

    @classmethod
    def from_dict(cls, raw):
        _check(isinstance(raw.get("dilations"), list), "the model's dilations must be a list")
        return cls(**{**raw, "dilations": tuple(raw["dilations"])})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """export/config.json: everything the sampler needs beside the weights.

    Attributes:
      wavenet: the architecture (JSON key "model").
      sample_rate: Hz of the audio the model was trained on (and generates).
      step: training steps behind the exported weights.
      condition_kind: the label kind (LABEL_KINDS) the model is conditioned on, or None.
      condition_vocabulary: tuple of that kind's values; value i is the model's condition i
        (`DatasetDescription.vocabulary`).
      encoding: always ENCODING.
      format_version: MODEL_FORMAT_VERSION when conditioned, else UNCONDITIONED_MODEL_FORMAT_VERSION.
    """

    wavenet: WaveNetConfig
    sample_rate: int
    step: int = 0
    condition_kind: str = None
    condition_vocabulary: tuple = ()
    encoding: str = ENCODING
    format_version: int = None

    def __post_init__(self):
        conditioned = bool(self.wavenet.condition_values)
        if self.format_version is None:
            version = MODEL_FORMAT_VERSION if conditioned else UNCONDITIONED_MODEL_FORMAT_VERSION
            object.__setattr__(self, "format_version", version)
        _check(
            self.format_version in (UNCONDITIONED_MODEL_FORMAT_VERSION, MODEL_FORMAT_VERSION),
            f"unknown model format_version {self.format_version!r}",
        )
        _check_audio_fields(self, self.format_version, "model ")
        _check_count(self.step, "step")
        object.__setattr__(self, "condition_vocabulary", tuple(self.condition_vocabulary))
        if conditioned:
            _check(isinstance(self.condition_kind, str), "a conditioned model names its condition_kind")
            vocabulary = self.condition_vocabulary
            _check(
                len(vocabulary) == self.wavenet.condition_values and len(set(vocabulary)) == len(vocabulary),
                f"condition_vocabulary must hold {self.wavenet.condition_values} distinct values",
            )
        else:
            _check(
                not self.condition_kind and not self.condition_vocabulary, "an unconditioned model has no vocabulary"
            )

    @property
    def conditioned(self):
        return bool(self.wavenet.condition_values)

    def condition_indices(self, values):
        """Label values -> the model's condition indices.

        A value matches exactly, or else case-insensitively when that names one value.

        Args:
          values: sequence of str.

        Returns:
          list of int in [0, len(condition_vocabulary)).

        Raises:
          ValueError: the model is unconditioned, or a value is not in its vocabulary (the message lists them).
        """
        if not self.conditioned:
            raise ValueError("the model is not conditioned on a label; generate without --condition")
        vocabulary = self.condition_vocabulary
        folded = {}
        for index, name in enumerate(vocabulary):
            folded.setdefault(name.casefold(), []).append(index)
        indices = []
        for value in values:
            if value in vocabulary:
                indices.append(vocabulary.index(value))
            elif len(folded.get(value.casefold(), ())) == 1:
                indices.append(folded[value.casefold()][0])
            else:
                shown = ", ".join(repr(v) for v in vocabulary[:50]) + (" ..." if len(vocabulary) > 50 else "")
                raise ValueError(
                    f"{value!r} is not a {self.condition_kind} this model knows; it was trained on "
                    f"{len(vocabulary)}: {shown}"
                )
        return indices

    @property
    def receptive_field(self):
        return self.wavenet.receptive_field

    @property
    def quantization_channels(self):
        return self.wavenet.quantization_channels

    def to_dict(self):
        # receptive_field and quantization_channels are derived, written for readers without this code.
        out = {
            "format_version": self.format_version,
            "model": self.wavenet.to_dict(),
            "receptive_field": self.receptive_field,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "quantization_channels": self.quantization_channels,
            "step": self.step,
        }
        if self.conditioned:
            out["condition"] = {"kind": self.condition_kind, "vocabulary": list(self.condition_vocabulary)}
        return out

    @classmethod
    def from_dict(cls, raw):
        """Parses and validates a config.json object.

        Raises:
          ContractError: malformed, unknown format version, or derived fields
            that disagree with the architecture.
        """
        with _parsing(MODEL_CONFIG_FILE):
            condition = raw.get("condition") or {}
            config = cls(
                wavenet=WaveNetConfig.from_dict(raw["model"]),
                sample_rate=raw["sample_rate"],
                step=raw.get("step", 0),
                condition_kind=condition.get("kind"),
                condition_vocabulary=tuple(condition.get("vocabulary", ())),
                encoding=raw.get("encoding", ENCODING),
                format_version=raw.get("format_version", UNCONDITIONED_MODEL_FORMAT_VERSION),
            )
        for key in ("receptive_field", "quantization_channels"):
            _check(raw.get(key, getattr(config, key)) == getattr(config, key), f"{key} disagrees with the model")
        return config


def read_model_config(export_dir):
    """The ModelConfig of an export directory (local, gs://, s3://).

    Raises:
      FileNotFoundError: no config.json there.
      ContractError: malformed.
    """
    path = join(export_dir, MODEL_CONFIG_FILE)
    raw = read_json(path)
    _check(isinstance(raw, dict), f"{path} is not a JSON object")
    try:
        return ModelConfig.from_dict(raw)
    except ContractError as e:
        raise ContractError(f"{path}: {e}") from None


def write_model_config(export_dir, config):
    """Writes config.json into `export_dir` atomically (`write_text`); returns its path."""
    path = join(export_dir, MODEL_CONFIG_FILE)
    write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    return path


def local_export_dir(path):
    """A local export directory from a job_dir or its export/, local or remote.

    Remote paths (gs://, s3://, any Beam filesystem) are fetched into a
    temporary directory: the export is two small files.

    Raises:
      FileNotFoundError: when neither path nor path/export holds model.keras and config.json.
    """
    if "://" in path:
        return _fetch_export(path)
    for candidate in (path, os.path.join(path, EXPORT_DIR)):
        if os.path.isfile(os.path.join(candidate, MODEL_FILE)) and os.path.isfile(
            os.path.join(candidate, MODEL_CONFIG_FILE)
        ):
            return candidate
    raise FileNotFoundError(
        f"no exported model in {path}: expected {MODEL_FILE} and {MODEL_CONFIG_FILE} there or in {path}/export "
        "(written by python -m trainer.task)"
    )


def _fetch_export(uri):
    import shutil
    import tempfile

    from apache_beam.io.filesystems import FileSystems

    for candidate in (uri.rstrip("/"), FileSystems.join(uri.rstrip("/"), EXPORT_DIR)):
        names = [FileSystems.join(candidate, name) for name in (MODEL_FILE, MODEL_CONFIG_FILE)]
        if all(FileSystems.exists(name) for name in names):
            local = tempfile.mkdtemp(prefix="wavenet-export-")
            for remote, name in zip(names, (MODEL_FILE, MODEL_CONFIG_FILE), strict=True):
                with FileSystems.open(remote) as src, open(os.path.join(local, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            return local
    raise FileNotFoundError(f"no exported model in {uri} or {uri}/{EXPORT_DIR}")


# ---------------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def _parsing(file_name):
    """Turns the errors of reading a JSON object into fields into one ContractError naming the file."""
    try:
        yield
    except ContractError:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise ContractError(f"malformed {file_name}: {type(e).__name__}: {e}") from e


def _check_audio_fields(contract_object, format_version, kind):
    """The fields both contracts share: a known format version, mu-law, a positive rate, uint8 codes."""
    _check(
        contract_object.format_version == format_version,
        f"unknown {kind}format_version {contract_object.format_version!r}",
    )
    _check(contract_object.encoding == ENCODING, f"encoding is {contract_object.encoding!r}, expected {ENCODING!r}")
    _check_count(contract_object.sample_rate, "sample_rate", 1, MAX_SAMPLE_RATE)
    _check_count(contract_object.quantization_channels, "quantization_channels", 2, 256)


def _check(condition, message):
    if not condition:
        raise ContractError(message)


def _check_count(value, name, low=0, high=None):
    """An integer (a JSON number without a fraction; not a boolean) in [low, high]."""
    _check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
    bounds = f"in {low}..{high}" if high is not None else f">= {low}"
    _check(value >= low and (high is None or value <= high), f"{name} must be {bounds}, got {value}")


def _check_number(value, name, low, high=None):
    """A finite real number (int or float; not a boolean) in [low, high]."""
    _check(
        isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value),
        f"{name} must be a finite number, got {value!r}",
    )
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    _check(value >= low and (high is None or value <= high), f"{name} must be {bounds}, got {value}")


def _check_plain_name(name):
    """Names read from data never choose where we read or write: a plain file name only."""
    _check(
        isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0"),
        f"file name {name!r} in {DATASET_FILE} is not a plain file name",
    )


# ---------------------------------------------------------------------------------------------------------------
# Commands: every expected fault is one line.

DEBUG_ENV = "WAVENET_DEBUG"  # Set (to anything) to see the traceback of a fault the commands report in one line.
# Errors of the machine or the file system that a user can act on, reported as they come, by errno.
_USER_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\] [^\n:']*(?:: '([^'\n]*)')?")


class CommandError(RuntimeError):
    """An expected fault of a command, whose message says what happened and what to do."""


def fault_message(error):
    """The one line a command prints for an expected fault, or None for an unexpected one (a bug).

    Expected: our own errors (CommandError, ContractError, DatasetMismatchError,
    TrackError, and ValueError for bad options), OSErrors a user can act on
    (a full disk, no permission, a file where a directory belongs, ...), input
    nested too deeply, and a runner's failure whose text carries one of those
    OSErrors (a Beam worker's full disk).
    """
    if isinstance(error, CommandError | ValueError | TrackError):
        return str(error)
    if isinstance(error, RecursionError):
        return "the input is nested too deeply to read"
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{_USER_ERRNOS[error.errno]}{where}"
    if isinstance(error, FileNotFoundError):  # Raised with a message of ours, without an errno.
        return str(error)
    for match in reversed(list(_ERRNO_IN_TEXT.finditer(str(error)))):
        number = int(match.group(1))
        if number in _USER_ERRNOS:
            return _USER_ERRNOS[number] + (f": {match.group(2)}" if match.group(2) else "")
    return None


def run_command(main, *args):
    """Runs a command's `main(*args)`; returns its exit status for sys.exit (0 unless main returns an int).

    An expected fault (`fault_message`) becomes `error: ...` on stderr and
    status 1, without a traceback unless the environment sets DEBUG_ENV; an
    unexpected one keeps its traceback. A closed stdout (`| head`) ends the
    command quietly, as Unix tools do.
    """
    try:
        status = main(*args)
        sys.stdout.flush()
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        message = fault_message(e)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


# TensorFlow's C++ runtime logs to file descriptor 2 (absl's format: `I0000 00:00:1796.0  123 file.cc:52] ...`),
# much of it before any log level applies. These are the lines that say nothing a user can act on.
NATIVE_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_NATIVE_LOG_LINE = re.compile(r"[IWEF]\d{4} \d+:\d+:\d+\.\d+ +\d+ \S+:\d+\] ")
_NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|E\d{4} .*(?:failed call to cuInit|Unable to register cu\w+ factory|oneDNN supports DT_\w+ only on)"
)
_MAYBE_NATIVE = "IWEFT"  # First letters of those lines: a partial line starting so waits for its end.


def is_native_noise(line):
    """Whether a line on stderr is TensorFlow's C++ chatter: its INFO and WARNING lines, and the ERROR lines
    every CPU-only machine prints (no CUDA driver, plugins registered twice, oneDNN's string types)."""
    return bool(_NATIVE_NOISE.match(line)) or (bool(_NATIVE_LOG_LINE.match(line)) and line[0] in "IW")


def filter_native_logs(verbose=False):
    """Hides TensorFlow's C++ chatter (`is_native_noise`) from this process's stderr; call before importing it.

    Unless `verbose`, or the user set TF_CPP_MIN_LOG_LEVEL (then nothing is
    hidden): file descriptor 2 becomes a pipe that a thread reads and forwards
    to the real stderr as it comes, less those lines. Progress bars and our
    own lines pass at once; fatal-error reports (faulthandler) go straight to
    the real stderr. At exit the pipe is drained and stderr restored.

    Returns:
      whether the filter was installed.
    """
    if verbose or NATIVE_LOG_LEVEL_ENV in os.environ:
        return False
    import atexit
    import faulthandler
    import threading

    os.environ[NATIVE_LOG_LEVEL_ENV] = "1"  # TensorFlow's later INFO lines are not even formatted.
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    fatal = os.fdopen(os.dup(original), "w")
    faulthandler.enable(file=fatal)

    def forward():
        pending = b""
        while chunk := os.read(read_end, 1 << 16):
            pending += chunk
            kept, pending = _drop_native_noise(pending)
            os.write(original, kept)
        os.write(original, _drop_native_noise(pending + b"\n")[0][:-1] if pending else b"")

    thread = threading.Thread(target=forward, name="native-log-filter", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # The pipe's last write end closes: the thread drains it and ends.
        thread.join(timeout=5)

    atexit.register(restore)
    filter_native_logs.fatal_file = fatal  # Kept open for faulthandler.
    return True


def _drop_native_noise(data):
    """(bytes to forward, bytes held): complete lines (ending in \\n or \\r) less the noise; a trailing
    partial line is held only when it could still become a native log line."""
    pieces = re.split(rb"(?<=[\r\n])", data)
    tail = pieces.pop() if pieces and not pieces[-1].endswith((b"\n", b"\r")) else b""
    kept = b"".join(p for p in pieces if not is_native_noise(p.decode("utf-8", "replace")))
    if tail and tail[:1].decode("latin-1") not in _MAYBE_NATIVE:
        return kept + tail, b""
    return kept, tail


PROGRESS_LOG_INTERVAL_SECS = 30.0


class LogProgress:
    """tqdm's update / set_postfix / close as a plain line every `interval_secs`, for logs without a terminal.

    A bar's carriage returns turn a log file (Vertex AI, SageMaker, Slurm,
    `> train.log`) into one endless line; these are whole lines.
    """

    def __init__(self, total, unit, desc="", initial=0, stream=None, interval_secs=PROGRESS_LOG_INTERVAL_SECS):
        import time

        self._clock = time.monotonic
        self.total, self.n, self._initial = total, initial, initial
        self._unit, self._desc, self._postfix = unit, desc, ""
        self._stream = stream or sys.stderr
        self._interval = interval_secs
        self._started = self._last = self._clock()

    def update(self, n=1):
        self.n += n
        if self._clock() - self._last >= self._interval:
            self._print()

    def set_postfix(self, **values):
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self):
        if self.n != self._initial:
            self._print()
        self._initial = self.n  # Closing twice prints once.

    def write(self, text, file=None):
        """Prints a line of its own (tqdm's `write`)."""
        print(text, file=file or self._stream, flush=True)

    def line(self):
        """The progress as one line of text."""
        elapsed = self._clock() - self._started
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        left = f", ~{format_duration((self.total - self.n) / rate)} left" if rate > 0 and self.total > self.n else ""
        postfix = f", {self._postfix}" if self._postfix else ""
        desc = f"{self._desc}: " if self._desc else ""
        return f"{desc}{self.n:,}/{self.total:,} {self._unit}s{share}, {rate:,.1f} {self._unit}s/s{left}{postfix}"

    def _print(self):
        print(self.line(), file=self._stream, flush=True)
        self._last = self._clock()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def progress_bar(total, unit, desc="", initial=0, enabled=True, stream=None):
    """Progress of a long loop: a tqdm bar on a terminal, `LogProgress` lines otherwise, nothing when disabled.

    Returns:
      an object with update(n), set_postfix(**values), write(text, file), close() and the context
      manager protocol.
    """
    from tqdm import tqdm

    stream = stream or sys.stderr
    if not enabled or getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, unit=unit, desc=desc or None, initial=initial, disable=not enabled, file=stream)
    return LogProgress(total, unit, desc, initial, stream)


def format_duration(secs):
    """A duration for people: '42 s', '17 min', '11.1 h'."""
    if secs >= 3600:
        return f"{secs / 3600:.1f} h"
    return f"{secs / 60:.0f} min" if secs >= 60 else f"{secs:.0f} s"


# ---------------------------------------------------------------------------------------------------------------
# Files: read and written through Beam's filesystems (local, gs://, s3://), imported when first used.


def is_remote(path):
    """Whether `path` names a Beam filesystem other than local disk (gs://, s3://, ...)."""
    return "://" in path


def join(directory, *names):
    """`directory`/`names` on local disk or any Beam filesystem."""
    return posixpath.join(directory, *names) if is_remote(directory) else os.path.join(directory, *names)


def read_bytes(path):
    """The bytes of a file (local or any Beam filesystem).

    Raises:
      FileNotFoundError: no file there.
      IsADirectoryError: a local directory there.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not is_remote(path) and os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if not FileSystems.exists(path):
        raise FileNotFoundError(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def write_bytes(path, data, mime_type="application/octet-stream"):
    """Replaces the file at `path` by `data` atomically: a reader sees the old file or the new one, whole.

    On local disk the bytes go to a hidden temporary file beside it
    (`temporary_name`), which is flushed and fsynced, renamed over `path`
    (POSIX rename is atomic) and the directory fsynced; a failure removes the
    temporary file and leaves the old one as it was. On an object store (gs://,
    s3://) the object is written once, in one upload, which the store makes
    visible only when complete.

    Raises:
      OSError: the write failed (a full disk, no permission, ...); `path` is unchanged.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if is_remote(path):
        with FileSystems.create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, temporary_name(os.path.basename(path), secrets.token_hex(8)))
    try:
        with open(temporary, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, path) from e  # Name the file written, not its temporary.
        raise
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # The rename itself survives a power loss.
    finally:
        os.close(descriptor)


def write_text(path, text, mime_type="application/json"):
    """Replaces the file at `path` by UTF-8 `text`, atomically (`write_bytes`)."""
    write_bytes(path, text.encode("utf-8"), mime_type)


def read_json(path):
    """The JSON value of a file, however hostile the file.

    Raises:
      FileNotFoundError: no file there.
      ContractError: a directory, not UTF-8, not JSON, or nested too deeply; the message names the file.
    """
    try:
        text = read_bytes(path).decode("utf-8")
        return json.loads(text)
    except IsADirectoryError:
        raise ContractError(f"{path} is a directory, not a file") from None
    except UnicodeDecodeError as e:
        raise ContractError(f"{path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ContractError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ContractError(f"{path} is nested too deeply to be a {posixpath.basename(path)}") from None
