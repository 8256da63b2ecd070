"""Progress of a local run: tracks done of the total, hours of audio, rate and time left.

Beam's local runners report metrics only when the job ends, and their workers
may be other processes. So on a local run the driver names a file in the
environment (`PROGRESS_ENV`, inherited by worker processes); DoFns append one
short line per event (a track selected for processing, a track done), and a
driver thread reads the file: a tqdm bar on a terminal, a log line every
`LOG_INTERVAL_SECS` otherwise, and a last line when the job ends. On a
cluster the variable is unset and the DoFns write nothing.
"""

import logging
import os
import sys
import tempfile
import threading
import time

from pipelines import contract

PROGRESS_ENV = "WAVENET_PREPROCESS_PROGRESS_FILE"
LOG_INTERVAL_SECS = 30.0
_SELECTED = "+"
_DONE = "="
_LOGGER = logging.getLogger(__name__)


def _append(line):
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    # One write of a short line with O_APPEND: lines from many processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def track_selected():
    """A worker found a track to process (the total grows)."""
    _append(_SELECTED)


def track_done(audio_secs):
    """A worker finished a track (processed or failed), with the seconds of audio it gave."""
    _append(f"{_DONE}{audio_secs:.3f}")


class Reporter:
    """Shows a local run's progress while it runs; use as a context manager around the run.

    Args:
      stream: where the bar or the log lines go (stderr).
      interval_secs: seconds between log lines when the stream is not a terminal.
    """

    def __init__(self, stream=None, interval_secs=LOG_INTERVAL_SECS):
        self._stream = stream or sys.stderr
        self._interval = interval_secs
        self._stop = threading.Event()
        self._thread = None
        self._path = None
        self._offset = 0
        self.total = self.done = 0
        self.audio_secs = 0.0
        self._started = None

    def __enter__(self):
        fd, self._path = tempfile.mkstemp(prefix="wavenet-progress-")
        os.close(fd)
        os.environ[PROGRESS_ENV] = self._path
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        os.environ.pop(PROGRESS_ENV, None)
        os.remove(self._path)
        return False

    def _read(self):
        with open(self._path) as f:
            f.seek(self._offset)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]  # A line still being written waits for the next read.
        self._offset += len(complete)
        for line in complete.splitlines():
            if line == _SELECTED:
                self.total += 1
            elif line.startswith(_DONE):
                self.done += 1
                self.audio_secs += float(line[1:])

    def line(self):
        """The progress as one line of text."""
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else None
        return (
            f"Progress: {self.done}/{self.total} tracks, {self.audio_secs / 3600:.3f} h of audio, "
            f"{rate * 60:.1f} tracks/min" + (f", ~{contract.format_duration(left)} left" if left is not None else "")
        )

    def _run(self):
        terminal = getattr(self._stream, "isatty", lambda: False)()
        bar = None
        if terminal:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="track", file=self._stream, dynamic_ncols=True)
        last_log = time.monotonic()
        while not self._stop.wait(0.5):
            self._read()
            if bar is not None:
                bar.total, bar.n = self.total, self.done
                bar.set_postfix_str(f"{self.audio_secs / 3600:.3f} h of audio", refresh=True)
            elif time.monotonic() - last_log >= self._interval:
                print(self.line(), file=self._stream, flush=True)
                last_log = time.monotonic()
        self._read()
        if bar is not None:
            bar.total, bar.n = self.total, self.done
            bar.close()
        print(self.line(), file=self._stream, flush=True)
