"""Every name the three programs share: feature keys, label kinds, splits, file names and layer names.

The one definition of the names a run writes into an output directory: the
writers build them here, and cleanup removes only names that match them
(`run_file_owner`, `run_temp_directory_owner`, `is_commit_temporary`).
"""

import re

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
    """Name of a run's failures file (JSON lines, one `FailureRecord` per input not in the dataset)."""
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
# The files a commit replaces atomically (dataset.json, the cards, attribution.csv) or creates whole (the lease and
# the commit lock, written aside then linked): their hidden temporaries, 16 hex digits, are a killed commit's.
LEASE_FILE = "lease.json"  # The run writing into an output (`pipelines.commit`).
COMMIT_LOCK_FILE = "commit.lock"  # Held for the seconds a commit takes (`pipelines.commit`).
CARD_FILE = "README.md"  # The dataset card (`pipelines.cards`).
CARD_FALLBACK_FILE = "DATASET_CARD.md"  # The card beside a README.md of the user's own.
ATTRIBUTION_FILE = "attribution.csv"  # One row per committed track (`contract.attribution`).
COMMIT_WRITTEN_FILES = (DATASET_FILE, CARD_FILE, CARD_FALLBACK_FILE, ATTRIBUTION_FILE, LEASE_FILE, COMMIT_LOCK_FILE)
_TEMPORARY_PATTERN = re.compile(
    rf"\.(?:{'|'.join(re.escape(name) for name in COMMIT_WRITTEN_FILES)})\.[0-9a-f]{{16}}\.tmp"
)


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
    """Whether `name` is the temporary file of a file a commit writes (`COMMIT_WRITTEN_FILES`), left by a commit
    or a lease that was killed."""
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
