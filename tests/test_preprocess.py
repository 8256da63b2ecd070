"""The whole preprocess pipeline on Beam's DirectRunner, over real clips and broken files."""

import collections
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipelines import audio, commit, contract, preprocess, summary, transforms
from tests.helpers import (
    CLIPS,
    broken_file_contents,
    committed_tracks,
    decoded_duration_secs,
    last_failures,
    read_jsonl,
)

WINDOW_SAMPLES = 8000
HOP_SAMPLES = 6000
QUANTIZATION_CHANNELS = 64


def _parse_shards(paths):
    """Every example of the shards, parsed with TensorFlow (the trainer's reader)."""
    import tensorflow as tf

    features = {
        contract.AUDIO_FEATURE: tf.io.FixedLenFeature([], tf.string),
        contract.TRACK_ID_FEATURE: tf.io.FixedLenFeature([], tf.string),
        contract.OFFSET_FEATURE: tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = []
    for record in tf.data.TFRecordDataset([str(p) for p in paths]):
        example = tf.io.parse_single_example(record, features)
        parsed.append(
            (
                example[contract.TRACK_ID_FEATURE].numpy().decode(),
                int(example[contract.OFFSET_FEATURE]),
                np.frombuffer(example[contract.AUDIO_FEATURE].numpy(), np.uint8),
            )
        )
    return parsed


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, clips_dir, broken_dir, silent_wav, http_server):
    """One pipeline run over every clip, every broken file, silence, a missing glob and a URL."""
    output = tmp_path_factory.mktemp("dataset")
    listing = tmp_path_factory.mktemp("lists") / "inputs.txt"
    listing.write_text(f"\n  {silent_wav}  \n\n{http_server}/Coherence.ogg\n")
    unmatched = str(tmp_path_factory.mktemp("empty") / "*.mp3")
    description = preprocess.run(
        [
            f"--input={clips_dir}",
            f"--input={broken_dir}/*",
            f"--input=@{listing}",
            f"--input={unmatched}",
            f"--output={output}",
            f"--window_samples={WINDOW_SAMPLES}",
            f"--hop_samples={HOP_SAMPLES}",
            f"--quantization_channels={QUANTIZATION_CHANNELS}",
            "--validation_fraction=0.5",
            "--max_failure_fraction=0.9",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_threading",
        ]
    )
    return {
        "output": output,
        "description": description,
        "unmatched": unmatched,
        "http_server": http_server,
        "clips_dir": str(clips_dir),
    }


def test_accounting_holds_and_nothing_is_lost(mixed_run):
    accounting = mixed_run["description"].accounting
    ok_tracks = len(CLIPS) + 2  # The clips, the silent file and the URL.
    failed = len(broken_file_contents()) + 1  # The broken files and the unmatched glob.
    assert accounting.tracks_input == ok_tracks + failed
    assert accounting.tracks_ok == ok_tracks
    assert accounting.tracks_failed == failed
    assert accounting.tracks_ok + accounting.tracks_failed == accounting.tracks_input
    assert accounting.tracks_silent == 1
    assert accounting.windows_silent_dropped > 0


def test_each_broken_input_is_in_the_failures_file_with_its_reason(mixed_run):
    failures = {os.path.basename(r["uri"]): r for r in last_failures(mixed_run["output"])}
    for name, (_, stage, reason) in broken_file_contents().items():
        assert failures[name]["stage"] == stage, name
        assert re.search(reason, failures[name]["error"]), name
    unmatched = failures[os.path.basename(mixed_run["unmatched"])]
    assert unmatched["uri"] == mixed_run["unmatched"] and unmatched["stage"] == "match"
    assert len(failures) == mixed_run["description"].accounting.tracks_failed


def test_windows_parse_back_with_tensorflow_with_length_range_and_offsets(mixed_run):
    description = mixed_run["description"]
    tracks = {t["track_id"]: t for t in committed_tracks(mixed_run["output"])}
    windows_by_track = collections.defaultdict(list)
    for split in contract.SPLITS:
        files = description.splits[split].files
        assert all(f.startswith(f"{split}-") and f.endswith(".tfrecord") for f in files)
        parsed = _parse_shards(mixed_run["output"] / f for f in files)
        assert len(parsed) == description.splits[split].windows
        for track_id, offset, codes in parsed:
            assert tracks[track_id]["split"] == split  # A track never straddles splits.
            assert codes.shape == (WINDOW_SAMPLES,)
            assert codes.max() < QUANTIZATION_CHANNELS
            windows_by_track[track_id].append(offset)
    for track_id, track in tracks.items():
        offsets = sorted(windows_by_track[track_id])
        assert len(offsets) == track["windows"]
        assert all(offset % HOP_SAMPLES == 0 for offset in offsets)
        assert len(set(offsets)) == len(offsets)


def test_seconds_match_the_sources_durations(mixed_run):
    tracks = committed_tracks(mixed_run["output"])
    by_uri = {t["uri"]: t for t in tracks}
    for path in CLIPS.values():
        local = by_uri[os.path.join(mixed_run["clips_dir"], os.path.basename(path))]
        assert local["duration_secs"] == pytest.approx(decoded_duration_secs(path), abs=0.002)
    downloaded = by_uri[f"{mixed_run['http_server']}/Coherence.ogg"]
    assert downloaded["duration_secs"] == pytest.approx(decoded_duration_secs(CLIPS["ogg_48k"]), abs=0.002)
    splits = mixed_run["description"].splits
    total_secs = sum(split.seconds for split in splits.values())
    assert total_secs == pytest.approx(sum(t["duration_secs"] for t in tracks), abs=0.01)
    assert sum(split.tracks for split in splits.values()) == len(tracks)


def test_dataset_json_describes_the_encoding(mixed_run):
    with open(mixed_run["output"] / contract.DATASET_FILE) as f:
        assert json.load(f) == mixed_run["description"].to_dict()  # What run() returns is what it wrote.
    description = contract.read_description(str(mixed_run["output"]))
    assert description.sample_rate == 16000
    assert description.encoding == "mu-law"
    assert description.quantization_channels == QUANTIZATION_CHANNELS
    assert (description.window_samples, description.hop_samples) == (WINDOW_SAMPLES, HOP_SAMPLES)
    listed = {f for split in description.splits.values() for f in split.files}
    on_disk = {f for f in os.listdir(mixed_run["output"]) if f.endswith(".tfrecord")}
    assert listed == on_disk


def test_embedded_default_processes_bundled_clips_into_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    description = preprocess.run([])
    printed = capsys.readouterr().out
    assert dataclasses.asdict(description.accounting) == {
        "tracks_input": 4,
        "tracks_ok": 4,
        "tracks_failed": 0,
        "tracks_excluded": 0,
        "tracks_skipped_existing": 0,
        "tracks_silent": 0,
        "tracks_truncated": 0,
        "windows_silent_dropped": 0,
    }
    windows = sum(split.windows for split in description.splits.values())
    assert windows == 8 + 8 + 7 + 7  # Awakening and Media Threat hold just over 8 s, the others just under.
    # Both splits hold a clip, and the same one wherever the package is installed (ids do not hash its path).
    held_out = [t["uri"] for t in committed_tracks(tmp_path / "output") if t["split"] == contract.VALIDATION]
    assert [os.path.basename(uri) for uri in held_out] == ["Awakening.mp3"]
    assert description.splits[contract.TRAIN].tracks == 3
    assert (tmp_path / "output" / contract.DATASET_FILE).exists()
    assert "Tracks: 4 ok, 0 failed of 4 inputs" in printed
    assert "x real time" in printed and "Output: output/dataset.json" in printed


def test_job_fails_with_reason_when_no_track_succeeds(tmp_path, broken_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            f"--input={broken_dir}/*",
            f"--output={tmp_path}",
            "--direct_num_workers=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    broken = len(broken_file_contents())
    assert f"no track succeeded ({broken} of {broken} inputs failed; reasons above and in" in result.stderr
    # Nothing was committed, and the reasons are on screen: the first five, then how many more.
    assert not (tmp_path / "dataset.json").exists()
    shown = [line for line in result.stderr.splitlines() if line.startswith(f"  {broken_dir}/")]
    assert (
        len(shown) == summary.FAILURES_SHOWN and f"... and {broken - summary.FAILURES_SHOWN} more in" in result.stderr
    )
    (failures_file,) = [name for name in os.listdir(tmp_path) if name.startswith("failures-")]
    assert len(read_jsonl(tmp_path / failures_file)) == broken and os.listdir(tmp_path) == [failures_file]


@pytest.mark.parametrize(
    "ok, failed, limit, message",
    [(1, 3, 0.5, "3 of 4 inputs failed"), (0, 2, 1.0, "no track succeeded")],
    ids=["too-many-failed", "none-succeeded"],
)
def test_failure_thresholds(ok, failed, limit, message):
    with pytest.raises(preprocess.PreprocessError, match=message):
        preprocess.check_description(_described(tracks_ok=ok, tracks_failed=failed, tracks_input=ok + failed), limit)
    preprocess.check_description(_described(tracks_ok=3, tracks_failed=1, tracks_input=4), 0.5)


def _described(**counts):
    """A description of a run with these counts, built as the pipeline builds one."""
    splits, _, labels = transforms.RunStatsFn().create_accumulator()
    no_shards = {split: [] for split in contract.SPLITS}
    run_id = commit.new_run_id()
    run_files = (run_id, contract.tracks_file(run_id), contract.failures_file(run_id))
    stats = (splits, contract.Accounting(**counts), labels)
    return transforms.describe_run(audio.AudioConfig(), 0.1, stats, no_shards, run_files)


def test_lost_inputs_are_reported():
    description = _described(tracks_ok=3, tracks_failed=0, tracks_input=4)
    with pytest.raises(preprocess.PreprocessError, match="accounting does not hold"):
        preprocess.check_description(description, 0.5)


def test_help_explains_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for option in (
        "--input", "--output", "--sample_rate", "--quantization_channels", "--window_samples",
        "--hop_samples", "--validation_fraction", "--decoder", "--resampler",
        "--silence_threshold_db", "--max_failure_fraction", "--num_shards", "--max_download_bytes",
    ):  # fmt: skip
        assert f"  {option} " in result.stdout, option


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_local_runs_show_progress_counting_every_track(tmp_path, capsys, mode):
    inputs = [CLIPS["mp3_22k_mono"], CLIPS["ogg_48k"], CLIPS["flac_44k"], str(tmp_path / "missing.mp3")]
    preprocess.run([f"--output={tmp_path / 'out'}", "--direct_num_workers=2", f"--direct_running_mode={mode}",
                    "--max_failure_fraction=0.5", *(f"--input={path}" for path in inputs)])  # fmt: skip
    # The missing file fails at matching, before processing: three tracks to process, all counted when done.
    assert "Progress: 3/3 tracks" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argument, message",
    [("--inptu=x", "unknown option --inptu (did you mean --input?)"),
     ("--ouput=x", "unknown option --ouput (did you mean --output?)"),
     ("--no_such_thing", "unknown option --no_such_thing")],
    ids=["input", "output", "no-suggestion"],
)  # fmt: skip
def test_mistyped_options_stop_the_job_before_it_starts(tmp_path, monkeypatch, capsys, argument, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        preprocess.run([argument])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("usage: python -m pipelines.preprocess")
    assert err.endswith(f"error: {message}\n")
    assert os.listdir(tmp_path) == []  # Nothing was written, not even to the default ./output.


def test_help_shows_the_command_as_users_type_it():
    result = subprocess.run([sys.executable, "-m", "pipelines.preprocess", "--help"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.stdout.startswith("usage: python -m pipelines.preprocess ")


def test_the_summary_warns_of_an_empty_validation_split_and_shows_the_first_failures():
    description = _described(tracks_ok=7, tracks_failed=7, tracks_input=14)
    train = dataclasses.replace(description.splits[contract.TRAIN], windows=70, tracks=7, seconds=70.0)
    description = dataclasses.replace(description, splits={**description.splits, contract.TRAIN: train})
    failures = [contract.FailureRecord(f"/music/{i}.mp3", "decode", "not a decodable audio file") for i in range(7)]
    text = summary.format_summary(description, "out", 1.0, 70.0, failures)
    assert "Warning: the validation split is empty: 7 track(s) at --validation_fraction 0.1 give 0.7 expected" in text
    assert "pass --validation_fraction 0.21 or more" in text
    assert "  /music/0.mp3: decode: not a decodable audio file" in text and "/music/5.mp3" not in text
    assert "  ... and 2 more in out/failures-" in text
