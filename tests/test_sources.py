import hashlib
import os
import urllib.parse

import pytest

from pipelines import contract, fetch, sources
from tests.helpers import CLIPS


def test_list_file_tolerates_blank_lines_whitespace_and_comments(tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n  /music/a.mp3  \n\n# a comment\n\thttps://example.org/b.ogg\n   \n")
    assert sources.read_input_list(str(listing)) == ["/music/a.mp3", "https://example.org/b.ogg"]


def test_input_arguments_expand_lists_and_drop_duplicates(tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text("/music/a.mp3\n/music/b.mp3\n")
    expanded = sources.expand_input_arguments(["/music/a.mp3", f"@{listing}", " ", "/music/c.mp3"])
    assert expanded == ["/music/a.mp3", "/music/b.mp3", "/music/c.mp3"]


def test_directory_expands_to_its_audio_files_only(clips_dir):
    (clips_dir / "cover.jpg").write_bytes(b"\xff\xd8")
    uris = sources.match_pattern(str(clips_dir))
    assert sorted(os.path.basename(u) for u in uris) == sorted(os.path.basename(p) for p in CLIPS.values())


def test_glob_matches_names_with_spaces(clips_dir):
    assert [os.path.basename(u) for u in sources.match_pattern(str(clips_dir / "Media*.mp3"))] == ["Media Threat.mp3"]


def test_pattern_matching_nothing_is_a_match_failure(tmp_path):
    with pytest.raises(contract.TrackError, match="no file matches") as raised:
        sources.match_pattern(str(tmp_path / "*.mp3"))
    assert raised.value.stage == "match"


def test_track_id_is_stable_and_distinct():
    assert sources.track_id_for("gs://bucket/a.mp3") == sources.track_id_for("gs://bucket/a.mp3")
    assert sources.track_id_for("gs://bucket/a.mp3") != sources.track_id_for("gs://bucket/b.mp3")
    assert len(sources.track_id_for("x")) == 16


def test_url_is_downloaded_whole(http_server):
    url = f"{http_server}/{urllib.parse.quote('Media Threat.mp3')}"
    fetcher = fetch.Fetcher()
    fileobj, final_url = sources.open_uri(url, fetcher)
    assert final_url == url
    with fileobj as f, open(CLIPS["mp3_48k_space"], "rb") as g:
        assert f.read() == g.read()


def test_a_name_that_is_not_utf8_has_an_id_of_its_own_and_utf8_ids_stay_as_they_were(tmp_path):
    latin1 = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp3"))  # Held with a surrogate escape.
    utf8 = str(tmp_path / "café.mp3")
    assert sources.track_id_for(latin1) != sources.track_id_for(utf8)
    # Ids of datasets made before are unchanged: a UTF-8 name hashes as it always did.
    assert sources.track_id_for(utf8) == hashlib.sha256(utf8.encode("utf-8")).hexdigest()[:16]


def test_http_error_is_a_read_failure_with_status(http_server):
    with pytest.raises(fetch.FetchError, match="HTTP 404") as raised:
        sources.open_uri(f"{http_server}/missing.mp3", fetch.Fetcher())
    assert raised.value.stage == "read" and raised.value.status == 404


def test_download_over_the_size_limit_is_refused(http_server):
    with pytest.raises(fetch.FetchError, match="larger than the limit of 1000"):
        sources.open_uri(f"{http_server}/Awakening.mp3", fetch.Fetcher(fetch.FetchConfig(max_bytes=1000)))


def test_empty_file_is_refused_when_opened(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(contract.TrackError, match=r"empty file \(0 bytes\)") as raised:
        sources.open_uri(str(tmp_path / "empty.mp3"), fetch.Fetcher())
    assert raised.value.stage == "read"


def test_double_star_spans_directories_and_tilde_is_home(clips_dir, monkeypatch):
    nested = clips_dir / "albums" / "one"
    nested.mkdir(parents=True)
    (nested / "deep.mp3").write_bytes((clips_dir / "Awakening.mp3").read_bytes())
    monkeypatch.setenv("HOME", str(clips_dir))
    uris = sources.match_pattern("~/**.mp3")
    assert str(nested / "deep.mp3") in uris and str(clips_dir / "Awakening.mp3") in uris
    (nested / "deep.mp3").unlink()
