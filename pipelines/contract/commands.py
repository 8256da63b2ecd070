"""What every command shares: one parsing convention, expected faults as one line, TensorFlow's C++ chatter
filtered, progress, and the name of the software that made what it writes.

Imports nothing heavy (TensorFlow is never imported here: the pipeline's
workers stay light), so every command can use it before its first import.
"""

import argparse
import errno
import functools
import math
import os
import re
import signal
import sys
import urllib.parse

from pipelines.contract.failures import TrackError

DEBUG_ENV = "WAVENET_DEBUG"  # Set (to anything) to see the traceback of a fault the commands report in one line.
# Errors of the machine or the file system that a user can act on, reported as they come, by errno.
_USER_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\] [^\n:']*(?:: '([^'\n]*)')?")


PACKAGE = "wavenet-music-toolkit"  # The distribution's name (setup.py).


@functools.cache
def software():
    """This package and its version, as every output names what made it: dataset.json's runs and the dataset
    card, the model card, and each generated clip's RIFF INFO.

    Returns:
      str, "wavenet-music-toolkit 0.1.0"; "wavenet-music-toolkit (version unknown)" when the package is not
      installed (run from a checkout).
    """
    from importlib import metadata

    try:
        return f"{PACKAGE} {metadata.version(PACKAGE)}"
    except metadata.PackageNotFoundError:
        return f"{PACKAGE} (version unknown)"


class CommandError(RuntimeError):
    """An expected fault of a command, whose message says what happened and what to do."""


class Interrupted(KeyboardInterrupt):
    """The command was stopped by a signal (Ctrl-C's SIGINT, or SIGTERM); `run_command` prints one line.

    Attributes:
      signum: the signal's number (its exit status is 128 + signum, as a shell reports it).
      detail: what the interruption left, for that line ("" when nothing needs saying).
    """

    def __init__(self, signum=signal.SIGINT, detail=""):
        super().__init__(detail)
        self.signum, self.detail = int(signum), detail

    def with_detail(self, detail):
        return Interrupted(self.signum, detail)


def fault_message(error):
    """The one line a command prints for an expected fault, or None for an unexpected one (a bug).

    Expected: our own errors (CommandError, ContractError, DatasetMismatchError,
    TrackError, and ValueError for bad options), OSErrors a user can act on
    (a full disk, no permission, a file where a directory belongs, ...), input
    nested too deeply, a runner's failure whose text carries one of those
    OSErrors (a Beam worker's full disk), and an object store's refusal
    (`storage.describe_fault`: a missing bucket, refused credentials, ...).
    """
    if isinstance(error, CommandError | ValueError | TrackError):
        return str(error)
    if isinstance(error, RecursionError):
        return "the input is nested too deeply to read"
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{_USER_ERRNOS[error.errno]}{where}"
    if isinstance(error, FileNotFoundError):  # Raised with a message of ours, without an errno.
        return str(error)
    for match in reversed(list(_ERRNO_IN_TEXT.finditer(str(error)))):
        number = int(match.group(1))
        if number in _USER_ERRNOS:
            return _USER_ERRNOS[number] + (f": {match.group(2)}" if match.group(2) else "")
    from pipelines.contract import storage  # A store's fault surfacing inside Beam or TensorFlow.

    return storage.describe_fault(error)


def run_command(main, *args):
    """Runs a command's `main(*args)`; returns its exit status for sys.exit (0 unless main returns an int).

    An expected fault (`fault_message`) becomes `error: ...` on stderr and
    status 1, without a traceback unless the environment sets DEBUG_ENV; an
    unexpected one keeps its traceback. Ctrl-C (and SIGTERM, where the command
    turned it into `Interrupted`) becomes `interrupted (SIGINT): what was left`
    and status 128 + the signal's number (130, 143), as a shell reports it. A
    closed stdout (`| head`) ends the command quietly, as Unix tools do.
    """
    try:
        status = main(*args)
        sys.stdout.flush()
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        detail = e.detail if isinstance(e, Interrupted) else ""
        name = signal.Signals(signum).name
        print(f"interrupted ({name})" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 128 + signum
    except Exception as e:
        message = fault_message(e)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


# TensorFlow's C++ runtime logs to file descriptor 2 (absl's format: `I0000 00:00:1796.0  123 file.cc:52] ...`),
# much of it before any log level applies. These are the lines that say nothing a user can act on.
NATIVE_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_NATIVE_LOG_LINE = re.compile(r"[IWEF]\d{4} \d+:\d+:\d+\.\d+ +\d+ \S+:\d+\] ")
_NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|E\d{4} .*(?:failed call to cuInit|Unable to register cu\w+ factory|oneDNN supports DT_\w+ only on)"
)
_MAYBE_NATIVE = "IWEFT"  # First letters of those lines: a partial line starting so waits for its end.


def is_native_noise(line):
    """Whether a line on stderr is TensorFlow's C++ chatter: its INFO and WARNING lines, and the ERROR lines
    every CPU-only machine prints (no CUDA driver, plugins registered twice, oneDNN's string types)."""
    return bool(_NATIVE_NOISE.match(line)) or (bool(_NATIVE_LOG_LINE.match(line)) and line[0] in "IW")


VERBOSE_OPTION = "--verbose"


def add_verbose_option(parser):
    """The --verbose option of the commands that import TensorFlow (`filter_native_logs`)."""
    parser.add_argument(
        VERBOSE_OPTION,
        action="store_true",
        help="Show TensorFlow's own log lines (its C++ INFO and WARNING lines are hidden otherwise, unless "
        f"{NATIVE_LOG_LEVEL_ENV} is set). Default: off.",
    )


# Parsing: one convention for every command's options (`python -m pipelines.preprocess` parses through Beam, whose
# parser takes no abbreviations either, and reports unknown options with `unknown_options` too).
_NEGATIVE_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")  # What argparse takes for a value, not an option.


def unknown_options(args, known):
    """One message per option in `args` that no option of `known` is, with the option meant when one is close.

    An abbreviation is refused as a typo is: argparse's prefix matching took
    `--second` for `--seconds` and called `--step` ambiguous. The suggestion
    is the closest known option by difflib's ratio (at least 0.75), else the
    options the typed name begins.

    Args:
      args: list of str, a command line (values and words after `--` are skipped; so are negative numbers).
      known: the option strings the command defines (`--seconds`, ...).

    Returns:
      list of str, e.g. ["unknown option --second (did you mean --seconds?)"]; empty when all are known.
    """
    import difflib

    known = sorted(known)
    messages = []
    for arg in args:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if not arg.startswith("-") or arg == "-" or _NEGATIVE_NUMBER.match(arg) or flag in known:
            continue
        meant = difflib.get_close_matches(flag, known, n=1, cutoff=0.75) or [k for k in known if k.startswith(flag)]
        messages.append(f"unknown option {flag}" + (f" (did you mean {' or '.join(meant[:3])}?)" if meant else ""))
    return messages


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every command that is not a Beam pipeline: argparse's, with one convention.

    Options are never abbreviated, and an unknown option is refused before
    anything else is checked (a mistyped --ouptut would otherwise be reported
    as a missing --output): `error: unknown option --second (did you mean
    --seconds?)` after the usage, exit status 2, as argparse reports its errors.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        # argparse keeps its option strings in the private `_option_string_actions`; a test of every command's
        # parser (tests/test_commands.py) fails loudly if that changes.
        unknown = unknown_options(args, self._option_string_actions)
        if unknown:
            self.error("; ".join(unknown))
        return super().parse_args(args, namespace)


def int_in(low, high=None):
    """An argparse `type`: an integer in [low, high) (no upper bound when `high` is None).

    Raises (when parsing):
      argparse.ArgumentTypeError: saying what the value must be and what it was.
    """

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            bounds = f"in [{low}, {high})" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def number_in(low, high=None, above=False):
    """An argparse `type`: a finite number (float) at least `low` (above it with `above`) and below `high`.

    Raises (when parsing):
      argparse.ArgumentTypeError: saying what the value must be and what it was (NaN and infinities included).
    """

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if above else value >= low) and (high is None or value < high)):
            bounds = f"above {low:g}" if above else (f"in [{low:g}, {high:g})" if high is not None else f">= {low:g}")
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text}")
        return value

    return parse


# Paths a command will create: refused before any work when the file system cannot hold them, in words that say why.


def file_in_the_way(path):
    """The existing file (not a directory) at local `path` or at a directory on the way to it, else None.

    Args:
      path: str, a local path as the user gave it (relative or absolute).

    Returns:
      str: that file's path, spelled as a prefix of `path` (`afile.txt` for `afile.txt/job`), or None.
    """
    current = os.path.normpath(path)
    while current:
        if os.path.exists(current):
            return None if os.path.isdir(current) else current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None


def check_directory_path(path):
    """Refuses, before anything is written, a local directory to be created or used that cannot be one: it is, or
    runs through, an existing file (`--job_dir afile.txt/job`). Remote paths (gs://, s3://) and None pass.

    Raises:
      NotADirectoryError: naming the file in the way (`not a directory: afile.txt`, as `fault_message` says it).
    """
    if path is None or "://" in path:
        return
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), blocking)


def creation_error(error, path, kind="file"):
    """What to raise when creating the local file or directory `path` failed with `error`: what is true.

    A file system that refuses new entries where the directory above exists
    (procfs, sysfs) answers ENOENT, "no such file or directory", which is not
    what happened; that becomes a CommandError saying so. Any other error
    keeps its errno and names `path` (a hidden temporary file's name would mean
    nothing to the user).

    Args:
      error: the OSError raised.
      path: str, the path as the user knows it.
      kind: "file" or "directory", for the message.

    Returns:
      CommandError or OSError.
    """
    if error.errno == errno.ENOENT:
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(parent):
            return CommandError(
                f"cannot create {kind}: {path}: the file system of {parent} takes no new entries there (it "
                "answers 'no such file or directory')"
            )
    return OSError(error.errno, error.strerror, path)


def make_directories(path):
    """`os.makedirs(path, exist_ok=True)` for a local path, refused in words that say what is true.

    Raises:
      NotADirectoryError: `path`, or a directory on the way to it, is a file (naming that file).
      CommandError, OSError: a directory could not be created (`creation_error`, naming it).
    """
    check_directory_path(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise creation_error(e, e.filename or path, "directory") from e


_stderr_terminal = []  # Whether stderr was a terminal before `pipe_stderr` made it a pipe.


def stderr_is_terminal(stream=None):
    """Whether `stream` (default stderr) reaches a terminal, also once `pipe_stderr` made it a pipe."""
    stream = stream or sys.stderr
    if stream is sys.stderr and _stderr_terminal:
        return _stderr_terminal[0]
    return getattr(stream, "isatty", lambda: False)()


def filter_native_logs(verbose=False):
    """Hides TensorFlow's C++ chatter (`is_native_noise`) from this process's stderr; call before importing it.

    Unless `verbose`, or the user set TF_CPP_MIN_LOG_LEVEL (then nothing is
    hidden): stderr becomes `pipe_stderr`'s pipe, which forwards everything
    else as it comes.

    Returns:
      whether the filter was installed.
    """
    if verbose or NATIVE_LOG_LEVEL_ENV in os.environ:
        return False
    os.environ[NATIVE_LOG_LEVEL_ENV] = "1"  # TensorFlow's later INFO lines are not even formatted.
    return pipe_stderr(drop_native_noise=True)


_pipe = {}  # What `pipe_stderr` installed: the real stderr's descriptor, the forwarding thread, the mute switch.


def pipe_stderr(drop_native_noise=False):
    """Makes file descriptor 2 a pipe that a thread forwards to the real stderr as it comes; child processes
    inherit the pipe.

    Progress bars and our own lines pass at once (less TensorFlow's chatter with
    `drop_native_noise`); fatal-error reports (faulthandler) go straight to the
    real stderr. `detach_children_stderr` gives this process the real stderr back
    and drops what its children still write. At exit the pipe is drained and
    stderr restored. Idempotent.

    Returns:
      whether the pipe was installed now.
    """
    if _pipe:
        return False
    import atexit
    import faulthandler
    import threading

    sys.stderr.flush()
    _stderr_terminal.append(os.isatty(2))  # Fd 2 becomes a pipe: progress bars must still know.
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    fatal = os.fdopen(os.dup(original), "w")
    faulthandler.enable(file=fatal)
    muted = threading.Event()

    def forward():
        pending = b""
        while chunk := os.read(read_end, 1 << 16):
            if muted.is_set():
                continue
            pending += chunk
            kept, pending = _drop_native_noise(pending) if drop_native_noise else (pending, b"")
            os.write(original, kept)
        if pending and not muted.is_set():
            os.write(original, _drop_native_noise(pending + b"\n")[0][:-1] if drop_native_noise else pending)

    thread = threading.Thread(target=forward, name="stderr-forwarder", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # The pipe's last write end closes: the thread drains it and ends.
        thread.join(timeout=5)

    atexit.register(restore)
    _pipe.update(original=original, muted=muted, fatal_file=fatal)  # The file is kept open for faulthandler.
    return True


def detach_children_stderr():
    """This process writes to the real stderr again; what its child processes still write (they hold the pipe
    of `pipe_stderr`) is dropped: for a command that stops its workers and then says why in one line.
    Does nothing without the pipe."""
    if not _pipe:
        return
    sys.stderr.flush()
    _pipe["muted"].set()
    os.dup2(_pipe["original"], 2)


def _drop_native_noise(data):
    """(bytes to forward, bytes held): complete lines (ending in \\n or \\r) less the noise; a trailing
    partial line is held only when it could still become a native log line."""
    pieces = re.split(rb"(?<=[\r\n])", data)
    tail = pieces.pop() if pieces and not pieces[-1].endswith((b"\n", b"\r")) else b""
    kept = b"".join(p for p in pieces if not is_native_noise(p.decode("utf-8", "replace")))
    if tail and tail[:1].decode("latin-1") not in _MAYBE_NATIVE:
        return kept + tail, b""
    return kept, tail


PROGRESS_LOG_INTERVAL_SECS = 30.0


class LogProgress:
    """tqdm's update / set_postfix / close as a plain line every `interval_secs`, for logs without a terminal.

    A bar's carriage returns turn a log file (Vertex AI, SageMaker, Slurm,
    `> train.log`) into one endless line; these are whole lines.
    """

    def __init__(self, total, unit, desc="", initial=0, stream=None, interval_secs=PROGRESS_LOG_INTERVAL_SECS):
        import time

        self._clock = time.monotonic
        self.total, self.n, self._initial = total, initial, initial
        self._unit, self._desc, self._postfix = unit, desc, ""
        self._stream = stream or sys.stderr
        self._interval = interval_secs
        self._started = self._last = self._clock()

    def update(self, n=1):
        self.n += n
        if self._clock() - self._last >= self._interval:
            self._print()

    def set_postfix(self, **values):
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self):
        if self.n != self._initial:
            self._print()
        self._initial = self.n  # Closing twice prints once.

    def write(self, text, file=None):
        """Prints a line of its own (tqdm's `write`)."""
        print(text, file=file or self._stream, flush=True)

    def line(self):
        """The progress as one line of text."""
        elapsed = self._clock() - self._started
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        left = f", ~{format_duration((self.total - self.n) / rate)} left" if rate > 0 and self.total > self.n else ""
        postfix = f", {self._postfix}" if self._postfix else ""
        desc = f"{self._desc}: " if self._desc else ""
        return f"{desc}{self.n:,}/{self.total:,} {self._unit}s{share}, {rate:,.1f} {self._unit}s/s{left}{postfix}"

    def _print(self):
        print(self.line(), file=self._stream, flush=True)
        self._last = self._clock()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def progress_bar(total, unit, desc="", initial=0, enabled=True, stream=None):
    """Progress of a long loop: a tqdm bar on a terminal, `LogProgress` lines otherwise, nothing when disabled.

    Returns:
      an object with update(n), set_postfix(**values), write(text, file), close() and the context
      manager protocol.
    """
    from tqdm import tqdm

    stream = stream or sys.stderr
    if not enabled or stderr_is_terminal(stream):
        return tqdm(total=total, unit=unit, desc=desc or None, initial=initial, disable=not enabled, file=stream)
    return LogProgress(total, unit, desc, initial, stream)


def format_duration(secs):
    """A duration for people: '42 s', '17 min', '11.1 h'."""
    if secs >= 3600:
        return f"{secs / 3600:.1f} h"
    return f"{secs / 60:.0f} min" if secs >= 60 else f"{secs:.0f} s"


# Option names whose values are never written into a card (credentials).
_SECRET_OPTION = re.compile(r"secret|token|password|passwd|credential|access_key|api_key", re.IGNORECASE)
_SECRET_QUERY = re.compile(r"signature|token|key|sig|credential|password", re.IGNORECASE)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s,]+")
REDACTED = "<redacted>"


def redact_command(argv):
    """A command line with its credentials left out, for records others read (dataset.json, the cards).

    The values of options whose names say they hold secrets (--s3_secret_access_key,
    --s3_session_token, ...) become "<redacted>", and in every URL the user and
    password, and query parameters that carry signatures or tokens (presigned
    URLs), are dropped.

    Args:
      argv: list of str.

    Returns:
      tuple of str.
    """
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        if name.startswith("--") and _SECRET_OPTION.search(name):
            if equals:
                out.append(f"{name}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(_URL.sub(lambda m: redact_url(m.group(0)), arg))
    return tuple(out)


def redact_url(url):
    """`url` without its user and password and without query parameters that carry signatures or tokens
    (presigned URLs): what records others read may name of where data came from."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = urllib.parse.urlencode([(k, v) for k, v in pairs if not _SECRET_QUERY.search(k)])
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return url
