import os
import subprocess
import sys

import pytest

from pipelines import contract, fetch, listings, preprocess, scrape
from tests.helpers import committed_tracks, example_labels, last_failures, read_jsonl

FAST = ["--requests_per_second=50", "--max_retries=3"]


def test_listing_page_yields_tracks_and_next_page(music_site):
    page = listings.parse_listing(music_site.listing(1), f"{music_site.base_url}/genre/Ambient/")
    tracks, next_url = page.tracks, page.next_url
    assert page.problems == []
    assert [t.title for t in tracks] == ["Awakening", "Coherence", "Media Threat"]
    assert tracks[0].audio_url == f"{music_site.base_url}/files/Awakening.mp3"
    assert tracks[0].artist == "Max McCracken"
    assert tracks[0].licence == "https://creativecommons.org/licenses/by-sa/3.0/"
    assert tracks[0].page_url == f"{music_site.base_url}/music/Max_McCracken/awakening/"
    assert next_url == f"{music_site.base_url}/genre/Ambient/?page=2"


def test_last_page_has_no_next_page(music_site):
    page = listings.parse_listing(music_site.listing(3), f"{music_site.base_url}/genre/Ambient/?page=3")
    assert page.next_url is None


@pytest.mark.parametrize("max_pages, max_tracks, expected", [(1, 100, 3), (3, 100, 8), (3, 4, 4)])
def test_scrape_follows_pages_dedupes_and_stops_at_limits(music_site, max_pages, max_tracks, expected):
    config = fetch.FetchConfig(requests_per_second=50)
    start = f"{music_site.base_url}/genre/Ambient/"
    found = list(listings.scrape([start], fetch.Fetcher(config), max_pages, max_tracks))
    assert len(found) == expected
    assert len({t.track_id for t in found}) == expected


def test_scrape_cli_lists_tracks_without_downloading_audio(music_site, tmp_path, capsys):
    output = tmp_path / "tracks.jsonl"
    scrape.main(["--url", f"{music_site.base_url}/genre/Ambient/", "--output", str(output), *FAST])
    tracks = read_jsonl(output)
    assert len(tracks) == 8
    assert {t["title"] for t in tracks} >= {"Awakening", "Secret", "Deprecation"}
    assert set(tracks[0]) == {"track_id", "audio_url", "title", "artist", "genre", "licence", "page_url", "zone"}
    assert {t["genre"] for t in tracks} == {"Ambient"}  # The genre page they were listed on.
    assert tracks[0]["zone"] == "private"  # The listing is on the loopback address, so its tracks may be too.
    paths = [path for _, path, _ in music_site.requests]
    assert not any(p.startswith(("/files/", "/slow/", "/private/")) for p in paths)
    assert "8 tracks written" in capsys.readouterr().out


def test_the_scraping_library_reads_no_commands_options():
    # Settings travel one way (DESIGN.md): the library takes values; only the command line reads options.
    code = "import sys, pipelines.listings; print(sorted({'pipelines.options', 'pipelines.scrape'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_unreadable_listing_is_a_failure_not_a_crash(music_site):
    found = list(listings.scrape([f"{music_site.base_url}/genre/Missing/"], fetch.Fetcher(), 3, 10))
    assert found == [
        contract.FailureRecord(uri=f"{music_site.base_url}/genre/Missing/", stage="scrape", error="HTTP 404 Not Found",
                               status=404)  # fmt: skip
    ]


@pytest.mark.slow
def test_pipeline_scrapes_downloads_and_processes_each_track_once_with_its_listings_labels(music_site, tmp_path):
    output = tmp_path / "dataset"
    args = [
        f"--scrape_url={music_site.base_url}/genre/Ambient/",
        f"--scrape_url={music_site.base_url}/genre/Electronic/",
        f"--output={output}",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_threading",
        "--validation_fraction=0.3",
        *FAST,
    ]
    description = preprocess.run(args)

    tracks = committed_tracks(output)
    assert sorted(t["title"] for t in tracks) == [
        "Awakening", "By-Product", "Coherence", "Deprecation", "Media Threat", "Nebula",
    ]  # fmt: skip
    assert all(t["licence"] == "CC-BY-SA-3.0" and t["page_url"] for t in tracks)  # Normalized from the site's URL.
    assert all(t["licence_raw"].startswith("https://creativecommons.org/") for t in tracks)
    failures = {os.path.basename(f["uri"]): f for f in last_failures(output)}
    assert failures["missing.mp3"]["status"] == 404 and "HTTP 404" in failures["missing.mp3"]["error"]
    assert "not audio" in failures["error-page.mp3"]["error"]
    assert failures["secret.mp3"]["error"] == "disallowed by robots.txt"
    assert len(failures) == 3
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (9, 6, 3)

    paths = [path for _, path, _ in music_site.requests]
    assert "/private/secret.mp3" not in paths
    # Downloads of a track happen once, though Media Threat is listed on two pages.
    assert paths.count("/files/Media%20Threat.mp3") == 1
    # After the 429, nothing reached the host before Retry-After passed, but for
    # requests already in flight when it was sent (other worker threads).
    waited = [t - music_site.throttled_at for t, _, _ in music_site.requests if t > music_site.throttled_at + 0.1]
    assert waited and min(waited) >= music_site.RETRY_AFTER_SECS - 0.01

    windows = sum(split.windows for split in description.splits.values())
    assert windows == sum(t["windows"] for t in tracks)

    # Each track is labelled with the genre page that listed it and the artist the site names.
    by_title = {t["title"]: t for t in tracks}
    assert by_title["Deprecation"]["labels"] == {"genre": "Ambient", "artist": "Max McCracken"}
    assert by_title["By-Product"]["labels"] == {"genre": "Electronic", "artist": "Guest Artist"}
    assert description.vocabulary("genre") == ("unknown", "Ambient", "Electronic")
    assert description.labels["artist"]["Guest Artist"].windows == by_title["By-Product"]["windows"]
    assert example_labels(output)[by_title["By-Product"]["track_id"]]["genre"] == {"Electronic"}

    # A second run over the same output adds nothing and never downloads a processed track again.
    music_site.requests.clear()
    again = preprocess.run(args)
    assert again.splits == description.splits
    assert again.accounting.tracks_skipped_existing == 6
    assert again.accounting.tracks_ok == 0
    assert len(committed_tracks(output)) == 6
    shards = sorted(f for f in os.listdir(output) if f.endswith(".tfrecord"))
    assert shards == sorted(f for split in again.splits.values() for f in split.files)
    downloads = {path for _, path, _ in music_site.requests if path.startswith(("/files/", "/slow/"))}
    assert downloads == {"/files/missing.mp3", "/files/error-page.mp3"}  # Only the failed ones are retried.
