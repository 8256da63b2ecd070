import io
import threading
import time

import pytest

from pipelines import fetch

# The test servers are on the loopback address, which a user allows explicitly.
FAST = fetch.FetchConfig(requests_per_second=50, backoff_secs=0.05, max_retries=2, allow_private_addresses=True)


def test_retry_after_accepts_seconds_and_http_dates():
    assert fetch.parse_retry_after("7") == 7.0
    assert fetch.parse_retry_after("Sat, 21 Nov 2026 12:00:30 GMT", now=1795262400.0) == pytest.approx(30.0)
    assert fetch.parse_retry_after("soon") is None
    assert fetch.parse_retry_after(None) is None


def test_robots_txt_disallowed_path_is_never_requested(music_site):
    fetcher = fetch.Fetcher(FAST)
    with pytest.raises(fetch.FetchError, match="disallowed by robots.txt"):
        fetcher.get(f"{music_site.base_url}/private/secret.mp3")
    assert [path for _, path, _ in music_site.requests] == ["/robots.txt"]


def test_redirect_is_followed(music_site):
    with fetch.Fetcher(FAST).get(f"{music_site.base_url}/files/old-nebula.mp3") as response:
        assert response.url.endswith("/files/Nebula%20(22k%20mono).mp3")
        assert response.status == 200 and len(response.body) > 10000


def test_429_blocks_the_host_until_retry_after(music_site):
    fetcher = fetch.Fetcher(FAST)
    with fetcher.get(f"{music_site.base_url}/slow/Deprecation.flac") as response:
        assert response.status == 200
    retried = [t for t, path, _ in music_site.requests if path == "/slow/Deprecation.flac"]
    assert len(retried) == 2
    assert retried[1] - music_site.throttled_at >= music_site.RETRY_AFTER_SECS - 0.01


def test_client_errors_are_not_retried_and_keep_their_status(music_site):
    with pytest.raises(fetch.FetchError) as raised:
        fetch.Fetcher(FAST).get(f"{music_site.base_url}/files/missing.mp3")
    assert raised.value.status == 404 and "HTTP 404" in str(raised.value)
    assert sum(path == "/files/missing.mp3" for _, path, _ in music_site.requests) == 1


def test_requests_carry_the_user_agent(music_site):
    agent = fetch.FetchConfig(user_agent="test-agent/1.0", allow_private_addresses=True)
    fetch.Fetcher(agent).get(f"{music_site.base_url}/genre/Ambient/").close()
    assert {agent for _, _, agent in music_site.requests} == {"test-agent/1.0"}


def test_unreachable_host_is_retried_then_reported():
    config = fetch.FetchConfig(backoff_secs=0.01, max_retries=2, obey_robots=False, connect_timeout_secs=1,
                               allow_private_addresses=True)  # fmt: skip
    with pytest.raises(fetch.FetchError, match="gave up after 3 attempts") as raised:
        fetch.Fetcher(config).get("http://127.0.0.1:9/track.mp3")  # Port 9 (discard) refuses.
    assert raised.value.status is None


def test_host_throttle_spaces_requests_across_threads():
    throttle = fetch.HostThrottle()
    times = []

    def request():
        throttle.wait("example.org", 0.05)
        times.append(time.monotonic())

    threads = [threading.Thread(target=request) for _ in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each request goes at its booked slot or later (a thread may run late, never early), so the k-th to go went
    # at least k intervals after the first slot, however the threads were scheduled.
    assert all(t >= started + k * 0.05 - 1e-6 for k, t in enumerate(sorted(times)))


@pytest.mark.parametrize(
    "content_type, body, reason",
    [
        ("audio/mpeg", b"", "empty body"),
        ("text/html; charset=utf-8", b"ID3....", "Content-Type text/html"),
        ("audio/mpeg", b"  <!DOCTYPE html><html>429</html>", "body is an HTML page"),
    ],
    ids=["empty", "html-content-type", "html-body"],
)
def test_bodies_that_cannot_be_audio_are_rejected(content_type, body, reason):
    response = fetch.Response(url="http://x/a.mp3", status=200, content_type=content_type, data=io.BytesIO(body))
    with pytest.raises(fetch.FetchError, match=reason):
        fetch.check_audio_response(response)
