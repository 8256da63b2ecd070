"""A polite, guarded HTTP client for scraping listing pages and downloading tracks.

Politeness:
- robots.txt is obeyed (Python's `urllib.robotparser`, fetched through this client);
- one request rate per host, shared by every request and thread in a worker
  process (`HostThrottle`), including the pause a 429/503 `Retry-After` asks for;
- retries with exponential backoff and jitter on timeouts, connection errors,
  429 and 5xx ("equal jitter": half the delay fixed, half random; M. Brooker,
  "Exponential Backoff And Jitter", AWS Architecture Blog, 2015);
- redirects followed by hand (at most 5), so each hop is checked like any request.

Guards, on every hop:
- only http and https;
- trust zones (`address_refusal`): link-local and cloud metadata addresses
  are always refused; loopback, private and other special addresses unless
  the caller allows them (the listing itself is on one, or the user said so);
  the host name is resolved once, every address it has is checked, and the
  connection goes to a checked address (`compat.pinned_http_adapter`), so DNS
  cannot answer differently between the check and the connection;
- a size limit, an overall deadline and a minimum average rate per download
  (as curl's --max-time, --speed-limit and --speed-time), counted on the body
  as decoded (gzip and deflate Content-Encoding inflated); the body streams
  into a temporary file (`Response.data`), so a download's memory does not
  grow with its size.

Built on requests; every failure raises `FetchError` with the URL, the HTTP
status (if any) and a reason.
"""

import dataclasses
import email.utils
import io
import ipaddress
import random
import re
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.robotparser

from pipelines import compat
from pipelines.contract import STAGE_READ, TrackError

DEFAULT_USER_AGENT = "wavenet-music-toolkit/0.1 (dataset preprocessing; obeys robots.txt)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
SCHEMES = ("http", "https")
# The trust zone of a URL: "private" lets it (and its redirects) reach loopback and private addresses
# (URLs the user gave, tracks of a listing that is itself on such an address); "public" does not.
ZONE_PRIVATE = "private"
ZONE_PUBLIC = "public"
# Cloud metadata services, by name and by address (the 169.254.0.0/16 ones are link-local anyway).
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})  # fmt: skip
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
# A body up to this size stays in memory (pages, robots.txt, short clips); a larger one moves to a temporary file.
SPOOL_BYTES = 1 << 20
# Bytes asked of the connection at a time, after Content-Encoding is decoded (urllib3 inflates at most this much).
READ_BYTES = 1 << 16


class FetchError(TrackError):
    """A URL could not be fetched; `status` is the last HTTP status or None."""

    def __init__(self, url, reason, status=None, stage=STAGE_READ):
        super().__init__(stage, reason, status)
        self.url = url


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How politely, patiently and carefully to fetch.

    Attributes:
      user_agent: User-Agent header, also the agent matched in robots.txt.
      requests_per_second: per host, shared by all requests in a process.
      max_retries: retries after the first attempt.
      backoff_secs: delay before the first retry; doubles each retry.
      max_backoff_secs: cap on one delay, Retry-After included.
      connect_timeout_secs, read_timeout_secs: per connection and per read.
      max_bytes: largest accepted download.
      max_page_bytes: largest accepted listing page or robots.txt.
      deadline_secs: longest a download may take, end to end.
      min_bytes_per_sec, min_rate_window_secs: a download whose average rate
        over the last `min_rate_window_secs` falls below `min_bytes_per_sec` is
        cut (curl's --speed-limit and --speed-time).
      obey_robots: check robots.txt before each request.
      allow_private_addresses: loopback, private and other non-public
        addresses may be fetched everywhere (link-local and metadata never).
    """

    user_agent: str = DEFAULT_USER_AGENT
    requests_per_second: float = 2.0
    max_retries: int = 4
    backoff_secs: float = 1.0
    max_backoff_secs: float = 120.0
    connect_timeout_secs: float = 10.0
    read_timeout_secs: float = 60.0
    max_bytes: int = 1 << 30
    max_page_bytes: int = 8 << 20
    deadline_secs: float = 3600.0
    min_bytes_per_sec: float = 1024.0
    min_rate_window_secs: float = 60.0
    obey_robots: bool = True
    allow_private_addresses: bool = False


@dataclasses.dataclass(frozen=True)
class Response:
    """A fetched body; close it (or use `with`) when done, which deletes its temporary file.

    Attributes:
      url: the final URL after redirects.
      status: HTTP status (200).
      content_type: the Content-Type header.
      data: readable, seekable binary file object holding the body (decoded),
        positioned at 0: a `tempfile.SpooledTemporaryFile`, in memory up to
        SPOOL_BYTES, past that a file in the temporary directory (TMPDIR) that
        has no name on disk, so it is gone when closed or when the process dies.
    """

    url: str
    status: int
    content_type: str
    data: io.IOBase

    @property
    def body(self):
        """The whole body as bytes (for pages and robots.txt, which have their own small limit)."""
        self.data.seek(0)
        return self.data.read()

    @property
    def size(self):
        """The body's size in bytes."""
        position = self.data.tell()
        size = self.data.seek(0, io.SEEK_END)
        self.data.seek(position)
        return size

    def head(self, n=512):
        """The first n bytes; the position in `data` is kept."""
        position = self.data.tell()
        self.data.seek(0)
        head = self.data.read(n)
        self.data.seek(position)
        return head

    def close(self):
        self.data.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def system_resolver(host, port):
    """Addresses of a host name from the system resolver (every one, IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_refusal(address, allow_private):
    """Why an address must not be fetched, or None when it may be.

    Link-local (169.254.0.0/16, fe80::/10) and cloud metadata addresses are
    always refused; loopback, private, shared, reserved, multicast and
    unspecified addresses (anything not globally routable) unless allow_private.
    IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.

    Args:
      address: IP address str.
      allow_private: whether non-public addresses are allowed.

    Returns:
      str reason, or None.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if ip.is_link_local:
        return f"{address} is a link-local address"
    if not ip.is_global and not allow_private:
        return f"{address} is not a public address (loopback, private or reserved)"
    return None


def is_private_host(url, resolver=system_resolver):
    """Whether a URL's host resolves to a non-public address (a listing on a LAN or on this machine).

    A host that does not resolve counts as public: nothing is unlocked by it.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        addresses = resolver(parts.hostname or "", parts.port or 80)
    except (OSError, ValueError):
        return False
    return any(address_refusal(a, allow_private=False) and not address_refusal(a, True) for a in addresses)


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
    if re.fullmatch(r"[0-9]+", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Fetcher:
    """Fetches URLs politely and within the trust zones; one per DoFn instance (sessions are not picklable)."""

    def __init__(self, config=FetchConfig(), throttle=None, resolver=system_resolver):
        import requests

        self.config = config
        self._requests = requests
        self.resolver = resolver
        self._pins = {}  # (host, port) -> the checked address connections go to
        self._pins_lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False  # No proxy from the environment: connections go where we checked.
        self._session.headers["User-Agent"] = config.user_agent
        adapter = compat.pinned_http_adapter(self._pinned_address)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._throttle = throttle or _THROTTLE
        self._robots = {}  # origin -> RobotFileParser
        self._robots_lock = threading.Lock()

    def close(self):
        self._session.close()

    def _pinned_address(self, host, port):
        with self._pins_lock:
            address = self._pins.get((host, port))
        if address is None:  # Never reached through `get`, which checks and pins first.
            raise OSError(f"refusing to connect to {host}:{port}: its address was not checked")
        return address

    def check_url(self, url, allow_private):
        """Checks a URL against the scheme and address rules and pins its host's address.

        Args:
          url: the URL about to be requested.
          allow_private: whether non-public addresses are allowed.

        Raises:
          FetchError: another scheme, a metadata host, an address refused, or a
            host that does not resolve; before any connection is made.
        """
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as e:
            raise FetchError(url, f"malformed URL: {e}") from None
        if parts.scheme.lower() not in SCHEMES:
            raise FetchError(url, f"refused: scheme {parts.scheme or 'none'!r} (only http and https are fetched)")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise FetchError(url, "malformed URL: no host")
        if host in METADATA_HOSTS:
            raise FetchError(url, f"refused: {host} is a cloud metadata host")
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as e:
            raise FetchError(url, f"cannot resolve {host}: {e}") from None
        if not addresses:
            raise FetchError(url, f"cannot resolve {host}: no address")
        for address in addresses:
            reason = address_refusal(address, allow_private)
            if reason:
                raise FetchError(url, f"refused: {reason}" if host == address else f"refused: {host} is at {reason}")
        with self._pins_lock:
            self._pins[(host, port)] = addresses[0]

    def allowed(self, url, allow_private):
        """Whether robots.txt of the URL's origin lets our User-Agent fetch it."""
        if not self.config.obey_robots:
            return True
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            robots = self._robots.get(origin)
        if robots is None:
            robots = self._load_robots(origin, allow_private)
            with self._robots_lock:
                self._robots[origin] = robots
        return robots.can_fetch(self.config.user_agent, url)

    def _load_robots(self, origin, allow_private):
        robots = urllib.robotparser.RobotFileParser(f"{origin}/robots.txt")
        try:
            with self._fetch(f"{origin}/robots.txt", self.config.max_page_bytes, False, allow_private) as response:
                robots.parse(response.body.decode("utf-8", "replace").splitlines())
        except FetchError as e:
            # RFC 9309 section 2.3.1: a missing robots.txt (4xx) allows everything;
            # an unreachable one (5xx, network) means assume complete disallow.
            if e.status is not None and 400 <= e.status < 500:
                robots.allow_all = True
            else:
                robots.disallow_all = True
        return robots

    def get(self, url, max_bytes=None, allow_private=None):
        """GETs a URL: address rules, robots.txt, throttle, retries, redirects, limits.

        Args:
          url: http(s) URL.
          max_bytes: body size limit; defaults to config.max_bytes.
          allow_private: allow non-public addresses; None takes config.allow_private_addresses.

        Returns:
          Response, which the caller closes.

        Raises:
          FetchError: refused by the address rules, disallowed by robots.txt,
            HTTP error, too large, too slow, or still failing after the retries.
        """
        if allow_private is None:
            allow_private = self.config.allow_private_addresses
        return self._fetch(url, max_bytes or self.config.max_bytes, True, allow_private)

    def get_page(self, url, allow_private=None):
        """GETs a listing page, limited to config.max_page_bytes; a Response the caller closes."""
        return self.get(url, self.config.max_page_bytes, allow_private)

    def _fetch(self, url, max_bytes, check_robots, allow_private):
        requests = self._requests
        config = self.config
        redirects = 0
        attempt = 0
        while True:
            self.check_url(url, allow_private)
            if check_robots and not self.allowed(url, allow_private):
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
            except requests.RequestException as e:  # Invalid URL, too many headers, ...: not worth a retry.
                raise FetchError(url, f"{type(e).__name__}: {e}") from None
            else:
                with response:
                    status = response.status_code
                    if status in REDIRECT_STATUSES and "Location" in response.headers:
                        redirects += 1
                        if redirects > MAX_REDIRECTS:
                            raise FetchError(url, f"more than {MAX_REDIRECTS} redirects", status)
                        try:
                            url = urllib.parse.urljoin(url, response.headers["Location"])
                        except ValueError as e:
                            raise FetchError(url, f"malformed redirect Location: {e}", status) from None
                        continue
                    if status == 200:
                        try:
                            data = self._read_body(response, url, max_bytes)
                        except (requests.RequestException, OSError) as e:  # The connection broke mid-body.
                            data, reason, status, retry_after = None, f"{type(e).__name__}: {e}", None, None
                        if data is not None:
                            content_type = response.headers.get("Content-Type", "")
                            return Response(url=url, status=200, content_type=content_type, data=data)
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

    def _read_body(self, response, url, max_bytes):
        """The body, decoded, in a temporary file (`Response.data`), within the size limit, the deadline and the rate.

        The file is closed (and so deleted) when the body is refused or the connection breaks.
        """
        declared = response.headers.get("Content-Length", "")
        if re.fullmatch(r"[0-9]+", declared.strip()) and int(declared) > max_bytes:
            raise FetchError(url, f"body of {int(declared)} bytes is larger than the limit of {max_bytes}", 200)
        data = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        try:
            self._copy_body(response.raw, data, url, max_bytes)
        except BaseException:
            data.close()
            raise
        data.seek(0)
        return data

    def _copy_body(self, raw, data, url, max_bytes):
        """Copies the decoded body from `raw` (urllib3's response) into `data`; FetchError past a limit."""
        config = self.config
        started = time.monotonic()
        window = [(started, 0)]  # (time, bytes so far) samples for the rate over the last window
        while True:
            # Whatever has arrived (a trickle is seen as one), inflated to at most READ_BYTES (a gzip bomb too).
            chunk = raw.read1(READ_BYTES, decode_content=True)
            if not chunk:
                break
            data.write(chunk)
            now, total = time.monotonic(), data.tell()
            if total > max_bytes:
                raise FetchError(url, f"body larger than the limit of {max_bytes} bytes", 200)
            if now - started > config.deadline_secs:
                raise FetchError(url, f"download took longer than {config.deadline_secs:g} s ({total} bytes)", 200)
            window.append((now, total))
            while len(window) > 1 and now - window[1][0] >= config.min_rate_window_secs:
                window.pop(0)
            since, then = window[0]
            if now - since >= config.min_rate_window_secs and (total - then) / (now - since) < config.min_bytes_per_sec:
                raise FetchError(
                    url,
                    f"download slower than {config.min_bytes_per_sec:g} bytes/s over "
                    f"{config.min_rate_window_secs:g} s ({total} bytes in {now - started:.0f} s)",
                    200,
                )


def check_audio_response(response):
    """Rejects bodies that cannot be audio before they reach a decoder.

    Raises:
      FetchError: for an empty body, an HTML/text/JSON content type, or a body
        that starts like an HTML document (error pages served as .mp3).
    """
    if not response.size:
        raise FetchError(response.url, "empty body", response.status)
    content_type = response.content_type.split(";")[0].strip().lower()
    if content_type.startswith("text/") or content_type in ("application/json", "application/xhtml+xml"):
        raise FetchError(response.url, f"not audio: Content-Type {content_type}", response.status)
    head = response.head().lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        raise FetchError(response.url, "not audio: the body is an HTML page", response.status)


def add_arguments(parser, downloads=True):
    """The fetch options (politeness, trust, limits): the pipeline's and, without downloads, the scrape CLI's.

    Args:
      parser: an argparse parser or group.
      downloads: also --max_download_bytes (the scrape CLI downloads no audio: its pages have their own cap).
    """
    defaults = FetchConfig()
    parser.add_argument(
        "--requests_per_second",
        type=float,
        default=defaults.requests_per_second,
        help="Requests per second to each host, shared by all requests in a worker. Default: %(default)s.",
    )
    parser.add_argument(
        "--max_retries",
        type=int,
        default=defaults.max_retries,
        help="Retries on timeouts, connection errors, 429 and 5xx, with exponential backoff and "
        "jitter, honouring Retry-After. Default: %(default)s.",
    )
    parser.add_argument(
        "--http_user_agent",
        default=defaults.user_agent,
        help="User-Agent header of our HTTP requests, also the agent matched in robots.txt. Default: %(default)r.",
    )
    parser.add_argument(
        "--allow_private_addresses",
        action="store_true",
        help="Let scraped URLs and redirects reach loopback and private addresses even when the listing is on a "
        "public one (never link-local or cloud metadata addresses). Without it, only tracks of a listing that "
        "is itself on such an address, and URLs given with --input, may. Default: off.",
    )
    parser.add_argument(
        "--download_deadline_secs",
        type=float,
        default=defaults.deadline_secs,
        help="Longest one download may take, end to end. Default: %(default)s.",
    )
    parser.add_argument(
        "--min_download_bytes_per_sec",
        type=float,
        default=defaults.min_bytes_per_sec,
        help=f"A download whose average rate over the last {defaults.min_rate_window_secs:g} s is below this is cut "
        "(a server trickling bytes cannot stall a worker). Default: %(default)s.",
    )
    if downloads:
        parser.add_argument(
            "--max_download_bytes",
            type=int,
            default=defaults.max_bytes,
            help="Largest accepted download for http(s) inputs and scraped tracks, in bytes. "
            f"Default: {defaults.max_bytes / 2**30:g} GiB.",
        )


def config_from_options(args):
    """The FetchConfig of parsed options (`add_arguments`)."""
    return dataclasses.replace(
        FetchConfig(),
        requests_per_second=args.requests_per_second,
        max_retries=args.max_retries,
        user_agent=args.http_user_agent,
        allow_private_addresses=args.allow_private_addresses,
        deadline_secs=args.download_deadline_secs,
        min_bytes_per_sec=args.min_download_bytes_per_sec,
        **({"max_bytes": args.max_download_bytes} if getattr(args, "max_download_bytes", None) else {}),
    )
