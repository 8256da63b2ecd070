"""Streaming mode on Beam's DirectRunner, fed by a TestStream of Pub/Sub messages."""

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream as beam_test_stream
from apache_beam.transforms.window import TimestampedValue

from pipelines import cards, commit, contract, streaming, transforms, verify
from pipelines.options import PreprocessOptions, settings
from tests.helpers import CLIPS, read_jsonl

# The subscription a stream reads; the tests feed it with a TestStream instead.
SUBSCRIPTION = "--input_subscription=projects/p/subscriptions/test"


@pytest.mark.parametrize(
    "data, attributes, expected",
    [
        (b"gs://b/a.mp3\n", {}, "gs://b/a.mp3"),
        (b'{"uri": "https://x/a.ogg"}', {}, "https://x/a.ogg"),
        (b'{"bucket": "b", "name": "raw/a.flac"}', {}, "gs://b/raw/a.flac"),
        (b"{}", {"bucketId": "b", "objectId": "raw/a.mp3", "eventType": "OBJECT_FINALIZE"}, "gs://b/raw/a.mp3"),
        (b"{}", {"bucketId": "b", "objectId": "raw/a.mp3", "eventType": "OBJECT_DELETE"}, None),
    ],
    ids=["text", "json-uri", "json-object", "gcs-finalize", "gcs-delete-ignored"],
)
def test_messages_name_tracks(data, attributes, expected):
    assert streaming.track_uri_from_message(data, attributes) == expected


@pytest.mark.parametrize("data", [b"", b"a.mp3\nb.mp3", b"{not json", b'{"size": 3}'])
def test_messages_naming_no_track_are_refused(data):
    with pytest.raises(ValueError):
        streaming.track_uri_from_message(data, {})


@pytest.mark.slow
def test_stream_writes_windows_failures_and_a_description(tmp_path):
    import tensorflow as tf

    output = tmp_path / "out"
    output.mkdir()
    options = PreprocessOptions(
        [f"--output={output}", "--streaming_window_secs=60", "--window_samples=8000", "--validation_fraction=0",
         "--streaming", SUBSCRIPTION]
    )  # fmt: skip

    def message(path, seconds):
        return TimestampedValue(PubsubMessage(path.encode(), {}), seconds)

    stream = (
        beam_test_stream.TestStream()
        .advance_watermark_to(0)
        .add_elements([message(CLIPS["mp3_44k"], 1), message(CLIPS["flac_44k"], 2)])
        .add_elements([TimestampedValue(PubsubMessage(b"", {}), 3)])  # Names no track.
        .advance_watermark_to(61)
        .add_elements([message(CLIPS["mp3_44k"], 62), message(CLIPS["wav_44k"], 63)])  # A duplicate and a new one.
        .add_elements(
            [
                TimestampedValue(
                    PubsubMessage(b"{}", {"bucketId": "b", "objectId": "x", "eventType": "OBJECT_DELETE"}), 64
                )
            ]
        )  # fmt: skip
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as pipeline:
        streaming.build_streaming_pipeline(pipeline | stream, settings(options))

    description = contract.read_description(str(output))
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (5, 3, 1)
    assert accounting.tracks_skipped_existing == 1
    train = description.splits["train"]
    assert train.tracks == 3 and len(train.files) == 2  # One shard per window.
    records = list(tf.data.TFRecordDataset([str(output / f) for f in train.files]))
    assert len(records) == train.windows == 16 + 6 + 4  # 8 s, 3 s and 2 s of audio in 0.5 s windows.
    example = tf.io.parse_single_example(records[0], {"audio": tf.io.FixedLenFeature([], tf.string)})
    assert len(np.frombuffer(example["audio"].numpy(), np.uint8)) == 8000
    failure_files = [f for f in os.listdir(output) if f.startswith("failures")]
    failures = [record for name in failure_files for record in read_jsonl(output / name)]
    assert [f["stage"] for f in failures] == ["message"]
    track_files = [f for f in os.listdir(output) if f.startswith("tracks")]
    (run,) = description.runs
    assert len(track_files) == 2 and run.tracks_file == f"tracks-{run.run_id}-*.jsonl"
    # Every file and staging directory the stream wrote is named for its run; none is a leftover.
    names = sorted(os.listdir(output))
    committed = {contract.DATASET_FILE, contract.ATTRIBUTION_FILE, cards.CARD_FILE}  # Of the output, not of a run.
    owners = {contract.run_file_owner(n) or contract.run_temp_directory_owner(n) for n in names if n not in committed}
    assert owners == {run.run_id}, names
    assert verify.check(str(output)).leftovers == []
    assert verify.check(str(output)).stale == []  # The cards, built window by window, describe the whole stream.
    # A bundle retried after its window committed (a worker lost at that moment) commits nothing twice.
    before = (output / contract.DATASET_FILE).read_bytes()
    stats = transforms.RunStatsFn()
    track = next(t for t in commit.committed_tracks(str(output), description) if t.uri.endswith(".wav"))
    accumulator = stats.add_input(stats.create_accumulator(), (transforms.TRACK, track))
    window = [("stats", accumulator), ("file", ("train", train.files[-1]))]
    merge = streaming.MergeDescriptionFn(str(output), settings(options).audio, 0.0, run.run_id)
    assert list(merge.process((None, window))) == []
    assert (output / contract.DATASET_FILE).read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--streaming"], "needs --input_subscription"),
        (["--streaming", "--input_subscription=projects/p/subscriptions/s", "--input=a.mp3"], "only"),
        (["--streaming", "--input_subscription=projects/p/subscriptions/s", "--streaming_window_secs=0"], "positive"),
    ],
    ids=["no-subscription", "with-input", "bad-window"],
)
def test_streaming_options_are_checked_before_submitting(args, message, tmp_path):
    from pipelines import preprocess

    with pytest.raises(ValueError, match=message):
        preprocess.run([*args, f"--output={tmp_path}"])


def test_a_stream_committed_before_run_ids_were_in_its_file_names_still_reads_and_keeps_its_files(tmp_path):
    """Streams committed before 2026-12-03 named their files without the run id and their index `tracks-*.jsonl`."""
    import json

    from pipelines import audio, compat, examples, preprocess, transforms

    output = tmp_path / "out"
    output.mkdir()
    window = "1970-01-01T00:00:00-1970-01-01T00:01:00-00000-of-00001"
    shard, tracks_file = f"train-{window}.tfrecord", f"tracks-{window}.jsonl"
    codes = bytes(range(256)) * 16  # 4,096 codes: a window of 4,096 samples.
    with open(output / shard, "wb") as f:
        for offset in (0, 4096):
            compat.write_tfrecord(f, examples.ExampleEncoder().encode([examples.Window("00ab", offset, codes)])[0])
    track = {"track_id": "00ab", "uri": "gs://b/old.mp3", "split": "train", "windows": 2, "duration_secs": 1.0,
             "windows_silent_dropped": 0, "decode_error": None, "labels": {}}  # fmt: skip
    (output / tracks_file).write_text(json.dumps(track) + "\n")
    (output / f"failures-{window}.jsonl").write_text("")
    stats = transforms.RunStatsFn()
    accumulator = stats.add_input(stats.create_accumulator(), (transforms.TRACK, contract.TrackRecord.from_dict(track)))
    accumulator = stats.add_input(accumulator, (transforms.SELECTED, None))
    audio_config = audio.AudioConfig(sample_rate=8000, window_samples=4096, hop_samples=4096)
    old_run = ("20261101T000000Z-0000abcd", "tracks-*.jsonl", "failures-*.jsonl")
    description = transforms.describe_run(audio_config, 0.0, accumulator, {"train": [shard], "validation": []}, old_run)
    contract.write_description(str(output), description)

    report = verify.check(str(output))
    assert report.problems == [] and report.leftovers == [] and report.windows == 2 and report.tracks == 1
    # A batch run adds beside it: the old files stay committed, and the stream's track is in the skip set.
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--sample_rate=8000",
                    "--window_samples=4096", "--validation_fraction=0", "--direct_num_workers=1",
                    "--direct_running_mode=in_memory"])  # fmt: skip
    assert (output / shard).exists() and (output / tracks_file).exists()
    after = contract.read_description(str(output))
    assert after.runs[0].tracks_file == "tracks-*.jsonl" and after.splits["train"].tracks == 2
    assert verify.check(str(output)).problems == []


# ---------------------------------------------------------------------------------------------------------------
# A stream adds to the dataset it finds, beside batch runs and earlier streams: no committed track ever leaves.

SETTINGS = ["--sample_rate=8000", "--window_samples=4000", "--validation_fraction=0.5"]


def _stream(output, paths, extra=SETTINGS):
    """A stream over Pub/Sub messages naming `paths` (one window), run to its end as a drained job is."""
    options = PreprocessOptions([f"--output={output}", "--streaming_window_secs=60", "--streaming", SUBSCRIPTION,
                                 *extra])  # fmt: skip
    stream = (
        beam_test_stream.TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(PubsubMessage(path.encode(), {}), 1 + i) for i, path in enumerate(paths)])
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as pipeline:
        streaming.build_streaming_pipeline(pipeline | stream, settings(options))
    return contract.read_description(str(output))


def _batch(output, *paths):
    from pipelines import preprocess

    return preprocess.run([f"--output={output}", *(f"--input={p}" for p in paths), *SETTINGS,
                           "--direct_num_workers=1", "--direct_running_mode=in_memory"])  # fmt: skip


def _committed_uris(output):
    return sorted(t.uri for t in commit.committed_tracks(str(output), contract.read_description(str(output))))


def _assert_sound(output):
    report = verify.check(str(output))
    assert report.problems == [] and report.leftovers == [], report
    # The cards, added to window by window and run by run, list exactly the committed tracks.
    assert report.stale == [], report
    committed = {t.track_id for t in commit.committed_tracks(str(output), contract.read_description(str(output)))}
    assert sorted(row.track_id for row in contract.read_attribution(str(output))) == sorted(committed)


@pytest.mark.slow
def test_streams_and_batch_runs_add_to_one_output_and_no_committed_track_leaves(tmp_path):
    output = tmp_path / "out"
    clips = [CLIPS[name] for name in ("mp3_44k", "ogg_48k", "mp3_22k_mono", "wav_44k")]
    _batch(output, clips[0])
    first = _stream(output, [clips[1]])  # A batch run, then a stream.
    assert len(first.runs) == 2 and first.tracks == 2
    _assert_sound(output)
    # Restarted (a drain and relaunch): a new run beside, the committed track skipped, a new one added.
    second = _stream(output, [clips[1], clips[2]])
    assert len(second.runs) == 3 and second.tracks == 3
    assert second.runs[-1].accounting.tracks_skipped_existing == 1 and second.runs[-1].accounting.tracks_ok == 1
    third = _stream(output, [clips[3]])  # Restarted again.
    assert len(third.runs) == 4 and third.tracks == 4
    _assert_sound(output)
    # A later batch run cleans up before it starts: every committed track, and every stream's file, stays.
    names_before = set(os.listdir(output))
    after = _batch(output, clips[0], CLIPS["flac_44k"])
    assert after.tracks == 5 and len(after.runs) == 5
    assert names_before - {"lease.json"} <= set(os.listdir(output))
    assert _committed_uris(output) == sorted(os.path.realpath(c) for c in [*clips, CLIPS["flac_44k"]])
    _assert_sound(output)
    # verify --clean after them all removes a dead run's shard and nothing of the streams or batch runs.
    dead = commit.new_run_id()
    (output / f"train-{dead}-00000-of-00001.tfrecord").write_bytes(b"partial")
    kept = set(os.listdir(output))
    assert verify.main([str(output), "--clean"]) == 0
    assert set(os.listdir(output)) == kept - {f"train-{dead}-00000-of-00001.tfrecord"}
    assert _committed_uris(output) == sorted(os.path.realpath(c) for c in [*clips, CLIPS["flac_44k"]])


@pytest.mark.slow
def test_a_batch_run_adds_to_a_stream(tmp_path):
    output = tmp_path / "out"
    stream = _stream(output, [CLIPS["mp3_44k"]])
    assert len(stream.runs) == 1 and stream.tracks == 1
    after = _batch(output, CLIPS["ogg_48k"], CLIPS["mp3_44k"])
    assert after.tracks == 2 and after.runs[0].run_id == stream.runs[0].run_id
    assert after.runs[-1].accounting.tracks_skipped_existing == 1
    assert _committed_uris(output) == sorted(os.path.realpath(CLIPS[n]) for n in ("mp3_44k", "ogg_48k"))
    _assert_sound(output)


def test_a_stream_on_an_output_of_other_settings_is_refused_and_changes_nothing(tmp_path):
    output = tmp_path / "out"
    _batch(output, CLIPS["mp3_22k_mono"])
    before = (output / contract.DATASET_FILE).read_bytes()
    with pytest.raises(contract.DatasetMismatchError, match="sample_rate"):
        _stream(output, [CLIPS["ogg_48k"]], ["--sample_rate=16000", "--window_samples=4000"])
    assert (output / contract.DATASET_FILE).read_bytes() == before
