"""Processing: each track streamed through the pure audio functions into windows, a track record or a failure."""

import logging
import time

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from pipelines import audio, contract, examples, fetch, labels, licences, progress, sources
from pipelines.transforms.inputs import FetchingDoFn, source_location
from pipelines.transforms.metrics import (
    BYTES_READ,
    FAILED,
    NAMESPACE,
    SAMPLES_OUT,
    TRACKS,
    TRACKS_EXCLUDED_LICENCE,
    TRACKS_FAILED_PROCESSING,
    TRACKS_MAX_TRACK_SECS_REACHED,
    TRACKS_OK,
    TRACKS_SILENT,
    TRACKS_STARTED,
    TRACKS_TRUNCATED,
    WINDOWS_KEPT,
    WINDOWS_SILENT_DROPPED,
)

_LOGGER = logging.getLogger(__name__)


def split_for(track_id, validation_fraction):
    """Split of a track, from a stable hash: a track never straddles splits.

    Args:
      track_id: hex str from `sources.track_id_for`.
      validation_fraction: share of tracks in the validation split, in [0, 1].

    Returns:
      contract.TRAIN or contract.VALIDATION.
    """
    position = int(track_id[-8:], 16) / float(1 << 32)  # Uniform in [0, 1).
    return contract.VALIDATION if position < validation_fraction else contract.TRAIN


class ProcessTrackFn(FetchingDoFn):
    """Track source -> its windows (tagged with the track's split), a track record (TRACKS) or a failure (FAILED).

    Streams the track through decode, downmix, resample, mu-law and
    windowing (`audio.Track`), so memory stays bounded by a block of audio.
    Each window carries the track's labels (`labels.resolve`), known once
    the file is open (its tags) and before the first window is out.
    """

    def __init__(self, audio_config, validation_fraction, fetch_config, label_rules=None, licence_rules=None):
        super().__init__(fetch_config)
        self._audio_config = audio_config
        self._validation_fraction = validation_fraction
        self._label_rules = label_rules or labels.LabelRules()
        self._licence_rules = licence_rules or licences.LicenceRules()
        self._counters = {
            name: Metrics.counter(NAMESPACE, name)
            for name in (
                TRACKS_STARTED, TRACKS_OK, TRACKS_FAILED_PROCESSING, TRACKS_EXCLUDED_LICENCE, TRACKS_SILENT,
                TRACKS_TRUNCATED, TRACKS_MAX_TRACK_SECS_REACHED, BYTES_READ, SAMPLES_OUT, WINDOWS_KEPT,
                WINDOWS_SILENT_DROPPED,
            )
        }  # fmt: skip

    def process(self, source):
        self._counters[TRACKS_STARTED].inc()
        uri, track_id = source["uri"], source["track_id"]
        # Stated by the user or by the site that listed it: a track kept out is never downloaded.
        licence, excluded = self._judge_licence(source)
        if excluded:
            yield self._excluded(uri, licence, excluded)
            return
        started = time.monotonic()
        windows = 0
        # Sources without a zone were named by the user (--input, a stream message): theirs to allow.
        allow_private = source.get("zone", fetch.ZONE_PRIVATE) == fetch.ZONE_PRIVATE
        split = split_for(track_id, self._validation_fraction)  # Once per track: a track never straddles splits.
        track_labels = None
        location = source_location(source)
        try:
            fileobj, final_uri = sources.open_uri(location, self._fetcher, allow_private)
            with fileobj:
                track = audio.Track(fileobj, self._audio_config)
                for offset, codes in track:
                    if track_labels is None:  # The first window: the file's tags are known, no window is out.
                        track_labels = self._labels(source, track)
                        if licence is None:
                            licence, excluded = self._judge_licence(source, track.tags)
                        if excluded:
                            break
                    windows += 1
                    window = examples.Window(track_id, offset, codes.tobytes(), track_labels)
                    yield pvalue.TaggedOutput(split, window)
                self._counters[BYTES_READ].inc(fileobj.tell())
        except Exception as e:
            if windows:
                raise  # A bug after output was emitted: let the runner retry or fail loudly.
            if not isinstance(e, contract.TrackError):
                e = contract.TrackError(contract.STAGE_PROCESS, f"{type(e).__name__}: {e}")
            self._counters[TRACKS_FAILED_PROCESSING].inc()
            progress.track_done(0.0)
            yield pvalue.TaggedOutput(FAILED, contract.FailureRecord.of(uri, e))
            return
        if licence is None:  # No window came: the tags were not read above.
            licence, excluded = self._judge_licence(source, track.tags)
        if excluded:  # Before its first window: nothing of it was emitted.
            yield self._excluded(uri, licence, excluded)
            return
        stats = track.stats
        track_labels = track_labels or self._labels(source, track)
        _LOGGER.info(
            "Processed %s: %.1f s of audio, %d windows in %.2f s",
            uri,
            stats.samples / self._audio_config.sample_rate,
            stats.windows,
            time.monotonic() - started,
        )
        self._counters[TRACKS_OK].inc()
        progress.track_done(stats.samples / self._audio_config.sample_rate)
        self._counters[SAMPLES_OUT].inc(stats.samples)
        self._counters[WINDOWS_KEPT].inc(stats.windows)
        self._counters[WINDOWS_SILENT_DROPPED].inc(stats.windows_silent_dropped)
        if stats.windows == 0:
            self._counters[TRACKS_SILENT].inc()
        if stats.decode_error:
            self._counters[TRACKS_TRUNCATED].inc()
        if stats.max_track_secs_reached:
            self._counters[TRACKS_MAX_TRACK_SECS_REACHED].inc()
            _LOGGER.warning("Cut %s at --max_track_secs=%g", uri, self._audio_config.max_track_secs)
        yield pvalue.TaggedOutput(
            TRACKS,
            contract.TrackRecord(
                track_id=track_id,
                uri=uri,
                split=split,
                duration_secs=stats.samples / self._audio_config.sample_rate,
                windows=stats.windows,
                windows_silent_dropped=stats.windows_silent_dropped,
                source_sample_rate=stats.source_sample_rate,
                source_channels=stats.source_channels,
                decode_error=stats.decode_error,
                skipped_secs=stats.skipped_secs,
                nonfinite_secs=stats.nonfinite_secs,
                clipped_samples=stats.clipped_samples,
                max_track_secs_reached=stats.max_track_secs_reached,
                labels=dict(zip(contract.LABEL_KINDS, track_labels, strict=True)),
                **self._credits(source, track.tags),
                licence=licence.spdx,
                licence_raw=contract.printable(licence.raw),
                licence_url=licence.url or "",
                page_url=source.get("page_url", ""),
                final_url=final_uri if final_uri != location else None,
                zone=source.get("zone", ""),
            ),
        )

    @staticmethod
    def _credits(source, tags):
        """The track's title and artist: what a listing site said, else the file's tags ('' when neither says)."""
        tags = {str(key).casefold(): str(value).strip() for key, value in tags.items()}
        return {key: source.get(key) or contract.printable(tags.get(key, "")) for key in ("title", "artist")}

    def _judge_licence(self, source, tags=None):
        """(licence, why the filter keeps the track out or None): before reading (`tags` None) the licence stated
        or listed, None when the tags must tell; with the file's tags, its licence for good."""
        rules = self._licence_rules
        licence = rules.before_reading(source) if tags is None else rules.after_reading(source, tags)
        return licence, None if licence is None else rules.exclusion(licence)

    def _excluded(self, uri, licence, reason):
        """The failure record (stage 'licence') of a track the licence filter keeps out, for `reason`."""
        self._counters[TRACKS_EXCLUDED_LICENCE].inc()
        progress.track_done(0.0)
        error = contract.TrackError(contract.STAGE_LICENCE, reason)
        return pvalue.TaggedOutput(FAILED, contract.FailureRecord.of(uri, error, licence=licence.spdx))

    def _labels(self, source, track):
        """The track's label values, in the order of contract.LABEL_KINDS."""
        tags = labels.tag_values(track.tags) if self._label_rules.needs_tags else None
        resolved = labels.resolve(self._label_rules, source, tags)
        return tuple(resolved[kind] for kind in contract.LABEL_KINDS)


class ProcessTracks(beam.PTransform):
    """Track sources -> windows of each split, track records and failure records.

    The one wiring of `ProcessTrackFn` and the split assignment, for batch and
    streaming jobs alike.

    Returns:
      dict: contract.TRAIN and contract.VALIDATION -> PCollection of
      `examples.Window`; TRACKS -> track records; FAILED -> failure records.
    """

    def __init__(self, audio_config, validation_fraction, fetch_config, label_rules=None, licence_rules=None):
        super().__init__()
        self._fn = ProcessTrackFn(audio_config, validation_fraction, fetch_config, label_rules, licence_rules)

    def expand(self, sources_pcoll):
        processed = sources_pcoll | "ProcessTrack" >> beam.ParDo(self._fn).with_outputs(
            *contract.SPLITS, FAILED, TRACKS, main="unused"
        )
        return {name: processed[name] for name in (*contract.SPLITS, TRACKS, FAILED)}
