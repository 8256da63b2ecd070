"""Labels (genre, artist) from the scrape, the files' directories and tags, and a labels file, into the examples.

A scraped listing's labels are checked on the scrape's own end-to-end run (tests/test_scrape.py).
"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from pipelines import contract, labels, listings, preprocess, sources
from tests.helpers import CLIPS, committed_tracks, example_labels

LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory", "--sample_rate=8000", "--window_samples=4000"]


def test_label_from_rules_parse_and_refuse_what_they_cannot_do():
    assert labels.parse_label_from(["genre=parent_dir", " artist = tag "]) == (
        ("genre", "parent_dir"),
        ("artist", "tag"),
    )
    for bad, says in (
        (["mood=tag"], "the kind must be one of genre, artist"),
        (["genre=filename"], "the source must be one of parent_dir, tag"),
        (["genre=tag", "genre=parent_dir"], "names genre twice"),
    ):
        with pytest.raises(labels.LabelsError, match=says):
            labels.parse_label_from(bad)


def test_labels_files_in_csv_and_json_lines_key_tracks_by_identity(tmp_path):
    clip = CLIPS["mp3_44k"]
    other_spelling = os.path.join(os.path.dirname(clip), ".", os.path.basename(clip))
    csv_text = f'uri,kind,value,comment\n"{other_spelling}",genre,  Dark   Ambient ,x\n{clip},artist,Max\n'
    parsed = labels.parse_labels_file(csv_text, "labels.csv")
    assert parsed == {sources.track_id_for(clip): {"genre": "Dark Ambient", "artist": "Max"}}
    jsonl = '{"uri": "http://example.test/a.mp3", "kind": "genre", "value": "Rock"}\n\n'
    assert labels.parse_labels_file(jsonl, "l.jsonl") == {
        sources.track_id_for("http://example.test/a.mp3"): {"genre": "Rock"}
    }
    for text, name, says in (
        ("uri,value\nx,y\n", "l.csv", "must name uri, kind and value .missing kind"),
        ("uri,kind,value\nx,mood,calm\n", "l.csv", "line 2: kind 'mood'"),
        ("uri,kind,value\nx,genre,\n", "l.csv", "line 2: no value"),
        ('{"uri": "x", "kind": "genre", "value": "a"}\n[1]\n', "l.jsonl", "line 2: expected an object"),
        ("{oops\n", "l.jsonl", "line 1: not JSON"),
    ):
        with pytest.raises(labels.LabelsError, match=says):
            labels.parse_labels_file(text, name)


def test_precedence_is_file_then_rules_then_the_site():
    source = {"uri": "/music/drone/a.mp3", "track_id": "t1", "labels": {"genre": "Ambient", "artist": "Site Artist"}}
    assert labels.resolve(labels.LabelRules(), source) == {"genre": "Ambient", "artist": "Site Artist"}
    rules = labels.LabelRules(label_from=(("genre", "parent_dir"), ("artist", "tag")))
    assert labels.resolve(rules, source, tags={"artist": "Tagged"}) == {"genre": "drone", "artist": "Tagged"}
    assert labels.resolve(rules, source, tags={}) == {"genre": "drone", "artist": "Site Artist"}  # No tag: the site's.
    rules = labels.LabelRules(label_from=rules.label_from, explicit={"t1": {"genre": "Chosen"}})
    assert labels.resolve(rules, source, tags={})["genre"] == "Chosen"
    nothing = {"uri": "https://host.test/x.mp3", "track_id": "t2"}
    assert labels.resolve(labels.LabelRules(), nothing) == {"genre": "unknown", "artist": "unknown"}
    assert labels.parent_dir("gs://bucket/music/Dark%20Ambient/x.mp3") == "Dark Ambient"
    assert labels.clean_value("x" * 500) == "x" * labels.MAX_LABEL_CHARS


def test_listing_genre_comes_from_the_genre_page_path():
    fma = "https://freemusicarchive.org"
    assert listings.listing_genre(f"{fma}/genre/Old-Time__Historic/?page=2") == "Old-Time  Historic"
    assert listings.listing_genre("https://freemusicarchive.org/genre/Ambient") == "Ambient"
    assert listings.listing_genre("https://freemusicarchive.org/music/charts") == ""


@pytest.fixture(scope="module")
def labelled_tree(tmp_path_factory):
    """music/ambient/{tagged.ogg, Awakening.mp3} and music/drone/{tagged.flac}: tags made with ffmpeg -metadata."""
    root = tmp_path_factory.mktemp("music")
    (root / "ambient").mkdir()
    (root / "drone").mkdir()
    for source, target, genre, artist in (
        (CLIPS["ogg_48k"], root / "ambient" / "tagged.ogg", "Space Rock", "Tagged One"),
        (CLIPS["flac_44k"], root / "drone" / "tagged.flac", "Drone", "Tagged Two"),
    ):
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", source, "-t", "3", "-map_metadata", "-1",
             "-metadata", f"genre={genre}", "-metadata", f"artist={artist}", str(target)],
            check=True,
        )  # fmt: skip
    shutil.copy(CLIPS["mp3_44k"], root / "ambient")  # Its ID3 tags name no genre.
    return root


def test_labels_from_directories_tags_and_a_file_reach_every_window_and_dataset_json(labelled_tree, tmp_path):
    labels_file = tmp_path / "labels.jsonl"
    labels_file.write_text(json.dumps({"uri": str(labelled_tree / "drone" / "tagged.flac"), "kind": "genre",
                                       "value": "Chosen"}) + "\n")  # fmt: skip
    output = tmp_path / "out"
    description = preprocess.run(
        [
            f"--input={labelled_tree}",
            f"--output={output}",
            "--label_from=genre=parent_dir",
            "--label_from=artist=tag",
            f"--labels_file={labels_file}",
            "--validation_fraction=0",
            *LOCAL,
        ]  # fmt: skip
    )
    tracks = {os.path.basename(t["uri"]): t for t in committed_tracks(output)}
    assert tracks["tagged.ogg"]["labels"] == {"genre": "ambient", "artist": "Tagged One"}
    assert tracks["tagged.flac"]["labels"] == {"genre": "Chosen", "artist": "Tagged Two"}  # The file wins.
    assert tracks["Awakening.mp3"]["labels"]["genre"] == "ambient"
    # Every window carries its track's labels.
    in_examples = example_labels(output)
    for track in tracks.values():
        assert in_examples[track["track_id"]] == {kind: {value} for kind, value in track["labels"].items()}
    # dataset.json: each kind's vocabulary with window and track counts that add up to the dataset.
    genre = description.labels["genre"]
    assert set(genre) == {"ambient", "Chosen"}
    assert genre["ambient"] == contract.LabelCount(
        windows=tracks["tagged.ogg"]["windows"] + tracks["Awakening.mp3"]["windows"], tracks=2
    )
    for kind in contract.LABEL_KINDS:
        assert sum(c.windows for c in description.labels[kind].values()) == description.windows
    assert description.vocabulary("genre") == ("unknown", "Chosen", "ambient")
    with open(output / contract.DATASET_FILE) as f:
        raw = json.load(f)
    assert raw["format_version"] == contract.DATASET_FORMAT_VERSION and raw["labels"]["genre"]["Chosen"] == {
        "windows": tracks["tagged.flac"]["windows"],
        "tracks": 1,
    }
    assert contract.label_feature("genre") in raw["features"]


def test_a_labels_file_that_does_not_parse_stops_the_run_before_any_work(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("uri,kind,value\nx,mood,calm\n")
    with pytest.raises(labels.LabelsError, match="kind 'mood'"):
        preprocess.run([f"--input={CLIPS['mp3_44k']}", f"--output={tmp_path / 'out'}", f"--labels_file={bad}", *LOCAL])
    assert not (tmp_path / "out").exists()


def test_datasets_written_before_labels_read_as_unknown(tmp_path):
    """A format-2 dataset.json: every window reads as 'unknown', and a new run's labels add to that."""
    description = contract.DatasetDescription(
        sample_rate=8000, quantization_channels=256, window_samples=4000, hop_samples=4000, decoder="pyav",
        resampler="soxr_hq", silence_threshold_db=-60.0, validation_fraction=0.0,
        splits={contract.TRAIN: contract.SplitSummary(("a.tfrecord",), 7, 2, 3.5),
                contract.VALIDATION: contract.SplitSummary()},
        runs=(contract.RunRecord("r1", "tracks-r1.jsonl", "failures-r1.jsonl", contract.Accounting()),),
    )  # fmt: skip
    raw = description.to_dict()
    raw["format_version"] = 2
    del raw["labels"]
    old = contract.DatasetDescription.from_dict(raw)
    assert old.format_version == contract.DATASET_FORMAT_VERSION
    assert old.labels == {kind: {"unknown": contract.LabelCount(7, 2)} for kind in contract.LABEL_KINDS}
    assert old.vocabulary("genre") == ("unknown",)
    added = old.with_run(
        {s: contract.SplitSummary() for s in contract.SPLITS},
        contract.RunRecord("r2", "tracks-r2.jsonl", "failures-r2.jsonl", contract.Accounting()),
        {"genre": {"rock": contract.LabelCount(3, 1)}},
    )
    assert added.vocabulary("genre") == ("unknown", "rock")
    assert contract.DatasetDescription.from_dict(json.loads(json.dumps(added.to_dict()))) == added
    assert np.isclose(added.seconds, 3.5)
