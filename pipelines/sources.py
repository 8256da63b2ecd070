"""Where tracks come from: input patterns, list files, and opening a URI.

Local paths, `gs://` and `s3://` go through Beam's `FileSystems`, so every
filesystem Beam supports works the same way; `http(s)://` URLs are fetched
politely (`pipelines.fetch`) into memory, bounded by a size limit, with no
temporary files.
"""

import hashlib
import io
import os

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import fetch
from pipelines.contract import STAGE_MATCH, STAGE_READ, TrackError

# Extensions picked up when an input names a directory.
AUDIO_EXTENSIONS = (
    ".aac", ".aif", ".aiff", ".au", ".flac", ".m4a", ".mp2", ".mp3", ".mp4", ".oga", ".ogg",
    ".opus", ".wav", ".webm", ".wma",
)  # fmt: skip


def is_url(uri):
    return uri.startswith(("http://", "https://"))


def track_id_for(uri):
    """Stable id of a track: the first 16 hex digits of SHA-256 of its URI (str)."""
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]


def read_input_list(path):
    """Entries of an `@list.txt` file: one path or URL per line.

    Blank lines, surrounding whitespace and lines starting with '#' are ignored.

    Args:
      path: local path or any Beam filesystem URI.

    Returns:
      list of str.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        text = f.read().decode("utf-8-sig")
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

    A URL is returned as is. A local directory expands to the audio files
    under it (by extension, recursively). Anything else is matched with Beam's
    `FileSystems.match` (globs work on local, gs:// and s3:// paths; in Beam's
    globs `**` spans directories, so `dir/**.mp3` is every mp3 below dir). A
    leading ~ in a local pattern is the home directory.

    Args:
      pattern: str.

    Returns:
      sorted list of str URIs.

    Raises:
      TrackError: stage 'match' when nothing matches.
    """
    if is_url(pattern):
        return [pattern]
    if "://" not in pattern:
        pattern = os.path.expanduser(pattern)  # Globs are quoted, so the shell left ~ alone.
    only_audio = os.path.isdir(pattern)
    glob = os.path.join(pattern, "**") if only_audio else pattern
    try:
        metadata = FileSystems.match([glob])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError or filesystem-specific errors.
        raise TrackError(STAGE_MATCH, f"could not match {pattern!r}: {e}") from e
    uris = sorted(m.path for m in metadata if not only_audio or m.path.lower().endswith(AUDIO_EXTENSIONS))
    if not uris:
        raise TrackError(STAGE_MATCH, f"no file matches {pattern!r}")
    return uris


def open_uri(uri, fetcher):
    """Opens a track for reading.

    Args:
      uri: local path, any Beam filesystem URI, or http(s) URL.
      fetcher: `fetch.Fetcher` for URLs (robots.txt, per-host rate, retries,
        size limit); the body must look like audio (`fetch.check_audio_response`).

    Returns:
      readable, seekable binary file object (the caller closes it).

    Raises:
      TrackError: stage 'read' when the file cannot be opened or downloaded,
        is empty, or the download is not audio.
    """
    if is_url(uri):
        response = fetcher.get(uri)
        fetch.check_audio_response(response)
        fileobj = io.BytesIO(response.body)
    else:
        try:
            fileobj = FileSystems.open(
                uri, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
            )
        except Exception as e:  # Each filesystem raises its own errors.
            raise TrackError(STAGE_READ, f"could not open: {e}") from e
    if fileobj.seek(0, io.SEEK_END) == 0:
        fileobj.close()
        raise TrackError(STAGE_READ, "empty file (0 bytes)")
    fileobj.seek(0)
    return fileobj
