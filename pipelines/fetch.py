"""A polite HTTP client for scraping listing pages and downloading tracks.

- robots.txt is obeyed (Python's `urllib.robotparser`, fetched through this client);
- one request rate per host, shared by every request and thread in a worker
  process (`HostThrottle`), including the pause a 429/503 `Retry-After` asks for;
- retries with exponential backoff and jitter on timeouts, connection errors,
  429 and 5xx ("equal jitter": half the delay fixed, half random; M. Brooker,
  "Exponential Backoff And Jitter", AWS Architecture Blog, 2015);
- redirects followed by hand (at most 5), so each hop is checked against
  robots.txt and throttled like any request;
- connect and read timeouts, a descriptive User-Agent, a maximum body size.

Built on requests; every failure raises `FetchError` with the URL, the HTTP
status (if any) and a reason.
"""

import dataclasses
import email.utils
import random
import threading
import time
import urllib.parse
import urllib.robotparser

from pipelines.contract import STAGE_READ, TrackError

DEFAULT_USER_AGENT = "wavenet-music-toolkit/0.1 (dataset preprocessing; obeys robots.txt)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class FetchError(TrackError):
    """A URL could not be fetched; `status` is the last HTTP status or None."""

    def __init__(self, url, reason, status=None, stage=STAGE_READ):
        super().__init__(stage, reason, status)
        self.url = url


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How politely and how patiently to fetch.

    Attributes:
      user_agent: User-Agent header, also the agent matched in robots.txt.
      requests_per_second: per host, shared by all requests in a process.
      max_retries: retries after the first attempt.
      backoff_secs: delay before the first retry; doubles each retry.
      max_backoff_secs: cap on one delay, Retry-After included.
      connect_timeout_secs, read_timeout_secs: per request.
      max_bytes: largest accepted body.
      obey_robots: check robots.txt before each request.
    """

    user_agent: str = DEFAULT_USER_AGENT
    requests_per_second: float = 2.0
    max_retries: int = 4
    backoff_secs: float = 1.0
    max_backoff_secs: float = 120.0
    connect_timeout_secs: float = 10.0
    read_timeout_secs: float = 60.0
    max_bytes: int = 1 << 30
    obey_robots: bool = True


@dataclasses.dataclass(frozen=True)
class Response:
    """A fetched body: `url` is the final URL after redirects."""

    url: str
    status: int
    content_type: str
    body: bytes


class HostThrottle:
    """Spaces requests to each host; thread-safe, one instance per process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next_allowed = {}  # host -> time.monotonic() of the next allowed request

    def wait(self, host, interval_secs):
        """Blocks until a request to `host` is allowed, and books the next slot."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_allowed.get(host, now))
            self._next_allowed[host] = start + interval_secs
        if start > now:
            time.sleep(start - now)

    def block_until(self, host, when):
        """No request to `host` before `when` (time.monotonic()), as Retry-After asks."""
        with self._lock:
            self._next_allowed[host] = max(self._next_allowed.get(host, 0.0), when)


# Shared by every Fetcher in a worker process, so the rate is per host, not per DoFn.
_THROTTLE = HostThrottle()


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Fetcher:
    """Fetches URLs politely; one per DoFn instance (sessions are not picklable)."""

    def __init__(self, config=FetchConfig(), throttle=None):
        import requests

        self.config = config
        self._requests = requests
        self._session = requests.Session()
        self._session.headers["User-Agent"] = config.user_agent
        self._throttle = throttle or _THROTTLE
        self._robots = {}  # origin -> RobotFileParser
        self._robots_lock = threading.Lock()

    def close(self):
        self._session.close()

    def allowed(self, url):
        """Whether robots.txt of the URL's origin lets our User-Agent fetch it."""
        if not self.config.obey_robots:
            return True
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            robots = self._robots.get(origin)
        if robots is None:
            robots = self._load_robots(origin)
            with self._robots_lock:
                self._robots[origin] = robots
        return robots.can_fetch(self.config.user_agent, url)

    def _load_robots(self, origin):
        robots = urllib.robotparser.RobotFileParser(f"{origin}/robots.txt")
        try:
            response = self._fetch(f"{origin}/robots.txt", self.config.max_bytes, check_robots=False)
            robots.parse(response.body.decode("utf-8", "replace").splitlines())
        except FetchError as e:
            # RFC 9309 section 2.3.1: a missing robots.txt (4xx) allows everything;
            # an unreachable one (5xx, network) means assume complete disallow.
            if e.status is not None and 400 <= e.status < 500:
                robots.allow_all = True
            else:
                robots.disallow_all = True
        return robots

    def get(self, url, max_bytes=None):
        """GETs a URL: robots.txt, throttle, retries, redirects, size limit.

        Args:
          url: http(s) URL.
          max_bytes: body size limit; defaults to config.max_bytes.

        Returns:
          Response.

        Raises:
          FetchError: disallowed by robots.txt, HTTP error, too large, or still
            failing after the retries.
        """
        return self._fetch(url, max_bytes or self.config.max_bytes, check_robots=True)

    def _fetch(self, url, max_bytes, check_robots):
        requests = self._requests
        config = self.config
        redirects = 0
        attempt = 0
        while True:
            if check_robots and not self.allowed(url):
                raise FetchError(url, "disallowed by robots.txt")
            host = urllib.parse.urlsplit(url).netloc
            self._throttle.wait(host, 1.0 / config.requests_per_second)
            try:
                response = self._session.get(
                    url,
                    stream=True,
                    allow_redirects=False,
                    timeout=(config.connect_timeout_secs, config.read_timeout_secs),
                )
            except (requests.Timeout, requests.ConnectionError) as e:
                reason, status, retry_after = f"{type(e).__name__}: {e}", None, None
            else:
                with response:
                    status = response.status_code
                    if status in REDIRECT_STATUSES and "Location" in response.headers:
                        redirects += 1
                        if redirects > MAX_REDIRECTS:
                            raise FetchError(url, f"more than {MAX_REDIRECTS} redirects", status)
                        url = urllib.parse.urljoin(url, response.headers["Location"])
                        continue
                    if status == 200:
                        try:
                            body = self._read_body(response, url, max_bytes)
                        except requests.RequestException as e:  # The connection broke mid-body.
                            body, reason, status, retry_after = None, f"{type(e).__name__}: {e}", None, None
                        if body is not None:
                            content_type = response.headers.get("Content-Type", "")
                            return Response(url=url, status=200, content_type=content_type, body=body)
                    else:
                        reason = f"HTTP {status} {response.reason}"
                        if status not in RETRY_STATUSES:
                            raise FetchError(url, reason, status)
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= config.max_retries:
                raise FetchError(url, f"{reason} (gave up after {attempt + 1} attempts)", status)
            delay = config.backoff_secs * 2**attempt
            delay = delay / 2 + random.uniform(0, delay / 2)
            if retry_after is not None:
                delay = max(delay, retry_after)
            delay = min(delay, config.max_backoff_secs)
            # The whole host waits, not just this request.
            self._throttle.block_until(host, time.monotonic() + delay)
            attempt += 1

    @staticmethod
    def _read_body(response, url, max_bytes):
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(url, f"body of {declared} bytes is larger than the limit of {max_bytes}", 200)
        body = bytearray()
        for chunk in response.iter_content(chunk_size=1 << 16):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(url, f"body larger than the limit of {max_bytes} bytes", 200)
        return bytes(body)


def check_audio_response(response):
    """Rejects bodies that cannot be audio before they reach a decoder.

    Raises:
      FetchError: for an empty body, an HTML/text/JSON content type, or a body
        that starts like an HTML document (error pages served as .mp3).
    """
    if not response.body:
        raise FetchError(response.url, "empty body", response.status)
    content_type = response.content_type.split(";")[0].strip().lower()
    if content_type.startswith("text/") or content_type in ("application/json", "application/xhtml+xml"):
        raise FetchError(response.url, f"not audio: Content-Type {content_type}", response.status)
    head = response.body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        raise FetchError(response.url, "not audio: the body is an HTML page", response.status)
