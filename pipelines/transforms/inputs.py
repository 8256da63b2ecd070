"""Inputs: patterns matched, listings scraped, one source per track chosen, and the inputs counted."""

import json
import os

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from pipelines import contract, fetch, listings, progress, sources
from pipelines.transforms.metrics import (
    FAILED,
    NAMESPACE,
    PAGES_FAILED,
    PATTERNS_UNMATCHED,
    SKIPPED,
    TRACKS_SCRAPED,
    TRACKS_SKIPPED_EXISTING,
)

# The exact local path of a source whose name is not valid UTF-8, as the file system's bytes.
PATH_BYTES = "path_bytes"


def source_record(uri, **metadata):
    """A track to process: its canonical URI, its id, and what a listing page said of it.

    Every str in it is valid UTF-8, as Beam's coders and the JSON records need:
    "uri" is `contract.printable` (a name's bytes that are not UTF-8 shown as
    `\\xNN`), and such a path travels exactly, as bytes, in PATH_BYTES
    (`source_location` reads it back; `track_fields` leaves it out of records).
    """
    canonical = sources.canonical_uri(uri)
    record = {"uri": contract.printable(canonical), "track_id": sources.track_id_for(uri), **metadata}
    if record["uri"] != canonical:
        record[PATH_BYTES] = os.fsencode(canonical)
    return record


def source_location(source):
    """What `sources.open_uri` opens for a source record: its exact path or URI (str, surrogate escapes included)."""
    return os.fsdecode(source[PATH_BYTES]) if PATH_BYTES in source else source["uri"]


def track_fields(source):
    """A source record's fields that go into its track record (all of them JSON text)."""
    return {key: value for key, value in source.items() if key != PATH_BYTES}


class MatchInputsFn(beam.DoFn):
    """Pattern -> track source records (a name that is not UTF-8 never crosses a coder as str); no match fails."""

    def __init__(self):
        self._unmatched = Metrics.counter(NAMESPACE, PATTERNS_UNMATCHED)

    def process(self, pattern):
        try:
            uris = sources.match_pattern(pattern)
        except contract.TrackError as e:
            self._unmatched.inc()
            yield pvalue.TaggedOutput(FAILED, contract.FailureRecord.of(pattern, e))
            return
        for uri in uris:
            yield source_record(uri)


class ExpandInputs(beam.PTransform):
    """Input patterns -> track source records.

    Returns (sources, failures): source records (`source_record`) and the
    failure records of patterns that matched nothing.
    """

    def __init__(self, patterns):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin):
        matched = (
            pbegin
            | "CreatePatterns" >> beam.Create(self._patterns)
            | "MatchPatterns" >> beam.ParDo(MatchInputsFn()).with_outputs(FAILED, main="sources")
        )
        return matched.sources, matched[FAILED]


class FetchingDoFn(beam.DoFn):
    """A DoFn holding one polite `fetch.Fetcher` per instance (HTTP sessions are not picklable)."""

    def __init__(self, fetch_config):
        self._fetch_config = fetch_config
        self._fetcher = None

    def setup(self):
        self._fetcher = fetch.Fetcher(self._fetch_config)

    def teardown(self):
        if self._fetcher is not None:
            self._fetcher.close()


class ScrapeListingsFn(FetchingDoFn):
    """All start URLs -> scraped track sources; unreadable listing pages -> FAILED.

    One element holds every start URL, so de-duplication and --max_tracks apply
    across listings; listing pages are read one after another (politeness),
    and the downloads fan out after the Reshuffle.
    """

    def __init__(self, fetch_config, max_pages, max_tracks):
        super().__init__(fetch_config)
        self._max_pages = max_pages
        self._max_tracks = max_tracks
        self._scraped = Metrics.counter(NAMESPACE, TRACKS_SCRAPED)
        self._pages_failed = Metrics.counter(NAMESPACE, PAGES_FAILED)

    def process(self, start_urls):
        for item in listings.scrape(start_urls, self._fetcher, self._max_pages, self._max_tracks):
            if isinstance(item, contract.ListedTrack):
                self._scraped.inc()
                said = {"genre": item.genre, "artist": item.artist}
                yield source_record(
                    item.audio_url, title=item.title, artist=item.artist, licence=item.licence,
                    page_url=item.page_url, zone=item.zone, labels={k: v for k, v in said.items() if v},
                )  # fmt: skip
            else:
                self._pages_failed.inc()
                yield pvalue.TaggedOutput(FAILED, item)


class ScrapeTracks(beam.PTransform):
    """Start URLs -> (track sources, failure records of listing pages)."""

    def __init__(self, start_urls, fetch_config, max_pages, max_tracks):
        super().__init__()
        self._start_urls = list(start_urls)
        self._fn = ScrapeListingsFn(fetch_config, max_pages, max_tracks)

    def expand(self, pbegin):
        scraped = (
            pbegin
            | "CreateStartUrls" >> beam.Create([self._start_urls])
            | "ScrapeListings" >> beam.ParDo(self._fn).with_outputs(FAILED, main="sources")
        )
        return scraped.sources, scraped[FAILED]


class PickSourceFn(beam.DoFn):
    """(track_id, records) -> one record per track, or SKIPPED if already in the dataset."""

    def __init__(self):
        self._skipped = Metrics.counter(NAMESPACE, TRACKS_SKIPPED_EXISTING)

    def process(self, keyed, existing_ids):
        track_id, records = keyed
        if track_id in existing_ids:
            self._skipped.inc()
            yield pvalue.TaggedOutput(SKIPPED, track_id)
            return
        progress.track_selected()
        # Deterministic choice: the record saying most (scraped metadata) wins.
        yield min(records, key=lambda r: (-len(r), json.dumps(track_fields(r), sort_keys=True)))


class CommittedTrackIds(beam.PTransform):
    """Track index paths (`commit.committed_track_indexes`) -> (track_id, True) of every track they hold.

    The skip set of a batch run and of a stream, read by the runner's workers (never
    gathered in the launching process), for `pvalue.AsDict`.
    """

    def __init__(self, index_paths):
        super().__init__()
        self._index_paths = list(index_paths)

    def expand(self, pbegin):
        return (
            pbegin
            | "CommittedTrackIndexes" >> beam.Create(self._index_paths)
            | "ReadTrackIndexes" >> beam.io.ReadAllFromText()
            | "ExistingIds" >> beam.Map(lambda line: (json.loads(line)["track_id"], True))
        )


class SelectSources(beam.PTransform):
    """Sources -> one per track_id, minus tracks already in the output; spread over workers.

    Returns (sources to process, ids skipped as already processed).
    """

    def __init__(self, existing_ids):
        super().__init__()
        self._existing_ids = existing_ids

    def expand(self, sources_pcoll):
        picked = (
            sources_pcoll
            | "KeyByTrackId" >> beam.Map(lambda source: (source["track_id"], source))
            | "GroupByTrackId" >> beam.GroupByKey()
            | "PickOnePerTrack"
            >> beam.ParDo(PickSourceFn(), pvalue.AsDict(self._existing_ids)).with_outputs(SKIPPED, main="sources")
        )
        # Matching yields every file of a glob in one bundle; this spreads tracks across workers.
        return picked.sources | "Reshuffle" >> beam.Reshuffle(), picked[SKIPPED]
