"""Files through Beam's filesystems (local, gs://, s3://), atomic replacement included: the one home of that I/O.

Beam is imported when first used, so importing the contract stays cheap. Every
function here reaches Beam through `_filesystems`, which makes sure this
process's storage settings are in force (`pipelines.contract.storage`).
"""

import concurrent.futures
import contextlib
import errno
import json
import os
import posixpath
import secrets

from pipelines.contract.checks import ContractError
from pipelines.contract.commands import make_directories
from pipelines.contract.names import temporary_name

# Concurrent transfers: a store serves each request at a bounded rate, so throughput grows with requests in flight
# (BENCHMARKS.md, "Storage"). At most boto3's connection pool (10 per client, which Beam's S3 filesystem shares):
# more threads than connections open and discard connections, with a warning each time.
TRANSFER_THREADS = 8


def is_remote(path):
    """Whether `path` names a Beam filesystem other than local disk (gs://, s3://, ...)."""
    return "://" in path


def _filesystems():
    """Beam's FileSystems, with this process's storage settings in force."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.contract import storage

    storage.ensure_configured()
    return FileSystems


def exists(path):
    """Whether a file (or object) exists at `path`, on any Beam filesystem."""
    return _filesystems().exists(path)


def match(pattern):
    """Sorted paths matching a glob on any Beam filesystem (`**` crosses directories); [] when none."""
    return sorted(m.path for m in _filesystems().match([pattern])[0].metadata_list)


def delete(paths):
    """Deletes files (objects) on any Beam filesystem."""
    if paths:
        _filesystems().delete(list(paths))


def directory_name(path, default="dataset"):
    """A directory's own name, however the path to it is spelled (`out/`, `.`, `gs://b/out`); `default` when it
    has none (a bucket's root)."""
    path = path if is_remote(path) else os.path.abspath(path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return default if not name or name.endswith(":") else name


def join(directory, *names):
    """`directory`/`names` on local disk or any Beam filesystem."""
    return posixpath.join(directory, *names) if is_remote(directory) else os.path.join(directory, *names)


def open_binary(path):
    """A readable binary file object on any Beam filesystem, never decompressed (the caller closes it).

    Raises:
      whatever the filesystem raises for a path it cannot open (FileNotFoundError, BeamIOError, ...).
    """
    from apache_beam.io.filesystem import CompressionTypes

    return _filesystems().open(path, "application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED)


def copy(source, destination):
    """Copies one file between any two Beam filesystems, streaming (local directories are created).

    The copy is not atomic: for staging and mirroring, whose readers wait for it to end.
    """
    import shutil

    from apache_beam.io.filesystem import CompressionTypes

    if not is_remote(destination):
        make_directories(os.path.dirname(os.path.abspath(destination)))
    with open_binary(source) as src:
        with _filesystems().create(destination, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def copy_all(pairs, threads=TRANSFER_THREADS):
    """Copies (source, destination) pairs between any Beam filesystems (`copy`), `threads` at a time.

    Raises:
      the first copy's error, after the copies in flight ended.
    """
    pairs = list(pairs)
    if len(pairs) <= 1 or threads <= 1:
        for source, destination in pairs:
            copy(source, destination)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(threads, len(pairs))) as pool:
        try:
            for future in [pool.submit(copy, source, destination) for source, destination in pairs]:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # The copies not started yet never start.
            raise


def read_bytes(path):
    """The bytes of a file (local or any Beam filesystem).

    Raises:
      FileNotFoundError: no file there.
      IsADirectoryError: a local directory there.
    """
    if not is_remote(path) and os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if not exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    with open_binary(path) as f:
        return f.read()


def write_bytes(path, data, mime_type="application/octet-stream"):
    """Replaces the file at `path` by `data` atomically: a reader sees the old file or the new one, whole.

    On local disk the bytes go to a hidden temporary file beside it
    (`temporary_name`), which is flushed and fsynced, renamed over `path`
    (POSIX rename is atomic) and the directory fsynced; a failure removes the
    temporary file and leaves the old one as it was. On an object store (gs://,
    s3://) the object is written once, in one upload, which the store makes
    visible only when complete.

    Raises:
      OSError: the write failed (a full disk, no permission, ...); `path` is unchanged.
    """
    from apache_beam.io.filesystem import CompressionTypes

    if is_remote(path):
        with _filesystems().create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    make_directories(directory)
    temporary = os.path.join(directory, temporary_name(os.path.basename(path), secrets.token_hex(8)))
    try:
        with open(temporary, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, path) from e  # Name the file written, not its temporary.
        raise
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # The rename itself survives a power loss.
    finally:
        os.close(descriptor)


def write_text(path, text, mime_type="application/json"):
    """Replaces the file at `path` by UTF-8 `text`, atomically (`write_bytes`)."""
    write_bytes(path, text.encode("utf-8"), mime_type)


def read_json(path):
    """The JSON value of a file, however hostile the file.

    Raises:
      FileNotFoundError: no file there.
      ContractError: a directory, not UTF-8, not JSON, or nested too deeply; the message names the file.
    """
    try:
        text = read_bytes(path).decode("utf-8")
        return json.loads(text)
    except IsADirectoryError:
        raise ContractError(f"{path} is a directory, not a file") from None
    except UnicodeDecodeError as e:
        raise ContractError(f"{path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ContractError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ContractError(f"{path} is nested too deeply to be a {posixpath.basename(path)}") from None


def read_contract(path, parse):
    """A contract file (dataset.json, config.json) read and parsed; every fault a ContractError naming it.

    Args:
      path: the file.
      parse: callable(dict) -> the contract object (its `from_dict`).

    Raises:
      FileNotFoundError: no file there.
      ContractError: not a JSON object, or `parse` refused it (the message prefixed with the path).
    """
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ContractError(f"{path} is not a JSON object")
    try:
        return parse(raw)
    except ContractError as e:
        raise ContractError(f"{path}: {e}") from None
