"""The life cycle of an output directory: run ids, the lease, the commit, and what dead runs leave.

`dataset.json`, written last and in one piece, is the only record of what a
dataset holds: its shards, the runs that wrote them and each run's track
index and failures file. Every file a run writes carries its run id, so until
dataset.json names the run, nothing it wrote is visible to readers or to the
next run's skip set; a run that dies before its commit changes nothing, and
its files are leftovers that the next run (or `python -m pipelines.verify
--clean`) removes.

One run writes into an output at a time: a run takes the lease (`lease.json`:
run id, host, pid, start time) before it starts and the commit releases it. A
second run refuses to start while the lease is held by a live run; a lease is
stale when its holder ran on this host and its process is gone, or when it is
older than --stale_lease_hours. At commit time the run merges itself into the
dataset.json current then, and fails loudly if its lease was taken over.

On local disk the lease is taken atomically (O_EXCL). Object stores (gs://,
s3://) offer no create-if-absent through Beam's filesystems: there a run
writes the lease, waits a moment and reads it back, so two runs racing for it
within that moment are told apart by the read-back, and the commit-time check
catches anything later.
"""

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import time

from pipelines import contract

LEASE_FILE = "lease.json"
DEFAULT_STALE_LEASE_HOURS = 72.0
# UTC start time to the second, then 32 random bits: unique even for runs started in the same second.
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
# Only names the pipeline writes are ever counted as leftovers: other files in the directory are left alone.
_OUR_NAMES = re.compile(r"^(train|validation|tracks|failures)-|^beam-temp-")
_READ_BACK_SECS = 1.0


class LeaseError(RuntimeError):
    """The output is held by another run, or this run's lease was taken over."""


def new_run_id(now=None):
    """A unique run id: `YYYYMMDDTHHMMSSZ-xxxxxxxx` (UTC start time, random hex)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(4)


@dataclasses.dataclass(frozen=True)
class Lease:
    """Who is writing into an output.

    Attributes:
      run_id: the holder's run id.
      host: the machine that started it.
      pid: the process that started it.
      started: start time, seconds since the epoch.
      local: True when that process runs the whole job (a local runner), so
        that its death means the run's death.
    """

    run_id: str
    host: str
    pid: int
    started: float
    local: bool

    def describe(self):
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"run {self.run_id} (host {self.host}, pid {self.pid}, started {started})"

    def is_stale(self, stale_after_secs, now=None):
        """Whether the holder is known dead (same host, process gone) or the lease is older than the limit."""
        if self.local and self.host == socket.gethostname() and not _process_alive(self.pid):
            return True
        return (time.time() if now is None else now) - self.started > stale_after_secs


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Alive, someone else's.
    return True


def _is_local(output):
    return "://" not in output


def _path(output, name):
    from apache_beam.io.filesystems import FileSystems

    return os.path.join(output, name) if _is_local(output) else FileSystems.join(output, name)


def read_lease(output):
    """The Lease held on an output, or None."""
    from apache_beam.io.filesystems import FileSystems

    path = _path(output, LEASE_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        try:
            return Lease(**json.loads(f.read().decode("utf-8")))
        except (ValueError, TypeError):
            return Lease(run_id="unreadable", host="unknown", pid=0, started=0.0, local=False)  # Stale at once.


def acquire_lease(output, run_id, local, stale_after_secs=DEFAULT_STALE_LEASE_HOURS * 3600):
    """Takes the lease on an output for this run.

    Args:
      output: the output directory.
      run_id: this run's id.
      local: whether this process runs the whole job.
      stale_after_secs: a lease older than this is taken over.

    Returns:
      (Lease taken, the stale Lease taken over or None).

    Raises:
      LeaseError: a live run holds the lease, or another run took it at the same moment.
    """
    from apache_beam.io.filesystems import FileSystems

    existing = read_lease(output)
    if existing is not None and not existing.is_stale(stale_after_secs):
        raise LeaseError(_busy_message(output, existing))
    lease = Lease(run_id=run_id, host=socket.gethostname(), pid=os.getpid(), started=time.time(), local=local)
    text = json.dumps(dataclasses.asdict(lease), sort_keys=True).encode("utf-8")
    path = _path(output, LEASE_FILE)
    if _is_local(output):
        os.makedirs(output, exist_ok=True)
        if existing is not None:
            _remove_if_held_by(path, existing.run_id)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise LeaseError(_busy_message(output, read_lease(output))) from None
        with os.fdopen(fd, "wb") as f:
            f.write(text)
    else:
        with FileSystems.create(path, mime_type="application/json") as f:
            f.write(text)
        time.sleep(_READ_BACK_SECS)
        holder = read_lease(output)
        if holder is None or holder.run_id != run_id:
            raise LeaseError(_busy_message(output, holder))
    return lease, existing


def _remove_if_held_by(path, run_id):
    try:
        with open(path) as f:
            if json.load(f).get("run_id") != run_id:
                return
    except (OSError, ValueError):
        pass
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _busy_message(output, holder):
    who = holder.describe() if holder else "another run"
    return (
        f"{output} is being written by {who}. Wait for it to finish, use another --output, or, if that run "
        f"is dead, free the output with: python -m pipelines.verify {output} --clean --break_lease"
    )


def check_lease(output, run_id):
    """Raises LeaseError unless this run still holds the output's lease (called at commit time)."""
    holder = read_lease(output)
    if holder is None or holder.run_id != run_id:
        who = holder.describe() if holder else "nobody"
        raise LeaseError(
            f"run {run_id} lost its lease on {output} (now held by {who}); nothing was committed. "
            f"Its files are leftovers that the next run or `python -m pipelines.verify {output} --clean` removes."
        )


def release_lease(output, run_id):
    """Deletes the lease if this run holds it."""
    from apache_beam.io.filesystems import FileSystems

    holder = read_lease(output)
    if holder is not None and holder.run_id == run_id:
        FileSystems.delete([_path(output, LEASE_FILE)])


def current_description(output):
    """The output's committed DatasetDescription, or None when it has none."""
    try:
        return contract.read_description(output)
    except FileNotFoundError:
        return None


def leftovers(output, description, live_run_ids=()):
    """What dead runs left in an output: names the pipeline writes that no committed run owns.

    Args:
      output: the output directory.
      description: its committed DatasetDescription, or None.
      live_run_ids: runs still writing (the lease holder), whose files are not leftovers.

    Returns:
      sorted list of top-level names (files, and directories such as beam-temp-*).
    """
    keep_ids = set(live_run_ids)
    listed = set()
    if description is not None:
        keep_ids |= set(description.run_ids)
        listed = {name for split in description.splits.values() for name in split.files}
        listed |= {name for run in description.runs for name in (run.tracks_file, run.failures_file)}
    found = []
    for name in _top_level_names(output):
        if not _OUR_NAMES.search(name) or name in listed:
            continue
        run_id = RUN_ID.search(name)
        if run_id and run_id.group(0) in keep_ids:
            continue
        if description is not None and any(_glob_matches(pattern, name) for pattern in listed if "*" in pattern):
            continue  # A stream's per-window files.
        found.append(name)
    return sorted(found)


def _glob_matches(pattern, name):
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def _top_level_names(output):
    if _is_local(output):
        return os.listdir(output) if os.path.isdir(output) else []
    return sorted(_remote_files(output))


def _remote_files(output):
    """Top-level name -> list of file paths under it, for an object store (which has no directories)."""
    from apache_beam.io.filesystems import FileSystems

    prefix = output.rstrip("/") + "/"
    by_name = {}
    for metadata in FileSystems.match([prefix + "**"])[0].metadata_list:
        name = metadata.path[len(prefix) :].split("/", 1)[0]
        by_name.setdefault(name, []).append(metadata.path)
    return by_name


def remove(output, names):
    """Deletes top-level entries (files or directories) of an output."""
    from apache_beam.io.filesystems import FileSystems

    if _is_local(output):
        for name in names:
            path = os.path.join(output, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
        return
    files = _remote_files(output)
    paths = [path for name in names for path in files.get(name, [])]
    if paths:
        FileSystems.delete(paths)
