"""Where tracks come from: input patterns, list files, and opening a URI.

Local paths, `gs://` and `s3://` go through Beam's `FileSystems`, so every
filesystem Beam supports works the same way; `http(s)://` URLs are fetched
politely (`pipelines.fetch`) into a temporary file, bounded by a size limit,
that is deleted when the track's file object is closed.
"""

import hashlib
import io
import os
import re
import stat
import urllib.parse

from apache_beam.io.filesystems import FileSystems

from pipelines import contract, fetch
from pipelines.contract import STAGE_MATCH, STAGE_READ, TrackError

# The clips bundled with the package, processed when no --input is given.
PACKAGE_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# Their identity does not depend on where the package is installed.
_PACKAGE_IDENTITY = "package:pipelines/data/"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Extensions picked up when an input names a directory.
AUDIO_EXTENSIONS = (
    ".aac", ".aif", ".aiff", ".au", ".flac", ".m4a", ".mp2", ".mp3", ".mp4", ".oga", ".ogg",
    ".opus", ".wav", ".webm", ".wma",
)  # fmt: skip


def is_url(uri):
    """Whether a URI is an http(s) URL (the scheme in any case)."""
    return uri[:8].lower().startswith(("http://", "https://"))


def canonical_uri(uri):
    """One spelling per track: the form every input is converted to before it gets an id.

    Local paths become absolute with symlinks resolved (`os.path.realpath`);
    http(s) URLs are normalized as RFC 3986 section 6.2.2 says (scheme and
    host in lower case, default port dropped, empty path as "/", percent-
    encoding of unreserved characters decoded and hex digits in upper case,
    fragment dropped). Other URIs (gs://, s3://) are kept as given. A URL that
    cannot be parsed is kept as given; fetching it reports why.

    Returns:
      str.
    """
    if is_url(uri):
        return _normalize_url(uri)
    if contract.is_remote(uri):
        return uri
    return os.path.realpath(os.path.expanduser(uri))


def _normalize_url(url):
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    if parts.username is not None:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urllib.parse.urlunsplit(
        (scheme, netloc, _normalize_percent(parts.path or "/"), _normalize_percent(parts.query), "")
    )


def _normalize_percent(text):
    def one(match):
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", one, text)


def identity_for(uri):
    """What a track's id hashes: its canonical URI, or for a bundled clip its place in the package."""
    canonical = canonical_uri(uri)
    if canonical.startswith(os.path.realpath(PACKAGE_DATA_DIR) + os.sep):
        return _PACKAGE_IDENTITY + os.path.relpath(canonical, os.path.realpath(PACKAGE_DATA_DIR))
    return canonical


def track_id_for(uri):
    """Stable id of a track: the first 16 hex digits of SHA-256 of `identity_for(uri)` (str).

    The same file by any spelling of its path, or the same URL however
    written, gets the same id; a bundled clip gets the same id wherever the
    package is installed. The identity is hashed as UTF-8, except that a file
    name's bytes that are not UTF-8 (held as surrogate escapes, PEP 383) are
    hashed as the bytes they are, so such a file has an id of its own.
    """
    return hashlib.sha256(identity_for(uri).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def read_input_list(path):
    """Entries of an `@list.txt` file: one path or URL per line.

    Blank lines, surrounding whitespace and lines starting with '#' are ignored.

    Args:
      path: local path or any Beam filesystem URI.

    Returns:
      list of str.
    """
    if not contract.is_remote(path):
        path = os.path.expanduser(path)
        if os.path.exists(path) and not os.path.isfile(path):
            raise ValueError(f"--input @{path}: not a regular file")
    text = contract.read_bytes(path).decode("utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def expand_input_arguments(inputs):
    """Replaces each `@list.txt` argument by the entries of that file.

    Args:
      inputs: list of str, as given to --input.

    Returns:
      list of str patterns and URLs, in order, without duplicates.
    """
    patterns = []
    for item in inputs:
        item = item.strip()
        if not item:
            continue
        patterns.extend(read_input_list(item[1:]) if item.startswith("@") else [item])
    return list(dict.fromkeys(patterns))


def match_pattern(pattern):
    """Expands one input pattern to track URIs.

    A URL is returned normalized. A local path that exists is taken
    literally, even when its name holds glob characters (`[live] take*2?.mp3`);
    a local directory expands to the audio files under it (by extension,
    recursively). Anything else is matched with Beam's `FileSystems.match`
    (globs work on local, gs:// and s3:// paths; in Beam's globs `**` spans
    directories, so `dir/**.mp3` is every mp3 below dir). A leading ~ in a
    local pattern is the home directory. Local results are canonical
    (`canonical_uri`), so one file has one spelling.

    Args:
      pattern: str.

    Returns:
      sorted list of str URIs.

    Raises:
      TrackError: stage 'match' when nothing matches.
    """
    if is_url(pattern):
        return [canonical_uri(pattern)]
    if not contract.is_remote(pattern):
        pattern = os.path.expanduser(pattern)  # Globs are quoted, so the shell left ~ alone.
        if os.path.isfile(pattern):
            return [canonical_uri(pattern)]
        if os.path.isdir(pattern):
            return _audio_files_under(pattern)
    try:
        metadata = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError or filesystem-specific errors.
        raise TrackError(STAGE_MATCH, f"could not match {pattern!r}: {e}") from e
    uris = sorted({canonical_uri(m.path) for m in metadata})
    if not uris:
        raise TrackError(STAGE_MATCH, f"no file matches {pattern!r}")
    return uris


def _audio_files_under(directory):
    """Canonical paths of the audio files below a local directory (walked, so no name is read as a glob).

    Symlinks to directories are followed, but each real directory (device and
    inode) is walked once, so symlink loops end and two links to one directory
    do not double its work. Entries that are not regular files (FIFOs, devices)
    are returned too, so that opening them records why they are not audio.
    """
    uris, seen = set(), set()
    for root, subdirectories, names in os.walk(directory, followlinks=True):
        status = os.stat(root)
        if (status.st_dev, status.st_ino) in seen:
            subdirectories[:] = []  # Walked already, by another path.
            continue
        seen.add((status.st_dev, status.st_ino))
        uris.update(
            canonical_uri(os.path.join(root, name)) for name in names if name.lower().endswith(AUDIO_EXTENSIONS)
        )
    if not uris:
        raise TrackError(STAGE_MATCH, f"no audio file under {directory!r}")
    return sorted(uris)


def _check_regular_file(path):
    """Raises TrackError (stage 'read') unless a local path is a regular file (a FIFO or a device never ends)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise TrackError(STAGE_READ, f"could not open: {e}") from e
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise TrackError(STAGE_READ, f"not a regular file ({kind})")


def open_uri(uri, fetcher, allow_private=True):
    """Opens a track for reading.

    Args:
      uri: local path, any Beam filesystem URI, or http(s) URL.
      fetcher: `fetch.Fetcher` for URLs (address rules, robots.txt, per-host
        rate, retries, size, time and rate limits); the body must look like
        audio (`fetch.check_audio_response`).
      allow_private: whether a URL (and its redirects) may reach loopback and
        private addresses: true for URLs the user gave, the listing's zone for
        scraped ones.

    Returns:
      (readable, seekable binary file object the caller closes, the final URI
      after redirects). A download's file object is its temporary file
      (`fetch.Response.data`): closing it deletes the file.

    Raises:
      TrackError: stage 'read' when the file cannot be opened or downloaded,
        is empty, or the download is not audio or is refused.
    """
    if is_url(uri):
        response = fetcher.get(uri, allow_private=allow_private or None)
        try:
            fetch.check_audio_response(response)
        except fetch.FetchError:
            response.close()
            raise
        return response.data, response.url
    if not contract.is_remote(uri):
        _check_regular_file(uri)
    try:
        fileobj = contract.open_binary(uri)
    except Exception as e:  # Each filesystem raises its own errors.
        raise TrackError(STAGE_READ, f"could not open: {e}") from e
    if fileobj.seek(0, io.SEEK_END) == 0:
        fileobj.close()
        raise TrackError(STAGE_READ, "empty file (0 bytes)")
    fileobj.seek(0)
    return fileobj, uri
