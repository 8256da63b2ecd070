"""The dataset contract: dataset.json, built, validated, read and written here, and the one compatibility check."""

import dataclasses
import json

from pipelines.contract import fs
from pipelines.contract.checks import (
    DatasetMismatchError,
    check,
    check_audio_fields,
    check_count,
    check_number,
    check_plain_name,
    parsing,
)
from pipelines.contract.limits import ENCODING, MAX_WINDOW_SAMPLES
from pipelines.contract.names import DATASET_FILE, FEATURES, LABEL_KINDS, SPLITS, UNKNOWN_LABEL

# 4: each run records its command (credentials left out) and software; the accounting counts tracks_excluded.
# 3: each window carries its track's labels (label/KIND features), dataset.json each kind's vocabulary.
# 2: per-run track index and failures files, named in `runs` (1: one tracks.jsonl, `runs` a count).
DATASET_FORMAT_VERSION = 4


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
        check(isinstance(self.files, tuple), f"a split's files must be a list of names, got {self.files!r}")
        check_count(self.windows, "a split's windows")
        check_count(self.tracks, "a split's tracks")
        check_number(self.seconds, "a split's seconds", 0.0)

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
        check_count(self.windows, "a label's windows")
        check_count(self.tracks, "a label's tracks")

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
    """What became of a run's inputs: tracks_ok + tracks_failed + tracks_excluded + tracks_skipped_existing ==
    tracks_input.

    Attributes:
      tracks_input: distinct tracks found, plus patterns and listing pages that yielded none.
      tracks_ok: tracks processed into the dataset (silent ones included).
      tracks_failed: lines of the failures file but those of tracks_excluded.
      tracks_excluded: tracks the licence filter kept out (lines of the failures file at stage 'licence').
      tracks_skipped_existing: tracks already in the output, not processed again.
      tracks_silent: tracks whose every window was digital silence.
      tracks_truncated: tracks kept in part: up to corrupt data, or without their non-finite samples
        (`decode_error` in the track index).
      windows_silent_dropped: windows dropped as digital silence.
    """

    tracks_input: int = 0
    tracks_ok: int = 0
    tracks_failed: int = 0
    tracks_excluded: int = 0
    tracks_skipped_existing: int = 0
    tracks_silent: int = 0
    tracks_truncated: int = 0
    windows_silent_dropped: int = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_count(getattr(self, field.name), f"accounting {field.name}")

    def plus(self, other):
        """Field-by-field sum (a stream's accounting adds up over its windows)."""
        return Accounting(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def unaccounted(self):
        """Inputs neither ok, failed, excluded nor skipped (0 when nothing was lost; negative if counted twice)."""
        used = self.tracks_ok + self.tracks_failed + self.tracks_excluded + self.tracks_skipped_existing
        return self.tracks_input - used


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One committed run of the pipeline.

    Attributes:
      run_id: unique id (UTC start time and a random part); its files carry it in their names.
      tracks_file: its track index, a plain name in the dataset directory (a glob for a stream's windows).
      failures_file: its failures file, likewise.
      accounting: its Accounting.
      command: the run's command-line arguments, credentials left out (empty for runs before format 4).
      software: the package and version that made it ('' before format 4).
    """

    run_id: str
    tracks_file: str
    failures_file: str
    accounting: Accounting
    command: tuple = ()
    software: str = ""

    def __post_init__(self):
        check(isinstance(self.run_id, str), f"a run_id must be a string, got {self.run_id!r}")
        check(isinstance(self.accounting, Accounting), "a run's accounting is malformed")
        check_plain_name(self.tracks_file)
        check_plain_name(self.failures_file)
        check(
            isinstance(self.command, tuple) and all(isinstance(a, str) for a in self.command),
            "a run's command must be a list of strings",
        )
        check(isinstance(self.software, str), "a run's software must be a string")


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
        check_audio_fields(self, DATASET_FORMAT_VERSION, "")
        check_count(self.window_samples, "window_samples", 1, MAX_WINDOW_SAMPLES)
        check_count(self.hop_samples, "hop_samples", 1, MAX_WINDOW_SAMPLES)
        check_number(self.validation_fraction, "validation_fraction", 0.0, 1.0)
        check(
            isinstance(self.silence_threshold_db, int | float) and not isinstance(self.silence_threshold_db, bool),
            f"silence_threshold_db must be a number, got {self.silence_threshold_db!r}",
        )
        check(isinstance(self.splits, dict), "splits must be an object")
        check(isinstance(self.runs, tuple), "runs must be a list")
        check(isinstance(self.labels, dict), "labels must be an object")
        check(set(self.splits) == set(SPLITS), f"splits must be {SPLITS}, got {sorted(self.splits)}")
        check(len(self.runs) >= 1, "a dataset holds at least one run")
        for summary in self.splits.values():
            for name in summary.files:
                check_plain_name(name)
        for kind, values in self.labels.items():
            check(isinstance(kind, str) and isinstance(values, dict), f"malformed labels of kind {kind!r}")
            check(all(isinstance(v, LabelCount) for v in values.values()), f"malformed label counts of {kind!r}")

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

    @property
    def tracks(self):
        """Tracks in all splits (a track is in one split only)."""
        return sum(split.tracks for split in self.splits.values())

    def with_run(self, splits, run, labels=None, continued=False):
        """This description with another run's output added; or, for a run it holds that is `continued`
        (a stream, window after window), with that run's new output added and its accounting summed.

        Args:
          splits: dict split -> SplitSummary of the run's shards and tracks (disjoint from these).
          run: the run's RunRecord (for a continued run: the accounting of what is new).
          labels: the run's {kind: {value: LabelCount}}, or None.
          continued: the run may already be in the description (anywhere: other runs may have
            committed since its last window); its record is then updated in place.

        Returns:
          a new DatasetDescription: the union of the splits and the runs.

        Raises:
          ContractError: the run is already in the description and not `continued`.
        """
        index = next((i for i, held in enumerate(self.runs) if held.run_id == run.run_id), None)
        check(index is None or continued, f"run {run.run_id} is already in the dataset")
        if index is None:
            runs = (*self.runs, run)
        else:
            run = dataclasses.replace(run, accounting=self.runs[index].accounting.plus(run.accounting))
            runs = (*self.runs[:index], run, *self.runs[index + 1 :])
        return dataclasses.replace(
            self,
            splits={name: self.splits[name].plus(splits[name]) for name in SPLITS},
            runs=runs,
            labels=merge_label_counts(self.labels, labels or {}),
        )

    def shard_paths(self, output, split):
        """Paths of a split's shards under the dataset directory `output` (local or any Beam filesystem)."""
        return [fs.join(output, name) for name in self.splits[split].files]

    def to_dict(self):
        """The JSON object written as dataset.json."""
        out = dataclasses.asdict(self)
        out["runs"] = [{**dataclasses.asdict(run), "command": list(run.command)} for run in self.runs]
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
        with parsing(DATASET_FILE):
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in raw.items() if k in fields}
            for split in raw["splits"].values():
                check(isinstance(split.get("files"), list), "a split's files must be a list of names")
            values["splits"] = {
                name: SplitSummary(**{**split, "files": tuple(split["files"])}) for name, split in raw["splits"].items()
            }
            if raw.get("format_version") in range(1, DATASET_FORMAT_VERSION):
                # An older version reads as this one: what each lacks is filled in below, the fields later
                # versions added take their defaults (4: each run's command and software, tracks_excluded).
                values["format_version"] = DATASET_FORMAT_VERSION
            if raw.get("format_version") == 1:
                # One track index for all runs, a count of runs: read as one run (shards and splits are unchanged).
                values["runs"] = (
                    RunRecord("format-1", raw["tracks_file"], raw["failures_file"], Accounting(**raw["accounting"])),
                )
            else:
                for run in raw["runs"]:
                    check(isinstance(run.get("command", []), list), "a run's command must be a list of arguments")
                values["runs"] = tuple(
                    RunRecord(
                        **{
                            **run,
                            "accounting": Accounting(**run["accounting"]),
                            "command": tuple(run.get("command", ())),
                        }
                    )
                    for run in raw["runs"]
                )
            if raw.get("format_version") in (1, 2):
                # Windows written before labels carry none: every one reads as UNKNOWN_LABEL.
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


def read_description(output):
    """The DatasetDescription of a dataset directory `output` (local, gs://, s3://).

    Raises:
      FileNotFoundError: when the directory has no dataset.json.
      ContractError: when it is malformed.
    """
    path = fs.join(output, DATASET_FILE)
    try:
        return fs.read_contract(path, DatasetDescription.from_dict)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: expected an output directory of python -m pipelines.preprocess"
        ) from None


def write_description(output, description):
    """Writes dataset.json into the dataset directory `output` atomically (`write_text`); returns its path.

    Raises:
      OSError: the write failed; the dataset.json before it is unchanged.
    """
    path = fs.join(output, DATASET_FILE)
    fs.write_text(path, json.dumps(description.to_dict(), indent=2, sort_keys=True))
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
