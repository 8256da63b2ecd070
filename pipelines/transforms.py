"""Beam transforms of the preprocess pipeline.

DoFns here only wire the pure functions of `pipelines.audio`,
`pipelines.sources` and `pipelines.examples` together, count their work with
Beam metrics and route failures to a tagged output; no audio logic lives here.
"""

import dataclasses
import json
import logging
import posixpath
import time

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import audio, commit, contract, examples, fetch, labels, progress, scrape, sources
from pipelines.contract import Accounting, LabelCount, SplitSummary

_LOGGER = logging.getLogger(__name__)

NAMESPACE = "preprocess"
# Counter names, read back by the driver. Those that share a name with an `Accounting` field count the same thing.
PATTERNS_UNMATCHED = "patterns_unmatched"
TRACKS_STARTED = "tracks_started"  # tracks that entered processing (not the accounting's tracks_input)
TRACKS_OK = "tracks_ok"
TRACKS_FAILED_PROCESSING = "tracks_failed_processing"  # a part of the accounting's tracks_failed
TRACKS_SILENT = "tracks_silent"
TRACKS_TRUNCATED = "tracks_truncated"
TRACKS_SKIPPED_EXISTING = "tracks_skipped_existing"
TRACKS_CUT_AT_MAX_SECS = "tracks_cut_at_max_secs"
TRACKS_SCRAPED = "tracks_scraped"
PAGES_FAILED = "listing_pages_failed"
BYTES_READ = "bytes_read"
SAMPLES_OUT = "samples_out"
WINDOWS_KEPT = "windows_kept"
WINDOWS_SILENT_DROPPED = "windows_silent_dropped"
EXAMPLES_ENCODED = "examples_encoded"

# Tagged outputs.
FAILED = "failed"
TRACKS = "tracks"
SKIPPED = "skipped"


def source_record(uri, **metadata):
    """A track to process: its canonical URI, its id, and what a listing page said of it."""
    return {"uri": sources.canonical_uri(uri), "track_id": sources.track_id_for(uri), **metadata}


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


class MatchInputsFn(beam.DoFn):
    """Pattern -> track URIs; a pattern that matches nothing is a failure."""

    def __init__(self):
        self._unmatched = Metrics.counter(NAMESPACE, PATTERNS_UNMATCHED)

    def process(self, pattern):
        try:
            yield from sources.match_pattern(pattern)
        except contract.TrackError as e:
            self._unmatched.inc()
            yield pvalue.TaggedOutput(FAILED, contract.failure_record(pattern, e))


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
            | "MatchPatterns" >> beam.ParDo(MatchInputsFn()).with_outputs(FAILED, main="uris")
        )
        return matched.uris | "ToSources" >> beam.Map(source_record), matched[FAILED]


class _FetchingDoFn(beam.DoFn):
    """A DoFn holding one polite `fetch.Fetcher` per instance (HTTP sessions are not picklable)."""

    def __init__(self, fetch_config):
        self._fetch_config = fetch_config
        self._fetcher = None

    def setup(self):
        self._fetcher = fetch.Fetcher(self._fetch_config)

    def teardown(self):
        if self._fetcher is not None:
            self._fetcher.close()


class ScrapeListingsFn(_FetchingDoFn):
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
        for item in scrape.scrape(start_urls, self._fetcher, self._max_pages, self._max_tracks):
            if isinstance(item, scrape.TrackRecord):
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
        yield min(records, key=lambda r: (-len(r), json.dumps(r, sort_keys=True)))


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


class ProcessTrackFn(_FetchingDoFn):
    """Track source -> its windows (tagged with the track's split), a track record (TRACKS) or a failure (FAILED).

    Streams the track through decode, downmix, resample, mu-law and
    windowing (`audio.Track`), so memory stays bounded by a block of audio.
    Each window carries the track's labels (`labels.resolve`), known once
    the file is open (its tags) and before the first window is out.
    """

    def __init__(self, config, validation_fraction, fetch_config, label_rules=None):
        super().__init__(fetch_config)
        self._config = config
        self._validation_fraction = validation_fraction
        self._label_rules = label_rules or labels.LabelRules()
        self._counters = {
            name: Metrics.counter(NAMESPACE, name)
            for name in (
                TRACKS_STARTED, TRACKS_OK, TRACKS_FAILED_PROCESSING, TRACKS_SILENT, TRACKS_TRUNCATED,
                TRACKS_CUT_AT_MAX_SECS, BYTES_READ, SAMPLES_OUT, WINDOWS_KEPT, WINDOWS_SILENT_DROPPED,
            )
        }  # fmt: skip

    def process(self, source):
        self._counters[TRACKS_STARTED].inc()
        uri, track_id = source["uri"], source["track_id"]
        started = time.monotonic()
        windows = 0
        # Sources without a zone were named by the user (--input, a stream message): theirs to allow.
        allow_private = source.get("zone", fetch.ZONE_PRIVATE) == fetch.ZONE_PRIVATE
        split = split_for(track_id, self._validation_fraction)  # Once per track: a track never straddles splits.
        track_labels = None
        try:
            fileobj, final_uri = sources.open_uri(uri, self._fetcher, allow_private)
            with fileobj:
                track = audio.Track(fileobj, self._config)
                for offset, codes in track:
                    if track_labels is None:
                        track_labels = self._labels(source, track)
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
            yield pvalue.TaggedOutput(FAILED, contract.failure_record(uri, e))
            return
        stats = track.stats
        track_labels = track_labels or self._labels(source, track)
        _LOGGER.info(
            "Processed %s: %.1f s of audio, %d windows in %.2f s",
            uri,
            stats.samples / self._config.sample_rate,
            stats.windows,
            time.monotonic() - started,
        )
        self._counters[TRACKS_OK].inc()
        progress.track_done(stats.samples / self._config.sample_rate)
        self._counters[SAMPLES_OUT].inc(stats.samples)
        self._counters[WINDOWS_KEPT].inc(stats.windows)
        self._counters[WINDOWS_SILENT_DROPPED].inc(stats.windows_silent_dropped)
        if stats.windows == 0:
            self._counters[TRACKS_SILENT].inc()
        if stats.decode_error:
            self._counters[TRACKS_TRUNCATED].inc()
        if stats.max_track_secs_reached:
            self._counters[TRACKS_CUT_AT_MAX_SECS].inc()
            _LOGGER.warning("Cut %s at --max_track_secs=%g", uri, self._config.max_track_secs)
        yield pvalue.TaggedOutput(
            TRACKS,
            {
                **source,
                "split": split,
                "duration_secs": stats.samples / self._config.sample_rate,
                "windows": stats.windows,
                "windows_silent_dropped": stats.windows_silent_dropped,
                "source_sample_rate": stats.source_sample_rate,
                "source_channels": stats.source_channels,
                "decode_error": stats.decode_error,
                "skipped_secs": stats.skipped_secs,
                "max_track_secs_reached": stats.max_track_secs_reached,
                "labels": dict(zip(contract.LABEL_KINDS, track_labels, strict=True)),
                **({"final_url": final_uri} if final_uri != uri else {}),
            },
        )

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

    def __init__(self, config, validation_fraction, fetch_config, label_rules=None):
        super().__init__()
        self._fn = ProcessTrackFn(config, validation_fraction, fetch_config, label_rules)

    def expand(self, sources_pcoll):
        processed = sources_pcoll | "ProcessTrack" >> beam.ParDo(self._fn).with_outputs(
            *contract.SPLITS, FAILED, TRACKS, main="unused"
        )
        return {name: processed[name] for name in (*contract.SPLITS, TRACKS, FAILED)}


class EncodeExamplesFn(beam.DoFn):
    """A batch of `examples.Window` -> serialized tf.train.Example bytes."""

    def __init__(self):
        self._encoded = Metrics.counter(NAMESPACE, EXAMPLES_ENCODED)
        self._encoder = None

    def setup(self):
        self._encoder = examples.ExampleEncoder()

    def process(self, windows):
        serialized = self._encoder.encode(windows)
        self._encoded.inc(len(serialized))
        yield from serialized


class EncodeExamples(beam.PTransform):
    """`examples.Window`s -> serialized tf.train.Examples, encoded in batches.

    One Arrow batch per call costs ~10 us a window instead of ~135 us one by
    one; a streaming job passes min_batch_size=1 so that a window's last
    elements are not held back.
    """

    def __init__(self, min_batch_size=16, max_batch_size=64):
        super().__init__()
        self._min, self._max = min_batch_size, max_batch_size

    def expand(self, windows):
        return (
            windows
            | "BatchWindows" >> beam.BatchElements(min_batch_size=self._min, max_batch_size=self._max)
            | "Encode" >> beam.ParDo(EncodeExamplesFn())
        )


class WriteSplit(beam.PTransform):
    """Windows of one split -> TFRecord shards `<split>-<run_id>-SSSSS-of-NNNNN.tfrecord`.

    The run id keeps a later run's shards beside an earlier run's. Returns the
    PCollection of the shard paths written.
    """

    def __init__(self, output_dir, split, run_id, num_shards):
        super().__init__()
        self._prefix = FileSystems.join(output_dir, contract.shard_prefix(split, run_id))
        self._num_shards = num_shards

    def expand(self, windows):
        return (
            windows
            | "EncodeExamples" >> EncodeExamples()
            | "WriteTFRecord"
            >> beam.io.WriteToTFRecord(
                self._prefix,
                file_name_suffix=contract.TFRECORD_SUFFIX,
                num_shards=self._num_shards,
            )
        )


class WriteJsonLines(beam.PTransform):
    """Dicts -> one JSON-lines file (a single shard); returns its path."""

    def __init__(self, path):
        super().__init__()
        self._path = path

    def expand(self, records):
        return (
            records
            | "ToJson" >> beam.Map(lambda record: json.dumps(record, sort_keys=True))
            | "WriteText" >> beam.io.WriteToText(self._path, shard_name_template="")
        )


class DatasetStatsFn(beam.CombineFn):
    """Track records -> (dict split -> SplitSummary without files, Accounting of the tracks' outcomes, label counts).

    The Accounting fills tracks_ok, tracks_silent, tracks_truncated and
    windows_silent_dropped; the input counts come from elsewhere. Label
    counts: {kind: {value: contract.LabelCount}}, every kind of
    contract.LABEL_KINDS present.
    """

    def create_accumulator(self):
        return {split: SplitSummary() for split in contract.SPLITS}, Accounting(), {k: {} for k in contract.LABEL_KINDS}

    def add_input(self, accumulator, track):
        splits, accounting, label_counts = accumulator
        split = track["split"]
        added = SplitSummary(windows=track["windows"], tracks=1, seconds=track["duration_secs"])
        outcome = Accounting(
            tracks_ok=1,
            tracks_silent=int(track["windows"] == 0),
            tracks_truncated=int(bool(track["decode_error"])),
            windows_silent_dropped=track["windows_silent_dropped"],
        )
        track_labels = track.get("labels") or {}
        count = LabelCount(windows=track["windows"], tracks=1)
        added_labels = {kind: {track_labels.get(kind, contract.UNKNOWN_LABEL): count} for kind in contract.LABEL_KINDS}
        # In place: a vocabulary of many values (artists) is not copied per track.
        contract.add_label_counts(label_counts, added_labels)
        return {**splits, split: splits[split].plus(added)}, accounting.plus(outcome), label_counts

    def merge_accumulators(self, accumulators):
        splits, accounting, label_counts = self.create_accumulator()
        for other_splits, other_accounting, other_labels in accumulators:
            splits = {name: splits[name].plus(other_splits[name]) for name in contract.SPLITS}
            accounting = accounting.plus(other_accounting)
            contract.add_label_counts(label_counts, other_labels)
        return splits, accounting, label_counts

    def extract_output(self, accumulator):
        return accumulator


def describe_run(config, validation_fraction, stats, shard_names, counts, run_files, previous=None, cumulative=False):
    """The dataset description after a run (or a streaming window), built in one place.

    Args:
      config: `audio.AudioConfig` the dataset was made with.
      validation_fraction: share of tracks assigned to validation.
      stats: output of `DatasetStatsFn` for the run's tracks.
      shard_names: dict split -> shard names (or paths) the run wrote.
      counts: dict with the run's tracks_input (distinct tracks plus unusable
        patterns and listing pages, counted before processing), tracks_failed
        (lines of the failures file) and tracks_skipped_existing.
      run_files: (run_id, tracks file name, failures file name) of the run.
      previous: the DatasetDescription the run adds to, or None.
      cumulative: the run is the last of previous's runs, continued (a
        stream's windows): its accounting adds up instead of a new run.

    Returns:
      contract.DatasetDescription: splits describe the union with `previous`,
      `accounting` the run.
    """
    splits, outcomes, label_counts = stats
    run_splits = {
        split: dataclasses.replace(
            splits[split], files=tuple(sorted(posixpath.basename(p) for p in shard_names[split]))
        )
        for split in contract.SPLITS
    }
    run = contract.RunRecord(*run_files, accounting=dataclasses.replace(outcomes, **counts))
    if previous is not None and cumulative and previous.runs[-1].run_id == run.run_id:
        run = dataclasses.replace(run, accounting=previous.accounting.plus(run.accounting))
        return dataclasses.replace(
            previous,
            splits={name: previous.splits[name].plus(run_splits[name]) for name in contract.SPLITS},
            runs=(*previous.runs[:-1], run),
            labels=contract.merge_label_counts(previous.labels, label_counts),
        )
    if previous is not None:
        return previous.with_run(run_splits, run, label_counts)
    return contract.DatasetDescription(
        sample_rate=config.sample_rate,
        quantization_channels=config.quantization_channels,
        window_samples=config.window_samples,
        hop_samples=config.hop_samples,
        decoder=config.decoder,
        resampler=config.resampler,
        silence_threshold_db=config.silence_threshold_db,
        validation_fraction=validation_fraction,
        splits=run_splits,
        runs=(run,),
        labels=label_counts,
    )


def check_same_settings(description, config):
    """Refuses to add to an output whose dataset was made with other settings.

    Raises:
      contract.DatasetMismatchError: naming both values and what to do.
    """
    try:
        contract.check_compatible(
            description,
            "this run",
            sample_rate=config.sample_rate,
            quantization_channels=config.quantization_channels,
            window_samples=config.window_samples,
            hop_samples=config.hop_samples,
        )
    except contract.DatasetMismatchError as e:
        raise contract.DatasetMismatchError(
            f"{e}: use another --output, or --skip_existing=false to start afresh"
        ) from None


class WriteDatasetDescription(beam.PTransform):
    """The commit: writes dataset.json once every shard, the failures and the track index are final.

    A run in which no track succeeded, into an output with no dataset yet,
    commits nothing (the driver reports its failures). Runs inside the
    pipeline, so a job launched from a Flex Template, whose launcher returns
    right after submission, still commits its output. It
    checks that the run still holds the output's lease, merges the run into
    the dataset.json current at that moment (merge=True) or replaces it, writes
    it in one piece and releases the lease (`pipelines.commit`).
    """

    def __init__(self, output_dir, config, validation_fraction, run_id, merge):
        super().__init__()
        self._output_dir = output_dir
        self._config = config
        self._validation_fraction = validation_fraction
        self._run_id = run_id
        self._merge = merge

    def expand(self, inputs):
        def write(stats, train, validation, tracks_input, tracks_failed, tracks_skipped, written_files):
            shard_paths = {contract.TRAIN: train, contract.VALIDATION: validation}
            for split, paths in shard_paths.items():
                if stats[0][split].windows == 0 and paths:
                    # Beam writes one empty shard for an empty PCollection; keep no empty files.
                    FileSystems.delete(paths)
                    shard_paths[split] = []
            counts = {
                "tracks_input": tracks_input,
                "tracks_failed": tracks_failed,
                "tracks_skipped_existing": tracks_skipped,
            }
            output, run_id, config = self._output_dir, self._run_id, self._config
            run_files = (run_id, contract.tracks_file(run_id), contract.failures_file(run_id))
            commit.check_lease(output, run_id)
            committed = commit.current_description(output)
            if committed is None and stats[1].tracks_ok == 0 and tracks_skipped == 0:
                # Nothing succeeded and nothing was committed before: an empty dataset would only mislead.
                commit.release_lease(output, run_id)
                return
            current = committed if self._merge else None
            if current is not None:
                check_same_settings(current, config)
            fraction = self._validation_fraction
            description = describe_run(config, fraction, stats, shard_paths, counts, run_files, current)
            path = contract.write_description(output, description)
            commit.release_lease(output, run_id)
            yield path

        # `stats` holds exactly one element, so this runs once, after every side input is final.
        return inputs["stats"] | "WriteDatasetJson" >> beam.FlatMap(
            write,
            pvalue.AsList(inputs[contract.TRAIN]),
            pvalue.AsList(inputs[contract.VALIDATION]),
            pvalue.AsSingleton(inputs["tracks_input"]),
            pvalue.AsSingleton(inputs["tracks_failed"]),
            pvalue.AsSingleton(inputs["tracks_skipped"]),
            pvalue.AsList(inputs["written_files"]),
        )
