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
import errno
import fnmatch
import json
import os
import posixpath
import re
import secrets
import shutil
import socket
import time

from pipelines import contract

LEASE_FILE = "lease.json"
DEFAULT_STALE_LEASE_HOURS = 72.0
RUN_ID = re.compile(contract.RUN_ID_PATTERN)
_READ_BACK_SECS = 1.0


class LeaseError(contract.CommandError):
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
      boot_id: the holder's kernel boot id (Linux; None elsewhere or in leases
        written before it was recorded).
      process_started: the holder's start time in clock ticks after boot (Linux
        /proc/PID/stat field 22; None where unknown). With boot_id it tells the
        holder from a later process given the same pid, as a restarted container's
        pid 1 is.
    """

    run_id: str
    host: str
    pid: int
    started: float
    local: bool
    boot_id: str = None
    process_started: int = None

    def describe(self):
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"run {self.run_id} (host {self.host}, pid {self.pid}, started {started})"

    def is_stale(self, stale_after_secs, now=None):
        """Whether the holder is known dead (same host, its process gone or replaced) or the lease is too old."""
        if self.local and self.host == socket.gethostname() and not self._holder_alive():
            return True
        return (time.time() if now is None else now) - self.started > stale_after_secs

    def _holder_alive(self):
        if self.boot_id is not None and self.boot_id != _boot_id():
            return False  # The machine rebooted since: every process of that boot is gone.
        if not _process_alive(self.pid):
            return False
        # The pid is in use; by the holder only if it started when the holder did.
        return self.process_started is None or self.process_started == _process_start_ticks(self.pid)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Alive, someone else's.
    return True


def _boot_id():
    """The kernel's boot id (Linux), or None."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start_ticks(pid):
    """When process `pid` started, in clock ticks after boot (Linux /proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces: count fields after its last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def read_lease(output):
    """The Lease held on an output, or None."""
    from apache_beam.io.filesystems import FileSystems

    path = contract.join(output, LEASE_FILE)
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path) as f:
            raw = json.loads(f.read().decode("utf-8"))
        known = {field.name for field in dataclasses.fields(Lease)}
        return Lease(**{k: v for k, v in raw.items() if k in known})  # A later version's fields are not ours.
    except (ValueError, TypeError, RecursionError, IsADirectoryError):
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
    lease = Lease(
        run_id=run_id, host=socket.gethostname(), pid=os.getpid(), started=time.time(), local=local,
        boot_id=_boot_id(), process_started=_process_start_ticks(os.getpid()),
    )  # fmt: skip
    text = json.dumps(dataclasses.asdict(lease), sort_keys=True).encode("utf-8")
    path = contract.join(output, LEASE_FILE)
    if not contract.is_remote(output):
        if os.path.lexists(output) and not os.path.isdir(output):
            raise NotADirectoryError(errno.ENOTDIR, "--output must be a directory, this is a file", output)
        os.makedirs(output, exist_ok=True)
        if existing is not None:
            _remove_if_held_by(path, existing.run_id)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise LeaseError(_busy_message(output, read_lease(output))) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text)
        except OSError as e:  # A full disk: leave no empty lease behind.
            os.remove(path)
            raise OSError(e.errno, e.strerror, path) from e
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
        f"is dead, free the output with: python -m pipelines.verify {output} --break_lease "
        "(it removes the lease and that run's uncommitted files, never committed data)"
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
        FileSystems.delete([contract.join(output, LEASE_FILE)])


def current_description(output):
    """The output's committed DatasetDescription, or None when it has none.

    Raises:
      contract.ContractError: its dataset.json cannot be read or does not validate.
    """
    try:
        return contract.read_description(output)
    except FileNotFoundError:
        return None


def committed_files(output, name, run_id):
    """Paths of a committed run's track index or failures file: a plain name, or a glob of a stream's files.

    A stream committed before file names carried run ids names its files `tracks-*.jsonl`, a glob that
    also matches every other run's; only files of no run's name, or of this run's, are its own.
    """
    from apache_beam.io.filesystems import FileSystems

    if "*" not in name:
        return [contract.join(output, name)]
    paths = sorted(m.path for m in FileSystems.match([contract.join(output, name)])[0].metadata_list)
    return [p for p in paths if contract.run_file_owner(posixpath.basename(p)) in (None, run_id)]


def leftovers(output, description, live_run_ids=(), writer_active=False):
    """What dead runs left in an output: files and Beam temp directories of runs that never committed.

    Only names of the exact shapes a run writes (`contract.run_file_owner`,
    `contract.run_temp_directory_owner`, `contract.is_commit_temporary`) are
    considered, of the right kind (a file for a file name, a directory for a
    temp directory; never a symlink); a name that the description lists, or that
    carries the id of a committed or live run, is kept. Everything else in the
    directory is the user's and is never a leftover.

    Args:
      output: the output directory.
      description: its committed DatasetDescription, or None when it has no
        dataset.json. (Callers never pass None for a dataset.json that exists
        but cannot be read: then nothing is known to be a leftover.)
      live_run_ids: runs still writing (the lease holder), whose files are not leftovers.
      writer_active: another live run may be committing now, so a commit's
        temporary file may be its own (verify, while a live lease is held); a
        run that holds the lease itself passes False.

    Returns:
      sorted list of top-level names.
    """
    keep_ids = set(live_run_ids)
    listed, globs = set(), []
    if description is not None:
        keep_ids |= set(description.run_ids)
        listed = {name for split in description.splits.values() for name in split.files}
        for run in description.runs:
            for name in (run.tracks_file, run.failures_file):
                if "*" in name:
                    globs.append(name)  # A stream's per-window files.
                else:
                    listed.add(name)
    found = []
    for name, kind in top_level_entries(output):
        if name in listed or any(fnmatch.fnmatchcase(name, pattern) for pattern in globs):
            continue
        if kind == "file":
            owner = contract.run_file_owner(name)
            if owner is None and contract.is_commit_temporary(name) and not writer_active:
                owner = ""  # A killed commit's temporary file.
        elif kind == "directory":
            owner = contract.run_temp_directory_owner(name)
        else:
            owner = None
        if owner is not None and owner not in keep_ids:
            found.append(name)
    return sorted(found)


def run_owner(name):
    """The run id in a top-level name a run writes (a file or a Beam staging directory), or None."""
    return contract.run_file_owner(name) or contract.run_temp_directory_owner(name)


def top_level_entries(output):
    """(name, "file" | "directory" | "other") of each top-level entry; symlinks and devices are "other"."""
    if not contract.is_remote(output):
        if not os.path.isdir(output):
            return []
        entries = []
        for entry in os.scandir(output):
            if entry.is_symlink():
                kind = "other"
            elif entry.is_dir(follow_symlinks=False):
                kind = "directory"
            elif entry.is_file(follow_symlinks=False):
                kind = "file"
            else:
                kind = "other"
            entries.append((entry.name, kind))
        return entries
    # An object store has objects, and prefixes that act as directories.
    return [
        (name, "file" if paths == [contract.join(output.rstrip("/"), name)] else "directory")
        for name, paths in _remote_files(output).items()
    ]


def _remote_files(output):
    """Top-level name -> list of object paths under it, for an object store (which has no directories)."""
    from apache_beam.io.filesystems import FileSystems

    prefix = output.rstrip("/") + "/"
    by_name = {}
    for metadata in FileSystems.match([prefix + "**"])[0].metadata_list:
        name = metadata.path[len(prefix) :].split("/", 1)[0]
        by_name.setdefault(name, []).append(metadata.path)
    return by_name


def remove(output, names):
    """Deletes top-level entries (files, or directories without following symlinks) of an output."""
    from apache_beam.io.filesystems import FileSystems

    if not contract.is_remote(output):
        for name in names:
            path = os.path.join(output, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        return
    files = _remote_files(output)
    paths = [path for name in names for path in files.get(name, [])]
    if paths:
        FileSystems.delete(paths)
