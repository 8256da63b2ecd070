"""The records a run writes and its readers read: one type each, one writer, one reader.

- `TrackRecord`: a line of a run's track index (tracks-RUN.jsonl): a track
  committed to the dataset, how it was read and what it holds.
- `FailureRecord`: a line of a run's failures file (failures-RUN.jsonl): an
  input that is not in the dataset, the stage that stopped it and why (a track
  the licence filter kept out is one, at stage 'licence').
- `ListedTrack`: what scraping a listing page found of a track, before its
  audio is read (what `python -m pipelines.scrape` writes).

Each is a frozen dataclass with `to_json` (one line, sorted keys, valid UTF-8)
and `from_dict`, which reads every version written before (unknown keys are a
later version's and are kept out; missing ones take their defaults);
`read_records` reads a JSON-lines file of any of them.
"""

import dataclasses
import json

from pipelines.contract import fs
from pipelines.contract.checks import ContractError
from pipelines.contract.failures import STAGE_LICENCE, printable


class _Record:
    """What the three record types share: JSON lines in, JSON lines out."""

    def to_dict(self):
        """The record as the JSON object written: every field (None as null)."""
        return dataclasses.asdict(self)

    def to_json(self):
        """One line of JSON, keys sorted."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw):
        """A record from a JSON object; unknown keys (a later version's) are left out.

        Raises:
          ContractError: not an object, or a field this type needs is missing.
        """
        if not isinstance(raw, dict):
            raise ContractError(f"a {cls.__name__} must be a JSON object, got {type(raw).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in raw.items() if key in known})
        except TypeError as e:
            raise ContractError(f"a malformed {cls.__name__}: {e}") from None


@dataclasses.dataclass(frozen=True)
class TrackRecord(_Record):
    """A track committed to the dataset: a line of tracks-RUN.jsonl.

    Attributes:
      track_id: 16 hex digits of SHA-256 of the track's identity (its canonical path or URL).
      uri: where it was read from (valid UTF-8: a name's other bytes written `\\xNN`).
      split: 'train' or 'validation' (a stable hash of track_id).
      duration_secs: seconds of its audio in the dataset, at the dataset's sample rate.
      windows: windows it gave; windows_silent_dropped: windows dropped as digital silence.
      source_sample_rate, source_channels: the file's own, Hz and count (None when not read).
      decode_error: what corrupt data cut or dropped (the track kept in part), or None.
      skipped_secs: audio skipped over damaged data, in seconds.
      nonfinite_secs: audio dropped as NaN or Inf, in seconds; clipped_samples: samples beyond full scale.
      max_track_secs_reached: whether it was cut at --max_track_secs.
      labels: {kind: value} for every label kind.
      title, artist: what a listing site said, else the file's tags ('' when neither says).
      licence: an SPDX id or expression, a LicenseRef- id, or 'unknown'.
      licence_raw: the licence as the source wrote it; licence_url: its deed ('' when none).
      page_url: the track's page (scraped tracks); final_url: where a download ended after redirects.
      zone: the trust zone of a scraped track ('public' or 'private'), '' otherwise.
    """

    track_id: str
    uri: str
    split: str
    duration_secs: float
    windows: int
    windows_silent_dropped: int = 0
    source_sample_rate: int = None
    source_channels: int = None
    decode_error: str = None
    skipped_secs: float = 0.0
    nonfinite_secs: float = 0.0
    clipped_samples: int = 0
    max_track_secs_reached: bool = False
    labels: dict = dataclasses.field(default_factory=dict)
    title: str = ""
    artist: str = ""
    licence: str = None
    licence_raw: str = None
    licence_url: str = ""
    page_url: str = ""
    final_url: str = None
    zone: str = ""


@dataclasses.dataclass(frozen=True)
class FailureRecord(_Record):
    """An input that is not in the dataset: a line of failures-RUN.jsonl.

    Attributes:
      uri: the input (path, URL, pattern, or a message's text), valid UTF-8.
      stage: where it stopped (`contract.STAGES`); 'licence' for a track the licence filter kept out.
      error: why, one line.
      status: the HTTP status, for downloads and pages.
      licence: the licence of a track kept out by the filter.
    """

    uri: str
    stage: str
    error: str
    status: int = None
    licence: str = None

    @property
    def excluded(self):
        """Whether the licence filter kept the track out (counted as tracks_excluded, not tracks_failed)."""
        return self.stage == STAGE_LICENCE

    @classmethod
    def of(cls, uri, error, **fields):
        """The record of an input and the error that stopped it (a TrackError's stage and status)."""
        from pipelines.contract.failures import STAGE_PROCESS

        return cls(
            uri=printable(uri),
            stage=getattr(error, "stage", STAGE_PROCESS),
            error=printable(str(error)),
            status=getattr(error, "status", None),
            **fields,
        )


@dataclasses.dataclass(frozen=True)
class ListedTrack(_Record):
    """A track found on a listing page, before its audio is read.

    Attributes:
      track_id: the id its audio URL gives (as in the dataset).
      audio_url: absolute http(s) URL of the audio file.
      title, artist, licence: as the site states them ('' when absent).
      genre: the genre of the listing page it was found on, else the genre the site gives ('' when neither).
      page_url: the track's own page, or the listing page that showed it.
      zone: 'private' when the listing is itself on a loopback or private address (or the user allowed
        those), so its downloads may be too; else 'public' (`fetch.ZONE_PRIVATE`, `fetch.ZONE_PUBLIC`).
    """

    track_id: str
    audio_url: str
    title: str = ""
    artist: str = ""
    genre: str = ""
    licence: str = ""
    page_url: str = ""
    zone: str = "public"


def read_records(path, record_type):
    """The records of a JSON-lines file (local or any Beam filesystem), in order.

    Args:
      path: the file.
      record_type: TrackRecord, FailureRecord or ListedTrack.

    Returns:
      list of record_type.

    Raises:
      FileNotFoundError: no file there.
      ContractError: a line that is not JSON or not such a record (naming the file and the line).
    """
    records = []
    for number, line in enumerate(fs.read_bytes(path).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(record_type.from_dict(json.loads(line)))
        except (json.JSONDecodeError, ContractError) as e:
            raise ContractError(f"{path} line {number}: {e}") from None
    return records
