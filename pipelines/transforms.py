"""Beam transforms of the preprocess pipeline.

DoFns here only wire the pure functions of `pipelines.audio`,
`pipelines.sources` and `pipelines.examples` together, count their work with
Beam metrics and route failures to a tagged output; no audio logic lives here.
"""

import json
import logging
import posixpath
import time

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import audio, contract, examples, sources

_LOGGER = logging.getLogger(__name__)

NAMESPACE = "preprocess"
# Counter names, read back by the driver.
PATTERNS_UNMATCHED = "patterns_unmatched"
TRACKS_INPUT = "tracks_input"
TRACKS_OK = "tracks_ok"
TRACKS_FAILED = "tracks_failed"
TRACKS_SILENT = "tracks_silent"
TRACKS_TRUNCATED = "tracks_truncated"
BYTES_READ = "bytes_read"
SAMPLES_OUT = "samples_out"
WINDOWS_KEPT = "windows_kept"
WINDOWS_SILENT = "windows_silent"
EXAMPLES_ENCODED = "examples_encoded"

# Tagged outputs.
FAILED = "failed"
TRACKS = "tracks"


def failure_record(uri, error):
    """One line of failures.jsonl: the input, the stage that failed and why."""
    return {"uri": uri, "stage": getattr(error, "stage", "unknown"), "error": str(error)}


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
        except audio.TrackError as e:
            self._unmatched.inc()
            yield pvalue.TaggedOutput(FAILED, failure_record(pattern, e))


class ExpandInputs(beam.PTransform):
    """Input patterns -> distinct track URIs, spread across workers.

    Returns a DoOutputsTuple: the URIs as the main output and failure records
    under FAILED.
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
        uris = (
            matched.uris
            | "DistinctUris" >> beam.Distinct()
            # Matching yields every URI of a glob in one bundle; this spreads them.
            | "Reshuffle" >> beam.Reshuffle()
        )
        return uris, matched[FAILED]


class ProcessTrackFn(beam.DoFn):
    """Track URI -> windows (main output), a track record (TRACKS) or a failure (FAILED).

    Streams the track through decode, downmix, resample, mu-law and
    windowing (`audio.Track`), so memory stays bounded by a block of audio.
    """

    def __init__(self, config, validation_fraction, max_download_bytes):
        self._config = config
        self._validation_fraction = validation_fraction
        self._max_download_bytes = max_download_bytes
        self._counters = {
            name: Metrics.counter(NAMESPACE, name)
            for name in (
                TRACKS_INPUT, TRACKS_OK, TRACKS_FAILED, TRACKS_SILENT, TRACKS_TRUNCATED,
                BYTES_READ, SAMPLES_OUT, WINDOWS_KEPT, WINDOWS_SILENT,
            )
        }  # fmt: skip

    def process(self, uri):
        self._counters[TRACKS_INPUT].inc()
        track_id = sources.track_id_for(uri)
        started = time.monotonic()
        windows = 0
        try:
            with sources.open_uri(uri, self._max_download_bytes) as fileobj:
                track = audio.Track(fileobj, self._config)
                for offset, codes in track:
                    windows += 1
                    yield examples.Window(track_id, offset, codes.tobytes())
                self._counters[BYTES_READ].inc(fileobj.tell())
        except Exception as e:
            if windows:
                raise  # A bug after output was emitted: let the runner retry or fail loudly.
            if not isinstance(e, audio.TrackError):
                e = audio.TrackError(audio.STAGE_PROCESS, f"{type(e).__name__}: {e}")
            self._counters[TRACKS_FAILED].inc()
            yield pvalue.TaggedOutput(FAILED, failure_record(uri, e))
            return
        stats = track.stats
        _LOGGER.info(
            "Processed %s: %.1f s of audio, %d windows in %.2f s",
            uri,
            stats.samples / self._config.sample_rate,
            stats.windows,
            time.monotonic() - started,
        )
        self._counters[TRACKS_OK].inc()
        self._counters[SAMPLES_OUT].inc(stats.samples)
        self._counters[WINDOWS_KEPT].inc(stats.windows)
        self._counters[WINDOWS_SILENT].inc(stats.silent_windows)
        if stats.windows == 0:
            self._counters[TRACKS_SILENT].inc()
        if stats.decode_error:
            self._counters[TRACKS_TRUNCATED].inc()
        yield pvalue.TaggedOutput(
            TRACKS,
            {
                "track_id": track_id,
                "uri": uri,
                "split": split_for(track_id, self._validation_fraction),
                "duration_secs": stats.samples / self._config.sample_rate,
                "windows": stats.windows,
                "silent_windows": stats.silent_windows,
                "source_sample_rate": stats.source_sample_rate,
                "source_channels": stats.source_channels,
                "decode_error": stats.decode_error,
            },
        )


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


class WriteSplit(beam.PTransform):
    """Windows of one split -> TFRecord shards `<split>-SSSSS-of-NNNNN.tfrecord`.

    Returns the PCollection of the shard paths written.
    """

    def __init__(self, output_dir, split, num_shards):
        super().__init__()
        self._prefix = FileSystems.join(output_dir, split)
        self._num_shards = num_shards

    def expand(self, windows):
        return (
            windows
            # One Arrow batch per call: ~10 us a window instead of ~135 us.
            | "BatchWindows" >> beam.BatchElements(min_batch_size=16, max_batch_size=64)
            | "EncodeExamples" >> beam.ParDo(EncodeExamplesFn())
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
    """Track records -> per-split and overall counts for dataset.json."""

    def create_accumulator(self):
        return {
            "splits": {split: {"tracks": 0, "windows": 0, "seconds": 0.0} for split in contract.SPLITS},
            "tracks_ok": 0,
            "tracks_silent": 0,
            "tracks_truncated": 0,
            "windows_silent": 0,
        }

    def add_input(self, accumulator, track):
        split = accumulator["splits"][track["split"]]
        split["tracks"] += 1
        split["windows"] += track["windows"]
        split["seconds"] += track["duration_secs"]
        accumulator["tracks_ok"] += 1
        accumulator["tracks_silent"] += int(track["windows"] == 0)
        accumulator["tracks_truncated"] += int(bool(track["decode_error"]))
        accumulator["windows_silent"] += track["silent_windows"]
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for split in contract.SPLITS:
                for key in ("tracks", "windows", "seconds"):
                    merged["splits"][split][key] += accumulator["splits"][split][key]
            for key in ("tracks_ok", "tracks_silent", "tracks_truncated", "windows_silent"):
                merged[key] += accumulator[key]
        return merged

    def extract_output(self, accumulator):
        return accumulator


def describe_dataset(config, validation_fraction, stats, shard_paths, tracks_input, tracks_failed):
    """The content of dataset.json.

    Args:
      config: `audio.AudioConfig` the dataset was made with.
      validation_fraction: share of tracks assigned to validation.
      stats: output of `DatasetStatsFn`.
      shard_paths: dict split -> list of shard paths written.
      tracks_input: inputs counted before processing (distinct URIs plus
        patterns that matched nothing).
      tracks_failed: lines in failures.jsonl.

    Returns:
      JSON-serializable dict.
    """
    splits = {}
    for split in contract.SPLITS:
        counts = stats["splits"][split]
        splits[split] = {
            "files": sorted(posixpath.basename(p) for p in shard_paths[split]),
            "windows": counts["windows"],
            "tracks": counts["tracks"],
            "seconds": round(counts["seconds"], 3),
        }
    return {
        "format_version": contract.DATASET_FORMAT_VERSION,
        "sample_rate": config.sample_rate,
        "encoding": contract.ENCODING,
        "quantization_channels": config.quantization_channels,
        "window_samples": config.window_samples,
        "hop_samples": config.hop_samples,
        "features": {
            contract.AUDIO_FEATURE: "bytes: window_samples uint8 mu-law codes",
            contract.TRACK_ID_FEATURE: "bytes: stable hash of the source URI",
            contract.OFFSET_FEATURE: "int64: window start in samples at sample_rate",
        },
        "decoder": config.decoder,
        "resampler": config.resampler,
        "silence_threshold_db": config.silence_threshold_db,
        "validation_fraction": validation_fraction,
        "splits": splits,
        "accounting": {
            "tracks_input": tracks_input,
            "tracks_ok": stats["tracks_ok"],
            "tracks_failed": tracks_failed,
            "tracks_silent": stats["tracks_silent"],
            "tracks_truncated": stats["tracks_truncated"],
            "windows_silent_dropped": stats["windows_silent"],
        },
        "failures_file": contract.FAILURES_FILE,
        "tracks_file": contract.TRACKS_FILE,
    }


class WriteDatasetDescription(beam.PTransform):
    """Writes dataset.json once every shard, the failures and the track index are final.

    Runs inside the pipeline, so a job launched from a Flex Template, whose
    launcher returns right after submission, still describes its output.
    """

    def __init__(self, output_dir, config, validation_fraction):
        super().__init__()
        self._output_dir = output_dir
        self._config = config
        self._validation_fraction = validation_fraction

    def expand(self, inputs):
        def write(stats, train, validation, tracks_input, tracks_failed, written_files):
            description = describe_dataset(
                self._config,
                self._validation_fraction,
                stats,
                {contract.TRAIN: train, contract.VALIDATION: validation},
                tracks_input,
                tracks_failed,
            )
            path = FileSystems.join(self._output_dir, contract.DATASET_FILE)
            with FileSystems.create(path, mime_type="application/json") as f:
                f.write(json.dumps(description, indent=2, sort_keys=True).encode("utf-8"))
            yield path

        # `stats` holds exactly one element, so this runs once, after every side input is final.
        return inputs["stats"] | "WriteDatasetJson" >> beam.FlatMap(
            write,
            pvalue.AsList(inputs[contract.TRAIN]),
            pvalue.AsList(inputs[contract.VALIDATION]),
            pvalue.AsSingleton(inputs["tracks_input"]),
            pvalue.AsSingleton(inputs["tracks_failed"]),
            pvalue.AsList(inputs["written_files"]),
        )
