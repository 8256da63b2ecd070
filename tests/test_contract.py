import json

import numpy as np
import pytest

from pipelines import contract


def _compand(x, mu):
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def _expand(y, mu):
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


@pytest.mark.parametrize("quantization_channels", [256, 64, 2], ids=["q256", "q64", "q2"])
def test_mu_law_round_trip_within_quantization_error(quantization_channels):
    mu = quantization_channels - 1
    x = np.concatenate([np.linspace(-1, 1, 20001), np.random.default_rng(0).uniform(-1, 1, 20000)])
    decoded = contract.mu_law_decode(contract.mu_law_encode(x, quantization_channels), quantization_channels)
    # Quantization moves the companded value by at most half a step (1/mu);
    # the error is largest on the outer side, where the expansion is steepest.
    bound = _expand(np.minimum(1.0, np.abs(_compand(x, mu)) + 1.0 / mu), mu) - np.abs(x)
    assert np.all(np.abs(decoded - x) <= bound + 1e-5)


def test_mu_law_codes_use_every_level_and_are_a_fixed_point():
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(contract.mu_law_encode(contract.mu_law_decode(codes)), codes)
    encoded = contract.mu_law_encode(np.linspace(-1, 1, 100000))
    assert encoded.dtype == np.uint8
    assert encoded.min() == 0 and encoded.max() == 255
    assert contract.mu_law_encode(np.zeros(1))[0] in (127, 128)


def test_mu_law_clips_out_of_range_input():
    assert contract.mu_law_encode(np.array([-3.0, 3.0])).tolist() == [0, 255]


@pytest.mark.parametrize("quantization_channels", [256, 255, 16, 3, 2])
def test_mu_law_encode_equals_the_formula_for_every_input_near_a_threshold(quantization_channels):
    # The fast encoder can only differ from the formula where the formula's code changes: check the
    # 400 float32 values on each side of every decision threshold, and random, tiny and special values.
    thresholds = contract.mu_law_thresholds(quantization_channels)
    inner = thresholds[1:-1]
    assert np.all(np.diff(inner) > 0) and inner[0] > -1 and inner[-1] <= 1
    steps = np.arange(-400, 401)
    near = np.concatenate([_ulps_around(t, steps) for t in inner])
    rng = np.random.default_rng(quantization_channels)
    random = np.concatenate([
        rng.uniform(-1.5, 1.5, 300_000), rng.uniform(-1e-5, 1e-5, 100_000),
        [0.0, -0.0, -1.0, 1.0, np.nan, np.inf, -np.inf, np.finfo(np.float32).tiny],
    ]).astype(np.float32)  # fmt: skip
    for x in (near, random):
        assert np.array_equal(
            contract.mu_law_encode(x, quantization_channels), contract.mu_law_encode_reference(x, quantization_channels)
        )
    # Each threshold is where the code steps up: the float32 just below it has the code below.
    below = np.nextafter(inner, np.float32(-np.inf), dtype=np.float32)
    levels = np.arange(1, quantization_channels)
    assert np.array_equal(contract.mu_law_encode_reference(inner, quantization_channels), levels)
    assert np.array_equal(contract.mu_law_encode_reference(below, quantization_channels), levels - 1)


def _ulps_around(value, steps):
    """float32 values `steps` ulps away from `value` (steps: int array), within [-1, 1]."""
    bits = np.float32(value).view(np.int32).astype(np.int64)
    ordered = bits if bits >= 0 else -(bits & 0x7FFFFFFF)
    keys = ordered + steps
    raw = np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32).view(np.float32)
    return raw[np.abs(raw) <= 1]


def test_mu_law_rejects_more_levels_than_uint8_holds():
    with pytest.raises(ValueError, match="quantization_channels must be in 2..256"):
        contract.mu_law_encode(np.zeros(4), quantization_channels=512)


RUN = contract.RunRecord("r1", "tracks-r1.jsonl", "failures-r1.jsonl", contract.Accounting(tracks_input=1, tracks_ok=1))


def _description(**overrides):
    splits = {contract.TRAIN: contract.SplitSummary(files=("train-a-00000-of-00001.tfrecord",), windows=5, tracks=1,
                                                    seconds=5.0004),
              contract.VALIDATION: contract.SplitSummary()}  # fmt: skip
    values = dict(sample_rate=16000, quantization_channels=256, window_samples=16000, hop_samples=16000,
                  decoder="pyav", resampler="soxr_hq", silence_threshold_db=-60.0, validation_fraction=0.1,
                  splits=splits, runs=(RUN,))  # fmt: skip
    return contract.DatasetDescription(**{**values, **overrides})


def test_dataset_description_round_trips_through_dataset_json(tmp_path):
    description = _description()
    contract.write_description(str(tmp_path), description)
    read = contract.read_description(str(tmp_path))
    assert read.splits[contract.TRAIN].seconds == 5.0  # Written to the millisecond.
    assert read.splits[contract.TRAIN].files == description.splits[contract.TRAIN].files
    assert read.accounting == description.accounting and read.sample_rate == 16000
    assert read.runs == description.runs
    assert read.shard_paths(str(tmp_path), contract.TRAIN) == [str(tmp_path / "train-a-00000-of-00001.tfrecord")]


@pytest.mark.parametrize(
    "name",
    ["../escaped.tfrecord", "/etc/passwd", "sub/dir.tfrecord", "..", "c:\\x.tfrecord"],
    ids=["parent", "absolute", "subdirectory", "dotdot", "backslash"],
)
def test_shard_names_that_leave_the_dataset_directory_are_refused(tmp_path, name):
    raw = _description().to_dict()
    raw["splits"][contract.TRAIN]["files"] = [name]
    (tmp_path / contract.DATASET_FILE).write_text(json.dumps(raw))
    with pytest.raises(contract.ContractError, match="not a plain file name"):
        contract.read_description(str(tmp_path))


def test_missing_or_unknown_descriptions_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pipelines.preprocess"):
        contract.read_description(str(tmp_path))
    raw = {**_description().to_dict(), "format_version": 99}
    (tmp_path / contract.DATASET_FILE).write_text(json.dumps(raw))
    with pytest.raises(contract.ContractError, match="unknown format_version 99"):
        contract.read_description(str(tmp_path))


@pytest.mark.parametrize(
    "expected, message",
    [
        ({"sample_rate": 22050}, "the dataset has sample_rate=16000 Hz, the model has sample_rate=22050 Hz"),
        ({"quantization_channels": 64}, "quantization_channels=256, the model has quantization_channels=64"),
        ({"min_window_samples": 16001}, "window_samples=16000, shorter than the model needs \\(16001 samples\\)"),
    ],
    ids=["sample-rate", "quantization", "short-windows"],
)
def test_check_compatible_names_both_values(expected, message):
    contract.check_compatible(_description(), "the model", sample_rate=16000, min_window_samples=16000)
    with pytest.raises(contract.DatasetMismatchError, match=message):
        contract.check_compatible(_description(), "the model", **expected)


def test_model_config_round_trips_and_rejects_inconsistent_files(tmp_path):
    model_config = contract.ModelConfig(
        wavenet_config=contract.WaveNetConfig(dilations=(1, 2, 4)), sample_rate=8000, step=7
    )
    contract.write_model_config(str(tmp_path), model_config)
    assert contract.read_model_config(str(tmp_path)) == model_config
    raw = json.loads((tmp_path / contract.MODEL_CONFIG_FILE).read_text())
    assert raw["receptive_field"] == 1 * 7 + 2 and raw["quantization_channels"] == 256  # For readers without our code.
    (tmp_path / contract.MODEL_CONFIG_FILE).write_text(json.dumps({**raw, "receptive_field": 5}))
    with pytest.raises(contract.ContractError, match="receptive_field disagrees"):
        contract.read_model_config(str(tmp_path))
    (tmp_path / contract.MODEL_CONFIG_FILE).write_text(json.dumps({"sample_rate": 8000}))
    with pytest.raises(contract.ContractError, match="malformed config.json"):
        contract.read_model_config(str(tmp_path))


def test_failure_records_carry_stage_reason_and_status():
    http = contract.FailureRecord.of("u", contract.TrackError(contract.STAGE_READ, "HTTP 404", status=404))
    assert http == contract.FailureRecord(uri="u", stage="read", error="HTTP 404", status=404)
    assert contract.FailureRecord.of("u", RuntimeError("boom")) == contract.FailureRecord("u", "process", "boom")
    assert json.loads(http.to_json()) == {"uri": "u", "stage": "read", "error": "HTTP 404", "status": 404,
                                          "licence": None}  # fmt: skip


def test_records_read_back_what_was_written_and_what_older_versions_wrote(tmp_path):
    track = contract.TrackRecord(track_id="00ab", uri="/music/caf\\xe9.mp3", split="train", duration_secs=1.5,
                                 windows=3, labels={"genre": "ambient"}, licence="CC-BY-4.0", licence_raw="CC BY 4.0")
    older = {"track_id": "00cd", "uri": "gs://b/old.mp3", "split": "validation", "windows": 2, "duration_secs": 1.0,
             "licence": "https://creativecommons.org/licenses/by/3.0/", "a_later_field": 1}  # fmt: skip
    path = tmp_path / "tracks.jsonl"
    path.write_text(track.to_json() + "\n\n" + json.dumps(older) + "\n")
    first, second = contract.read_records(str(path), contract.TrackRecord)
    assert first == track and second.licence_raw is None and second.labels == {} and second.windows == 2
    path.write_text('{"uri": "x"}\n')
    with pytest.raises(contract.ContractError, match="tracks.jsonl line 1: a malformed TrackRecord"):
        contract.read_records(str(path), contract.TrackRecord)


def test_format_3_descriptions_read_and_are_written_again_as_format_4(tmp_path):
    """Format 4 added each run's command and software and the accounting's tracks_excluded."""
    raw = {**_description().to_dict(), "format_version": 3}
    for record in (raw["accounting"], *(run["accounting"] for run in raw["runs"])):
        del record["tracks_excluded"]
    for run in raw["runs"]:
        del run["command"], run["software"]
    (tmp_path / contract.DATASET_FILE).write_text(json.dumps(raw))
    read = contract.read_description(str(tmp_path))
    assert read.runs[0].command == () and read.runs[0].software == "" and read.accounting.tracks_excluded == 0
    assert read.accounting.tracks_ok == 1 and read.splits[contract.TRAIN].windows == 5
    contract.write_description(str(tmp_path), read)
    assert json.loads((tmp_path / contract.DATASET_FILE).read_text())["format_version"] == 4
    assert contract.read_description(str(tmp_path)) == read


def test_format_1_descriptions_still_read(tmp_path):
    raw = {**_description().to_dict(), "format_version": 1, "runs": 2, "tracks_file": "tracks.jsonl",
           "failures_file": "failures.jsonl"}  # fmt: skip
    (tmp_path / contract.DATASET_FILE).write_text(json.dumps(raw))
    read = contract.read_description(str(tmp_path))
    assert [(r.tracks_file, r.failures_file) for r in read.runs] == [("tracks.jsonl", "failures.jsonl")]
    assert read.splits[contract.TRAIN].files == _description().splits[contract.TRAIN].files
    assert read.accounting.tracks_ok == 1
