"""The small DoFns and CombineFns of the pipeline, each on Beam's TestPipeline.

On the FnApiRunner, as local runs (`preprocess.local_runner`): Beam's DirectRunner would first try to download the
Prism runner from GitHub, a connection the tests never make.
"""

import apache_beam as beam
import pytest
from apache_beam import pvalue
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import contract, sources, transforms
from pipelines.contract import Accounting, LabelCount, SplitSummary


def _test_pipeline():
    return test_pipeline.TestPipeline(runner=fn_runner.FnApiRunner())


def _ids(n):
    return [sources.track_id_for(f"/music/{i}.mp3") for i in range(n)]


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (1.0, 200), (0.25, 50)], ids=["none", "all", "quarter"])
def test_split_for_is_stable_and_close_to_the_fraction(fraction, expected):
    ids = _ids(200)
    validation = [i for i in ids if transforms.split_for(i, fraction) == contract.VALIDATION]
    assert validation == [i for i in ids if transforms.split_for(i, fraction) == contract.VALIDATION]
    assert abs(len(validation) - expected) <= 15  # A hash, not a quota: binomial spread around the share.


def test_split_for_grows_monotonically_with_the_fraction():
    ids = _ids(100)
    small = {i for i in ids if transforms.split_for(i, 0.2) == contract.VALIDATION}
    large = {i for i in ids if transforms.split_for(i, 0.5) == contract.VALIDATION}
    assert small < large  # Raising the fraction moves tracks into validation, never out of it.


def test_pick_source_keeps_one_record_per_track_and_skips_existing():
    scraped = {"uri": "http://site/a.mp3", "track_id": "a", "title": "A", "artist": "X"}
    plain = {"uri": "http://site/a.mp3", "track_id": "a"}
    with _test_pipeline() as pipeline:
        existing = pipeline | "Existing" >> beam.Create([("b", True)])
        picked = (
            pipeline
            | beam.Create([("a", [plain, scraped]), ("b", [{"uri": "/b.mp3", "track_id": "b"}])])
            | beam.ParDo(transforms.PickSourceFn(), pvalue.AsDict(existing)).with_outputs(
                transforms.SKIPPED, main="sources"
            )
        )
        assert_that(picked.sources, equal_to([scraped]), label="MostInformativeRecordWins")
        assert_that(picked[transforms.SKIPPED], equal_to(["b"]), label="ExistingTrackSkipped")


def _track(split, windows, seconds, silent=0, decode_error="", labels=None):
    return contract.TrackRecord(
        track_id=f"{windows:016x}", uri=f"/music/{windows}.mp3", split=split, windows=windows, duration_secs=seconds,
        windows_silent_dropped=silent, decode_error=decode_error, labels=labels or {},
    )  # fmt: skip


def test_run_stats_add_up_per_split_and_outcome_and_account_for_every_input():
    tracks = [
        _track(contract.TRAIN, 10, 10.5, labels={"genre": "ambient", "artist": "A"}),
        _track(contract.TRAIN, 0, 3.0, silent=3, labels={"genre": "ambient", "artist": "unknown"}),
        _track(contract.VALIDATION, 4, 4.25, silent=1, decode_error="decoding stopped after 4.25 s"),
    ]
    failures = [
        contract.FailureRecord("/music/bad.mp3", "decode", "not audio"),
        contract.FailureRecord("/music/nc.mp3", "licence", "CC-BY-NC-4.0 does not allow commercial use"),
        contract.FailureRecord("/music/none*.mp3", "match", "no file matches"),
    ]
    expected = (
        {
            contract.TRAIN: SplitSummary(windows=10, tracks=2, seconds=13.5),
            contract.VALIDATION: SplitSummary(windows=4, tracks=1, seconds=4.25),
        },
        Accounting(tracks_input=7, tracks_ok=3, tracks_failed=2, tracks_excluded=1, tracks_skipped_existing=1,
                   tracks_silent=1, tracks_truncated=1, windows_silent_dropped=4),  # fmt: skip
        # A record without labels (written before them) counts as unknown; a silent track counts no window.
        {
            "genre": {"ambient": LabelCount(windows=10, tracks=2), "unknown": LabelCount(windows=4, tracks=1)},
            "artist": {"A": LabelCount(windows=10, tracks=1), "unknown": LabelCount(windows=4, tracks=2)},
        },
    )
    with _test_pipeline() as pipeline:
        stats = {
            transforms.TRACK: pipeline | "Tracks" >> beam.Create(tracks),
            transforms.FAILURE: pipeline | "Failures" >> beam.Create(failures),
            transforms.SELECTED: pipeline | "Selected" >> beam.Create(["a", "b", "c", "bad", "nc"]),
            transforms.SKIPPED_TRACK: pipeline | "Skipped" >> beam.Create(["old"]),
            transforms.UNUSABLE: (pipeline | "Unusable" >> beam.Create([failures[2]]),),
        } | transforms.RunStats()
        assert_that(stats, equal_to([expected]))
        assert expected[1].unaccounted() == 0


def test_run_stats_of_no_input_are_zero():
    with _test_pipeline() as pipeline:
        stats = {transforms.TRACK: pipeline | beam.Create([])} | transforms.RunStats()
        assert_that(stats, equal_to([transforms.RunStatsFn().create_accumulator()]))
