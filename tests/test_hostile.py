"""Hostile sites and broken files: every bad input ends as a failure line, never a crash, a hang or a forbidden request.

Every server here listens on 127.0.0.1. Host names that stand for other addresses go through an
injected resolver; where a "public" site must answer, the connection to its (made-up, public)
address is handed to a loopback server, so no packet leaves this machine.
"""

import dataclasses
import functools
import html
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import numpy as np
import pytest
import urllib3.util.connection

from pipelines import audio, contract, fetch, listings, preprocess
from tests.helpers import CLIPS, committed_tracks, last_failures, wav_bytes

PUBLIC_ADDRESS = "93.184.216.34"  # A public address; connections to it are handed to the loopback server.
FAST = fetch.FetchConfig(requests_per_second=100, max_retries=1, backoff_secs=0.01)


class Site:
    """A loopback HTTP server answering from a dict path -> handler(request) and logging every request."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.requests.append(self.path)
                route = site.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                route(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def send(request, status=200, body=b"", content_type="text/html", headers=()):
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    for name, value in headers:
        request.send_header(name, value)
    if not any(name == "Content-Length" for name, _ in headers):
        request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


@pytest.fixture()
def site():
    s = Site()
    s.routes["/robots.txt"] = lambda r: send(r, 404)
    yield s
    s.close()


@pytest.fixture()
def connections(monkeypatch, site):
    """Every address urllib3 connects to; the made-up public address is handed to the loopback server."""
    made = []
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        made.append(address[0])
        if address[0] == PUBLIC_ADDRESS:
            address = ("127.0.0.1", site.port)
        elif address[0] != "127.0.0.1":
            raise OSError(f"test refused a connection to {address[0]}")  # Never reached when the rules hold.
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return made


def resolver(mapping):
    """An injected resolver: host -> list of addresses; other names do not resolve."""

    def resolve(host, port):
        if host not in mapping:
            raise OSError(f"unknown test host {host}")
        return mapping[host]

    return resolve


def track_element(info):
    text = info if isinstance(info, str) else json.dumps(info)
    return f"<div class='play-item' data-track-info='{html.escape(text)}'></div>"


def clip(name="mp3_22k_mono"):
    with open(CLIPS[name], "rb") as f:
        return f.read()


# 1. Pagination --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "next_link",
    [
        '<a href="/genre/Ambient/?page={n}">NEXT &gt;</a>',
        '<a href="?page={n}">›</a>',
        '<a aria-label="Next" href="?page={n}">»</a>',
    ],
    ids=["next-text", "guillemet", "aria-label"],
)
def test_pagination_follows_links_that_say_next(site, next_link):
    audio_bytes = clip()
    site.routes["/a.mp3"] = lambda r: send(r, body=audio_bytes, content_type="audio/mpeg")

    def listing(request):
        page = int((request.path.split("page=") + ["1"])[1])
        count = 2 if page <= 3 else 0  # Three pages of tracks; past them, an empty listing.
        tracks = "".join(track_element({"fileUrl": f"/t{page}-{i}.mp3", "title": f"{page}-{i}"}) for i in range(count))
        link = next_link.format(n=page + 1) if page < 3 else ""
        send(request, body=f"<html><body>{tracks}{link}</body></html>".encode())

    site.routes["/genre/Ambient/"] = listing
    summary = {}
    found = list(listings.scrape([f"http://127.0.0.1:{site.port}/genre/Ambient/"], fetch.Fetcher(FAST), 10, 100,
                               summary=summary))  # fmt: skip
    assert [t.title for t in found] == ["1-0", "1-1", "2-0", "2-1", "3-0", "3-1"]
    # Without a next link on page 3, its page number leads to page 4, which brings nothing new: the end.
    stats = {"pages": 4, "tracks": 6, "elements": 6, "links": 2}  # Next links on pages 1 and 2.
    assert summary == {f"http://127.0.0.1:{site.port}/genre/Ambient/": stats}


def test_a_page_parameter_is_followed_until_a_page_brings_no_new_track(site):
    def listing(request):
        page = int((request.path.split("page=") + ["1"])[1])
        page = min(page, 4)  # Like many sites, pages past the end repeat the last one.
        send(request, body=track_element({"fileUrl": f"/t{page}.mp3", "title": str(page)}).encode())

    site.routes["/list"] = listing
    found = list(listings.scrape([f"http://127.0.0.1:{site.port}/list?page=1"], fetch.Fetcher(FAST), 50, 100))
    assert [t.title for t in found] == ["1", "2", "3", "4"]
    assert site.requests.count("/list?page=5") == 1 and "/list?page=6" not in site.requests


# 2. Defensive parsing --------------------------------------------------------------------------------------------


def test_malformed_elements_and_links_are_failure_lines_and_the_page_goes_on(site):
    page = "".join([
        track_element([1, 2]),
        track_element({"fileUrl": 123}),
        track_element({"fileUrl": "http://[bad/x.mp3"}),
        track_element({"fileUrl": "file:///etc/passwd"}),
        track_element("{not json"),
        track_element({"fileUrl": "/good.mp3", "title": "Good", "artistName": ["not", "text"]}),
        '<a rel="next" href="javascript:void(0)">next</a>',
    ])  # fmt: skip
    site.routes["/list"] = lambda r: send(r, body=page.encode())
    found = list(listings.scrape([f"http://127.0.0.1:{site.port}/list"], fetch.Fetcher(FAST), 5, 100))
    tracks = [t for t in found if isinstance(t, contract.ListedTrack)]
    failures = [f.error for f in found if isinstance(f, contract.FailureRecord)]
    assert [(t.title, t.artist) for t in tracks] == [("Good", "")]
    assert all(f"http://127.0.0.1:{site.port}/list" == f.uri and f.stage == "scrape" for f in found
               if isinstance(f, contract.FailureRecord))  # fmt: skip
    assert len(failures) == 6, failures
    for expected in ("not a JSON object", "fileUrl is missing or not a string (got 123)", "malformed",
                     "'file:///etc/passwd' is not an http(s) URL", "malformed data-track-info JSON",
                     "next-page link 'javascript:void(0)' is not an http(s) URL"):  # fmt: skip
        assert any(expected in f for f in failures), (expected, failures)


OTHER_SITE = (
    "<html><body><h1>My band</h1><a href='/songs/one.mp3'>One</a> <a href='/songs/two.mp3'>Two</a> "
    "<a href='/about'>About</a></body></html>"
)


def test_a_listing_with_no_track_element_is_a_failure_line_that_says_why(site):
    site.routes["/band"] = lambda r: send(r, body=OTHER_SITE.encode())
    summary = {}
    found = list(listings.scrape([f"http://127.0.0.1:{site.port}/band"], fetch.Fetcher(FAST), 5, 100, summary=summary))
    assert found == [
        contract.FailureRecord(
            uri=f"http://127.0.0.1:{site.port}/band",
            stage="scrape",
            error="no track found: no element matched the track selector '.play-item[data-track-info]' of the "
            "site rules 'fma' on the 1 page read (3 links on it). Is this a listing of that site? Another site needs "
            "its own SiteRules entry in pipelines/listings.py; direct audio URLs go in --input",
        )
    ]
    assert summary[f"http://127.0.0.1:{site.port}/band"]["pages"] == 1


def test_preprocess_of_a_listing_with_no_track_element_says_why(site, tmp_path, capsys):
    site.routes["/band"] = lambda r: send(r, body=OTHER_SITE.encode())
    output = tmp_path / "out"
    with pytest.raises(preprocess.PreprocessError, match=r"no track succeeded \(1 of 1 inputs failed; reasons above"):
        preprocess.run([f"--scrape_url=http://127.0.0.1:{site.port}/band", f"--output={output}",
                        "--direct_num_workers=1", "--direct_running_mode=in_memory"])  # fmt: skip
    printed = capsys.readouterr().err
    assert "no element matched the track selector '.play-item[data-track-info]'" in printed
    assert "1 page read (3 links on it)" in printed and "direct audio URLs go in --input" in printed


@pytest.mark.slow
def test_the_pipeline_survives_a_hostile_listing_and_accounts_for_everything(site, tmp_path):
    audio_bytes = clip()
    site.routes["/good.mp3"] = lambda r: send(r, body=audio_bytes, content_type="audio/mpeg")
    site.routes["/to-file.mp3"] = lambda r: send(r, 302, headers=[("Location", "file:///etc/passwd")])
    site.routes["/moved.mp3"] = lambda r: send(r, 302, headers=[("Location", "/new-home.mp3")])
    other = clip("ogg_48k")
    site.routes["/new-home.mp3"] = lambda r: send(r, body=other, content_type="audio/ogg")
    site.routes["/weird-length.mp3"] = lambda r: send(r, body=audio_bytes, content_type="audio/mpeg",
                                                      headers=[("Content-Length", "²")])  # fmt: skip
    page = "".join([
        track_element({"fileUrl": "/good.mp3", "title": "Good"}),
        track_element({"fileUrl": "/to-file.mp3", "title": "Redirect to file"}),
        track_element({"fileUrl": "/weird-length.mp3", "title": "Weird length"}),
        track_element({"fileUrl": "/moved.mp3", "title": "Moved"}),
        track_element([1, 2]),
        '<a href="file:///tmp/next">NEXT &gt;</a>',
    ])  # fmt: skip
    site.routes["/list"] = lambda r: send(r, body=page.encode())
    output = tmp_path / "out"
    description = preprocess.run([f"--scrape_url=http://127.0.0.1:{site.port}/list", f"--output={output}",
                                  "--direct_num_workers=1", "--direct_running_mode=in_memory",
                                  "--requests_per_second=100", "--max_failure_fraction=1"])  # fmt: skip
    accounting = description.accounting
    failures = {f["error"] for f in last_failures(output)}
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (6, 3, 3), failures
    assert any("scheme 'file'" in f for f in failures)  # The redirect to file://, refused.
    assert any("not a JSON object" in f for f in failures) and any("next-page link" in f for f in failures)
    tracks = {t["title"]: t for t in committed_tracks(output)}
    # "²" is no number of bytes: the download went ahead and took the body as it came.
    assert set(tracks) == {"Good", "Weird length", "Moved"}
    # The track index records where the audio really came from.
    assert tracks["Moved"]["final_url"] == f"http://127.0.0.1:{site.port}/new-home.mp3"
    assert tracks["Good"]["final_url"] is None


# 3. Trust zones --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, mapping, reason",
    [
        ("http://metadata.google.internal/computeMetadata/v1/", {}, "cloud metadata host"),
        ("http://evil.test/latest/meta-data/", {"evil.test": ["169.254.169.254"]}, "cloud metadata address"),
        ("http://evil.test/x.mp3", {"evil.test": ["fe80::1"]}, "link-local"),
        ("http://evil.test/x.mp3", {"evil.test": ["::ffff:169.254.10.1"]}, "link-local"),
        ("http://lan.test/x.mp3", {"lan.test": ["10.1.2.3"]}, "not a public address"),
        ("http://mixed.test/x.mp3", {"mixed.test": [PUBLIC_ADDRESS, "127.0.0.1"]}, "not a public address"),
        ("http://127.0.0.1:9/x.mp3", {"127.0.0.1": ["127.0.0.1"]}, "not a public address"),
        ("file:///etc/passwd", {}, "scheme 'file'"),
        ("gs://bucket/x.mp3", {}, "scheme 'gs'"),
    ],
    ids=[
        "metadata-name",
        "metadata-address",
        "link-local-v6",
        "mapped-link-local",
        "private",
        "any-address-bad",
        "loopback",
        "file",
        "gs",
    ],  # fmt: skip
)
def test_forbidden_addresses_are_refused_before_any_connection(url, mapping, reason, connections):
    fetcher = fetch.Fetcher(FAST, resolver=resolver(mapping))
    with pytest.raises(fetch.FetchError, match=reason):
        fetcher.get(url, allow_private=False)
    assert connections == []


def test_the_test_suite_itself_reaches_no_address_but_loopback(refused_addresses):
    """The guard in conftest: even code that skips the fetcher's rules cannot send a packet off this machine."""
    with pytest.raises(ConnectionRefusedError, match="loopback only"):
        socket.create_connection((PUBLIC_ADDRESS, 80), timeout=1)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("metadata.google.internal", 80)
    assert refused_addresses[-2:] == [PUBLIC_ADDRESS, "metadata.google.internal"]


def test_link_local_and_metadata_are_refused_even_where_private_addresses_are_allowed(connections):
    fetcher = fetch.Fetcher(FAST, resolver=resolver({"evil.test": ["169.254.169.254"]}))
    with pytest.raises(fetch.FetchError, match="cloud metadata address"):
        fetcher.get("http://evil.test/", allow_private=True)
    assert connections == []


def test_a_public_listing_cannot_steer_a_worker_to_an_internal_address(site, connections):
    audio_bytes = clip()
    site.routes["/internal.mp3"] = lambda r: send(r, body=audio_bytes, content_type="audio/mpeg")
    internal = f"http://127.0.0.1:{site.port}/internal.mp3"
    site.routes["/bounce.mp3"] = lambda r: send(r, 302, headers=[("Location", internal)])
    page = track_element({"fileUrl": f"http://127.0.0.1:{site.port}/internal.mp3", "title": "direct"}) + track_element(
        {"fileUrl": "/bounce.mp3", "title": "redirected"})  # fmt: skip
    site.routes["/list"] = lambda r: send(r, body=page.encode())
    fetcher = fetch.Fetcher(FAST, resolver=resolver({"public.test": [PUBLIC_ADDRESS], "127.0.0.1": ["127.0.0.1"]}))
    tracks = list(listings.scrape(["http://public.test/list"], fetcher, 1, 10))
    assert {t.zone for t in tracks} == {"public"}
    for track in tracks:
        with pytest.raises(fetch.FetchError, match="not a public address"):
            fetcher.get(track.audio_url, allow_private=track.zone == "private")
    assert set(connections) == {PUBLIC_ADDRESS}  # The listing and the redirecting hop; never 127.0.0.1.
    assert "/internal.mp3" not in site.requests


def test_the_connection_goes_to_the_address_that_was_checked(site, connections):
    """DNS rebinding: a name that answers public first and internal next still connects to the checked address."""
    answers = iter([[PUBLIC_ADDRESS], ["127.0.0.1"]])
    site.routes["/page"] = lambda r: send(r, body=b"<html>ok</html>")
    fetcher = fetch.Fetcher(dataclasses.replace(FAST, obey_robots=False), resolver=lambda host, port: next(answers))
    with fetcher.get("http://rebind.test/page", allow_private=False) as response:
        assert response.body == b"<html>ok</html>"
    assert connections == [PUBLIC_ADDRESS]


def test_listing_zone_comes_from_the_listing_address(connections):
    fetcher = fetch.Fetcher(FAST, resolver=resolver({"public.test": [PUBLIC_ADDRESS], "lan.test": ["192.168.1.20"],
                                                      "home.test": ["127.0.0.1"]}))  # fmt: skip
    assert listings.listing_zone("http://public.test/", fetcher) == "public"
    assert listings.listing_zone("http://lan.test/", fetcher) == "private"
    assert listings.listing_zone("http://home.test/", fetcher) == "private"
    allowing = fetch.Fetcher(dataclasses.replace(FAST, allow_private_addresses=True), resolver=fetcher.resolver)
    assert listings.listing_zone("http://public.test/", allowing) == "private"
    assert connections == []  # Zones come from the injected resolver alone: no connection to any address.


# 4. Bounded downloads --------------------------------------------------------------------------------------------


def trickle(request, chunk, interval_secs, total):
    request.send_response(200)
    request.send_header("Content-Type", "audio/mpeg")
    request.end_headers()
    sent = 0
    try:
        while sent < total:
            request.wfile.write(chunk)
            request.wfile.flush()
            sent += len(chunk)
            time.sleep(interval_secs)
    except OSError:
        pass  # The client hung up, as it should.


def test_a_trickling_server_is_cut_at_the_minimum_rate(site):
    site.routes["/slow.mp3"] = functools.partial(trickle, chunk=b"x", interval_secs=0.05, total=10_000)
    config = dataclasses.replace(FAST, min_bytes_per_sec=100, min_rate_window_secs=0.5, allow_private_addresses=True)
    with pytest.raises(fetch.FetchError, match=r"slower than 100 bytes/s over 0.5 s"):
        fetch.Fetcher(config).get(f"http://127.0.0.1:{site.port}/slow.mp3")


def test_a_download_past_its_deadline_is_cut(site):
    site.routes["/long.mp3"] = functools.partial(trickle, chunk=b"x" * 2000, interval_secs=0.05, total=10_000_000)
    config = dataclasses.replace(FAST, deadline_secs=0.6, allow_private_addresses=True)
    with pytest.raises(fetch.FetchError, match=r"took longer than 0.6 s"):
        fetch.Fetcher(config).get(f"http://127.0.0.1:{site.port}/long.mp3")


def test_listing_pages_have_their_own_small_limit(site):
    site.routes["/huge"] = lambda r: send(r, body=b"<html>" + b" " * 5000 + b"</html>")
    config = dataclasses.replace(FAST, max_page_bytes=1000)
    found = list(listings.scrape([f"http://127.0.0.1:{site.port}/huge"], fetch.Fetcher(config), 1, 10))
    assert len(found) == 1 and "larger than the limit of 1000" in found[0].error


def open_files_under(directory):
    """The files this process holds open under `directory` (a deleted one ends in ' (deleted)')."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # Closed since listed.
            pass
    return [link for link in links if link.startswith(str(directory))]


def test_a_download_streams_into_a_temporary_file_that_closing_deletes(site, tmp_path, monkeypatch):
    from pipelines import sources

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # Where this test can see the download's file.
    long_mp3 = clip("mp3_44k") * 9  # Concatenated mp3 is still mp3; past what is kept in memory.
    assert len(long_mp3) > fetch.SPOOL_BYTES
    site.routes["/long.mp3"] = lambda r: send(r, body=long_mp3, content_type="audio/mpeg")
    site.routes["/error.mp3"] = lambda r: send(r, body=b"<!DOCTYPE html>" + bytes(len(long_mp3)),
                                               content_type="audio/mpeg")  # fmt: skip
    fetcher = fetch.Fetcher(dataclasses.replace(FAST, allow_private_addresses=True))
    fileobj, _ = sources.open_uri(f"http://127.0.0.1:{site.port}/long.mp3", fetcher)
    with fileobj:
        assert fileobj.read() == long_mp3
        assert [os.path.basename(p) for p in open_files_under(tmp_path)][0].endswith(" (deleted)")
        assert os.listdir(tmp_path) == []  # No name on disk: nothing stays behind if the worker dies.
    assert open_files_under(tmp_path) == []
    with pytest.raises(fetch.FetchError, match="the body is an HTML page"):
        sources.open_uri(f"http://127.0.0.1:{site.port}/error.mp3", fetcher)
    assert open_files_under(tmp_path) == []  # A refused download's file is gone at once.


BOMB_SCRIPT = """
import json, re, sys
from pipelines import fetch, sources

def memory_kib(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1))

base_url, limit = sys.argv[1], int(sys.argv[2])
fetcher = fetch.Fetcher(fetch.FetchConfig(max_bytes=limit, requests_per_second=100, allow_private_addresses=True))
sources.open_uri(base_url + "/small.wav", fetcher)[0].close()  # Imports, connections and buffers warmed up.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # The peak (VmHWM) starts again from what is resident now (Linux 4.0 and later).
before = memory_kib("VmRSS")
try:
    sources.open_uri(base_url + "/bomb.wav", fetcher)
    reason = None
except fetch.FetchError as e:
    reason = str(e)
print(json.dumps({"reason": reason, "grown_kib": memory_kib("VmHWM") - before}))
"""


def test_a_gzip_bomb_is_refused_at_the_limit_without_holding_it_in_memory(site):
    inflated, limit = 256 << 20, 128 << 20
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(gzip.compress(zeros) for _ in range(inflated >> 20)) + gzip.flush()  # About 256 KiB.
    encoded = [("Content-Encoding", "gzip")]
    site.routes["/bomb.wav"] = lambda r: send(r, body=bomb, content_type="audio/wav", headers=encoded)
    small = clip("wav_44k")
    site.routes["/small.wav"] = lambda r: send(r, body=small, content_type="audio/wav")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, f"http://127.0.0.1:{site.port}", str(limit)], cwd=root,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    measured = json.loads(done.stdout.splitlines()[-1])
    assert measured["reason"] == f"body larger than the limit of {limit} bytes"
    # The 128 MiB read before the refusal went to a temporary file, not to memory.
    assert measured["grown_kib"] < 32 << 10, measured


# 5. Decoding that keeps what is good -----------------------------------------------------------------------------


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def decoded_secs(path):
    """Seconds FFmpeg's own command line decodes (the reference)."""
    raw = subprocess.run(["ffmpeg", "-v", "quiet", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
                         capture_output=True, check=False).stdout  # fmt: skip
    return len(raw) / 2 / 16000


def track_of(path, **config):
    with open(path, "rb") as f:
        track = audio.Track(f, audio.AudioConfig(window_samples=8000, hop_samples=8000, **config))
        list(track)
    return track.stats


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    directory = tmp_path_factory.mktemp("made")
    ffmpeg("-i", CLIPS["mp3_44k"], "-t", "8", "-ac", "1", "-ar", "22050", "-b:a", "64k", str(directory / "a.mp3"))
    ffmpeg("-i", CLIPS["ogg_48k"], "-t", "6", "-ac", "1", "-ar", "22050", "-b:a", "64k", str(directory / "b.mp3"))
    ffmpeg("-i", CLIPS["mp3_44k"], "-t", "5", "-c:a", "libvorbis", str(directory / "a.ogg"))
    ffmpeg("-i", CLIPS["ogg_48k"], "-t", "4", "-ar", "32000", "-c:a", "libvorbis", str(directory / "b.ogg"))
    a = (directory / "a.mp3").read_bytes()
    (directory / "truncated.mp3").write_bytes(a[: len(a) // 3])
    (directory / "garbage.mp3").write_bytes(a[: len(a) // 2] + os.urandom(4000) + a[len(a) // 2 :])
    (directory / "concatenated.mp3").write_bytes(a + (directory / "b.mp3").read_bytes())
    (directory / "chained.ogg").write_bytes((directory / "a.ogg").read_bytes() + (directory / "b.ogg").read_bytes())
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "3600", "-c:a", "flac", str(directory / "hour.flac"))
    return directory


def test_a_truncated_file_is_kept_and_marked_with_what_it_declared(made):
    stats = track_of(made / "truncated.mp3")
    match = re.fullmatch(r"decoded ([\d.]+) s of ([\d.]+) s declared", stats.decode_error)
    decoded, declared = float(match.group(1)), float(match.group(2))
    assert decoded == pytest.approx(decoded_secs(made / "truncated.mp3"), abs=0.1)
    assert declared == pytest.approx(8, abs=0.1)
    assert stats.samples / 16000 == pytest.approx(decoded, abs=0.1)  # What decoded is kept.


def test_garbage_in_the_middle_is_skipped_and_decoding_resumes(made):
    stats = track_of(made / "garbage.mp3")
    assert stats.samples / 16000 == pytest.approx(decoded_secs(made / "garbage.mp3"), abs=0.05)  # As FFmpeg's CLI.
    assert stats.samples / 16000 > 7.5 and 0 < stats.skipped_secs < 0.5 and stats.decode_error == ""


@pytest.mark.parametrize("name, seconds", [("concatenated.mp3", 14.0), ("chained.ogg", 9.0)])
def test_concatenated_and_chained_streams_decode_to_the_end(made, name, seconds):
    stats = track_of(made / name)
    assert stats.samples / 16000 == pytest.approx(seconds, abs=0.15)
    assert stats.decode_error == ""


def test_an_overlong_track_is_cut_and_says_so(made):
    stats = track_of(made / "hour.flac", max_track_secs=30, silence_threshold_db=float("-inf"))
    assert stats.samples == 30 * 16000 and stats.max_track_secs_reached and stats.windows == 60


# 6. Staging never writes outside its directory -------------------------------------------------------------------


def test_staging_refuses_names_that_climb_out(tmp_path):
    from trainer import storage  # noqa: PLC0415 (TensorFlow-free module, but the trainer's)

    source = tmp_path / "remote"
    source.mkdir()
    raw = {"format_version": 2, "sample_rate": 16000, "quantization_channels": 256, "window_samples": 16000,
           "hop_samples": 16000, "decoder": "pyav", "resampler": "soxr_hq", "silence_threshold_db": -60.0,
           "validation_fraction": 0.1, "encoding": "mu-law",
           "splits": {"train": {"files": ["../escaped.txt"], "windows": 1, "tracks": 1, "seconds": 1.0},
                      "validation": {"files": [], "windows": 0, "tracks": 0, "seconds": 0.0}},
           "runs": [{"run_id": "r", "tracks_file": "t.jsonl", "failures_file": "f.jsonl",
                     "accounting": {}}]}  # fmt: skip
    (source / contract.DATASET_FILE).write_text(json.dumps(raw))
    (tmp_path / "escaped.txt").write_text("outside")
    with pytest.raises(contract.ContractError, match="not a plain file name"):
        storage.stage_dataset(str(source), str(tmp_path / "staged" / "inner"))
    assert not (tmp_path / "staged" / "escaped.txt").exists()
    shutil.rmtree(tmp_path / "staged", ignore_errors=True)


# 7. Odd file types, odd names and odd samples in the input -------------------------------------------------------


def test_a_fifo_in_the_input_is_a_failure_line_not_a_hang(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(CLIPS["mp3_22k_mono"], inputs)
    os.mkfifo(inputs / "pipe.mp3")  # Opening it for reading would wait for a writer forever.
    os.mkfifo(tmp_path / "alone.mp3")
    output = tmp_path / "out"
    description = preprocess.run(
        [f"--output={output}", f"--input={inputs}", f"--input={tmp_path / 'alone.mp3'}", "--direct_num_workers=1",
         "--direct_running_mode=in_memory", "--sample_rate=8000", "--window_samples=4000", "--max_failure_fraction=1"]
    )  # fmt: skip
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (3, 1, 2)
    failures = sorted((os.path.basename(f["uri"]), f["stage"], f["error"]) for f in last_failures(output))
    assert failures == [("alone.mp3", "read", "not a regular file (a FIFO)"), ("pipe.mp3", "read",
                        "not a regular file (a FIFO)")]  # fmt: skip
    assert not (output / "lease.json").exists()


def test_symlink_loops_are_walked_once(tmp_path):
    from pipelines import sources

    inputs = tmp_path / "in"
    (inputs / "deep").mkdir(parents=True)
    shutil.copy(CLIPS["mp3_22k_mono"], inputs / "deep")
    for name in ("a", "b", "c"):  # Three loops: 3^depth paths if each link were followed until names grow too long.
        os.symlink(".", inputs / name)
    os.symlink("..", inputs / "deep" / "up")
    assert [os.path.basename(uri) for uri in sources.match_pattern(str(inputs))] == ["Nebula (22k mono).mp3"]


def test_names_that_are_not_utf8_and_broken_renders_end_in_the_dataset_or_as_failure_lines(tmp_path, capsys):
    from pipelines import sources, verify

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(CLIPS["mp3_22k_mono"], inputs)
    latin1 = os.path.join(os.fsencode(inputs), b"caf\xe9 \xff.mp3")  # Latin-1, as copied from an old Windows share.
    shutil.copy(CLIPS["mp3_44k"], latin1)
    with open(os.path.join(os.fsencode(inputs), b"\xe9chec.mp3"), "wb") as f:
        f.write(b"<!DOCTYPE html><html><body>Not found</body></html>\n" * 20)
    render = (0.5 * np.sin(np.arange(48000) * 0.05)).astype(np.float32)
    render[8000:12000] = np.nan
    (inputs / "broken render.wav").write_bytes(wav_bytes(render, format_tag=3, bits=32))
    output = tmp_path / "out"
    description = preprocess.run([f"--input={inputs}", f"--output={output}", "--direct_num_workers=1",
                                  "--direct_running_mode=in_memory", "--window_samples=8000"])  # fmt: skip
    printed = capsys.readouterr().out
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (4, 3, 1)
    assert accounting.tracks_truncated == 1 and "1 kept in part" in printed

    run = description.runs[-1]
    records = {}
    for name in (run.tracks_file, run.failures_file):
        with open(output / name, "rb") as f:
            records[name] = [json.loads(line.decode("utf-8")) for line in f]  # Strict UTF-8, valid JSON...
    json.dumps(records, ensure_ascii=False).encode("utf-8")  # ...holding no surrogate escapes either.
    tracks = {os.path.basename(t["uri"]): t for t in records[run.tracks_file]}
    assert set(tracks) == {"caf\\xe9 \\xff.mp3", "Nebula (22k mono).mp3", "broken render.wav"}
    assert tracks["caf\\xe9 \\xff.mp3"]["track_id"] == sources.track_id_for(os.fsdecode(latin1))  # Its own bytes.
    assert tracks["caf\\xe9 \\xff.mp3"]["windows"] > 0
    assert tracks["broken render.wav"]["nonfinite_secs"] == 0.25
    assert "non-finite samples" in tracks["broken render.wav"]["decode_error"]
    [failure] = records[run.failures_file]
    assert (os.path.basename(failure["uri"]), failure["stage"]) == ("\\xe9chec.mp3", "decode")
    assert f"{inputs}/\\xe9chec.mp3: decode: not a decodable audio file" in printed
    assert verify.main([str(output)]) == 0 and "sound (" in capsys.readouterr().out
