"""Streaming mode of the preprocess pipeline: tracks processed as they arrive on Pub/Sub.

    python -m pipelines.preprocess --streaming --input_subscription projects/P/subscriptions/S \\
        --output gs://BUCKET/windows [--streaming_window_secs 60]

Each message names one track: a Cloud Storage notification (OBJECT_FINALIZE:
gs://bucket/object), or a path or URL in its body (plain text, or JSON with
"uri"). A stream adds to the dataset it finds, as a batch run does: at start it
checks the committed dataset.json (refusing other settings) and registers its
run there (`start_stream`); tracks already committed, or seen before in the
stream (keyed state), are skipped; the rest are processed exactly as in batch
mode (`transforms.ProcessTracks`) and written every --streaming_window_secs:
TFRecord shards, failures and track index files per window, each window then
committed into the dataset.json current at that moment (`commit.commit`, the
one commit, under the commit lock), never replacing it.
"""

import json
import posixpath
import uuid

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import BooleanCoder
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.options.value_provider import StaticValueProvider
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipelines import commit, compat, contract, transforms

MESSAGES_IGNORED = "messages_ignored"
_KEY = "dataset"


def track_uri_from_message(data, attributes):
    """The track URI a Pub/Sub message names, or None for a notification to ignore.

    Args:
      data: message body, bytes.
      attributes: dict of message attributes.

    Returns:
      str URI, or None for Cloud Storage events other than OBJECT_FINALIZE.

    Raises:
      ValueError: when the message names no track.
    """
    attributes = attributes or {}
    if "bucketId" in attributes and "objectId" in attributes:
        if attributes.get("eventType", "OBJECT_FINALIZE") != "OBJECT_FINALIZE":
            return None
        return f"gs://{attributes['bucketId']}/{attributes['objectId']}"
    text = (data or b"").decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"message body is not valid JSON: {e}") from e
        if body.get("uri") or body.get("url"):
            return body.get("uri") or body.get("url")
        if body.get("bucket") and body.get("name"):
            return f"gs://{body['bucket']}/{body['name']}"
        raise ValueError("JSON message names no track (expected uri, url, or bucket and name)")
    if not text or "\n" in text:
        raise ValueError("message body must be one path or URL")
    return text


class ParseMessagesFn(beam.DoFn):
    """PubsubMessage -> track source record, or a failure record (FAILED)."""

    def __init__(self):
        self._ignored = Metrics.counter(transforms.NAMESPACE, MESSAGES_IGNORED)

    def process(self, message):
        data, attributes = getattr(message, "data", message), getattr(message, "attributes", {})
        try:
            uri = track_uri_from_message(data, attributes)
        except ValueError as e:
            failure = contract.TrackError(contract.STAGE_MESSAGE, str(e))
            yield pvalue.TaggedOutput(transforms.FAILED, contract.FailureRecord.of(repr(data[:200]), failure))
            return
        if uri is None:
            self._ignored.inc()
            return
        yield transforms.source_record(uri)


class FirstSeenFn(beam.DoFn):
    """(track_id, source), {track_id: True} committed when the stream started (a side input) -> the source the
    first time its track_id is seen in the stream; SKIPPED when seen before, or committed."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())

    def __init__(self):
        self._skipped = Metrics.counter(transforms.NAMESPACE, transforms.TRACKS_SKIPPED_EXISTING)

    def process(self, keyed, committed_ids, seen=beam.DoFn.StateParam(SEEN)):  # noqa: B008 (Beam's state idiom)
        track_id, source = keyed
        if seen.read() or track_id in committed_ids:
            self._skipped.inc()
            yield pvalue.TaggedOutput(transforms.SKIPPED, track_id)
            return
        seen.write(True)
        yield source


class TFRecordSink(fileio.FileSink):
    """A fileio sink writing serialized examples as TFRecords (Beam's own record framing)."""

    def open(self, fh):
        self._fh = fh

    def write(self, record):
        compat.write_tfrecord(self._fh, record)

    def flush(self):
        self._fh.flush()


class WriteWindowed(beam.PTransform):
    """Elements of each window -> files `<prefix>-<window start>-<window end>-SSSSS-of-NNNNN<suffix>`.

    Staged in `beam-temp-<prefix>-<uuid hex>` in the output, the shape
    `contract.run_temp_directory_owner` knows, so a dead stream's staging is a
    leftover the next run removes. Returns the FileResults.
    """

    def __init__(self, output, prefix, suffix, sink):
        super().__init__()
        self._output, self._prefix, self._suffix, self._sink = output, prefix, suffix, sink

    def expand(self, pcoll):
        return pcoll | fileio.WriteToFiles(
            path=self._output,
            file_naming=fileio.default_file_naming(self._prefix, self._suffix),
            temp_directory=StaticValueProvider(
                str, contract.join(self._output, f"beam-temp-{self._prefix}-{uuid.uuid4().hex}")
            ),
            sink=lambda _: self._sink(),
            shards=1,
        )


def stream_run_files(run_id):
    """(run id, tracks file glob, failures file glob) of a stream: one run continued window after window."""
    return (
        run_id,
        contract.stream_files_glob(contract.TRACKS_PREFIX, run_id),
        contract.stream_files_glob(contract.FAILURES_PREFIX, run_id),
    )


def start_stream(output, audio_config, validation_fraction, run_id, command=()):
    """Adds a stream to the output before it reads a message: checked against what is committed, then registered.

    The stream's run is committed at once, with nothing in it yet (`commit.commit`,
    under the commit lock), so its files carry a committed run's id from the start
    and no batch run's cleanup takes them for leftovers; each window then adds to
    this run. A restarted stream is a new run beside the earlier ones.

    Returns:
      the DatasetDescription committed before the stream registered (None for a new output): its
      tracks are the ones the stream skips.

    Raises:
      contract.DatasetMismatchError: the output holds a dataset of other settings (one line).
      contract.ContractError: its dataset.json cannot be read.
    """
    empty = transforms.RunStatsFn().create_accumulator()
    no_shards = {split: [] for split in contract.SPLITS}
    before = []

    def register(current):
        if current is not None:
            transforms.check_same_settings(current, audio_config)
        before.append(current)
        files = stream_run_files(run_id)
        return transforms.describe_run(
            audio_config, validation_fraction, empty, no_shards, files, current, command=command
        )

    commit.commit(output, run_id, register)
    return before[-1]


class MergeDescriptionFn(beam.DoFn):
    """Commits each window: its part merged into the dataset.json current then (`commit.commit`), never replacing it.

    Batch runs commit into the same output; the commit lock orders the two, and
    each commit re-reads what the other wrote.
    """

    def __init__(self, output, audio_config, validation_fraction, run_id, command=()):
        self._output = output
        self._audio_config = audio_config
        self._validation_fraction = validation_fraction
        self._run_id = run_id
        self._command = tuple(command)

    def process(self, keyed):
        _, parts = keyed
        stats_fn = transforms.RunStatsFn()
        stats = stats_fn.create_accumulator()
        shard_names = {split: [] for split in contract.SPLITS}
        track_indexes = []
        for kind, value in parts:
            if kind == "stats":
                stats = stats_fn.merge_accumulators([stats, value])
            elif kind == "file":
                shard_names[value[0]].append(value[1])
            elif value.startswith(contract.TRACKS_PREFIX):  # "written": final; the window's tracks, for the cards.
                track_indexes.append(contract.join(self._output, value))
        window_shards = {name for names in shard_names.values() for name in names}

        def add_window(current):
            committed_shards = {name for split in (current.splits.values() if current else ()) for name in split.files}
            if window_shards and window_shards <= committed_shards:
                return None  # A retried bundle: this window is committed already; counting it twice would lie.
            return transforms.describe_run(
                self._audio_config, self._validation_fraction, stats, shard_names, stream_run_files(self._run_id),
                current, continued=True, command=self._command,
            )  # fmt: skip

        committed = commit.commit(self._output, self._run_id, add_window, track_indexes)
        if committed is not None:
            yield committed


def build_streaming_pipeline(messages, settings):
    """Adds the streaming steps after a PCollection of Pub/Sub messages.

    Args:
      messages: PCollection of PubsubMessage (or bytes bodies), timestamped.
      settings: the job's `settings.Settings` (streaming).

    Returns:
      PCollection of dataset.json contents (dict), one per window written.
    """
    audio_config, output, command = settings.audio, settings.output, settings.command
    validation_fraction = settings.validation_fraction
    run_id = commit.new_run_id()
    before = start_stream(output, audio_config, validation_fraction, run_id, command)
    committed_ids = messages.pipeline | "CommittedTrackIds" >> transforms.CommittedTrackIds(
        commit.committed_track_indexes(output, before)
    )
    parsed = messages | "ParseMessages" >> beam.ParDo(ParseMessagesFn()).with_outputs(transforms.FAILED, main="sources")
    first_seen = (
        parsed.sources
        | "KeyByTrackId" >> beam.Map(lambda source: (source["track_id"], source))
        | "FirstSeen"
        >> beam.ParDo(FirstSeenFn(), pvalue.AsDict(committed_ids)).with_outputs(transforms.SKIPPED, main="sources")
    )
    fixed = beam_window.FixedWindows(settings.streaming_window_secs)
    sources = first_seen.sources | "WindowSources" >> beam.WindowInto(fixed)
    processed = sources | "ProcessTracks" >> transforms.ProcessTracks(
        audio_config, validation_fraction, settings.fetch, settings.labels, settings.licences
    )

    message_failures = parsed[transforms.FAILED] | "WindowMessageFailures" >> beam.WindowInto(fixed)
    failures = (message_failures, processed[transforms.FAILED]) | "FlattenFailures" >> beam.Flatten()
    skipped = first_seen[transforms.SKIPPED] | "WindowSkipped" >> beam.WindowInto(fixed)
    tracks = processed[transforms.TRACKS]

    parts = []
    for split in contract.SPLITS:
        name = split.capitalize()
        written = (
            processed[split]
            | f"Encode{name}" >> transforms.EncodeExamples(min_batch_size=1)
            | f"Write{name}"
            >> WriteWindowed(output, contract.shard_prefix(split, run_id), contract.TFRECORD_SUFFIX, TFRecordSink)
        )
        parts.append(
            written
            | f"Files{name}" >> beam.Map(lambda r, split=split: ("file", (split, posixpath.basename(r.file_name))))
        )
    for label, kind, pcoll in (
        ("Failures", contract.FAILURES_PREFIX, failures),
        ("Tracks", contract.TRACKS_PREFIX, tracks),
    ):
        written = (
            pcoll
            | f"Json{label}" >> beam.Map(lambda record: record.to_json())
            | f"Write{label}"
            >> WriteWindowed(output, contract.stream_prefix(kind, run_id), contract.JSONL_SUFFIX, fileio.TextSink)
        )
        # The window commits once these files are final too.
        parts.append(written | f"Written{label}" >> beam.Map(lambda r: ("written", posixpath.basename(r.file_name))))
    stats = {
        transforms.TRACK: tracks,
        transforms.FAILURE: failures,
        transforms.SELECTED: sources,
        transforms.SKIPPED_TRACK: skipped,
        transforms.UNUSABLE: message_failures,
    } | "WindowStats" >> transforms.RunStats(windowed=True)
    parts.append(stats | "TagStats" >> beam.Map(lambda stats: ("stats", stats)))
    return (
        parts
        | "FlattenParts" >> beam.Flatten()
        | "KeyParts" >> beam.Map(lambda part: (_KEY, part))
        | "GroupWindowParts" >> beam.GroupByKey()
        | "GlobalWindow" >> beam.WindowInto(beam_window.GlobalWindows())
        | "MergeDescription"
        >> beam.ParDo(MergeDescriptionFn(output, audio_config, validation_fraction, run_id, command))
    )
