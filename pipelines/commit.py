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

The lease is taken with the storage's own create-if-absent: O_EXCL on local
disk, PutObject with `If-None-Match: *` on S3, an upload with
`ifGenerationMatch=0` on Cloud Storage (`contract.storage.create_exclusive`),
so of two runs starting at once exactly one gets it. On local disk the file
appears with its content (written aside, then hard-linked into place), so no
reader ever sees it empty. On another Beam filesystem, which has no
create-if-absent, a run falls back to writing the lease, waiting a moment and
reading it back; the commit-time check catches anything later. An
S3-compatible store must honour `If-None-Match: *` (AWS S3 since 2024, MinIO,
Ceph RGW do); one that ignores it lets both writers believe they won.
"""

import contextlib
import dataclasses
import errno
import fnmatch
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import socket
import time

from pipelines import cards, contract
from pipelines.contract import storage

LEASE_FILE = contract.LEASE_FILE
DEFAULT_STALE_LEASE_HOURS = 72.0
# Held for the seconds a commit takes (`commit_lock`): how long another commit waits, and when a lock is stale.
COMMIT_LOCK_FILE = contract.COMMIT_LOCK_FILE
COMMIT_LOCK_WAIT_SECS = 300.0
COMMIT_LOCK_STALE_SECS = 600.0
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
    fields = contract.process_stat(pid)
    return None if fields is None else int(fields[19])


def read_lease(output, name=LEASE_FILE):
    """The Lease held on an output (or its commit lock, `name=COMMIT_LOCK_FILE`), or None."""
    path = contract.join(output, name)
    try:
        raw = json.loads(contract.read_bytes(path).decode("utf-8"))
        known = {field.name for field in dataclasses.fields(Lease)}
        return Lease(**{k: v for k, v in raw.items() if k in known})  # A later version's fields are not ours.
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError, RecursionError, IsADirectoryError):
        return Lease(run_id="unreadable", host="unknown", pid=0, started=0.0, local=False)  # Stale at once.


def _new_lease(run_id, local):
    return Lease(
        run_id=run_id, host=socket.gethostname(), pid=os.getpid(), started=time.time(), local=local,
        boot_id=_boot_id(), process_started=_process_start_ticks(os.getpid()),
    )  # fmt: skip


def _take(output, name, lease, stale):
    """Creates `name` in the output holding `lease`, only if it does not exist: the storage's create-if-absent.

    Args:
      stale: the Lease found there and judged stale (removed first, if it still holds), or None.

    Returns:
      None when taken, else the Lease that holds it (None inside when unreadable or gone).
    """
    text = json.dumps(dataclasses.asdict(lease), sort_keys=True).encode("utf-8")
    path = contract.join(output, name)
    if not contract.is_remote(output):
        if os.path.lexists(output) and not os.path.isdir(output):
            raise NotADirectoryError(errno.ENOTDIR, "--output must be a directory, this is a file", output)
        contract.commands.make_directories(output)
        if stale is not None and _same_holder(read_lease(output, name), stale):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # Stale: taken over.
        # Written whole, then linked: never seen empty.
        aside = contract.join(output, contract.temporary_name(name, secrets.token_hex(8)))
        try:
            with open(aside, "wb") as f:
                f.write(text)
            os.link(aside, path)
        except FileExistsError:
            return read_lease(output, name) or Lease("unknown", "unknown", 0, 0.0, False)
        except OSError as e:  # A full disk: leave nothing half-written behind.
            raise OSError(e.errno, e.strerror, path) from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(aside)
        return None
    if stale is not None:
        _release(output, name, stale)  # Stale: taken over.
    created = storage.create_exclusive(path, text)
    if created is None:  # No create-if-absent on this store: write, wait, read back.
        contract.write_bytes(path, text, "application/json")
        time.sleep(_READ_BACK_SECS)
    holder = read_lease(output, name)
    if created is False or holder is None or holder.run_id != lease.run_id:
        return holder or Lease("unknown", "unknown", 0, 0.0, False)
    return None


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
    existing = read_lease(output)
    if existing is not None and not existing.is_stale(stale_after_secs):
        raise LeaseError(_busy_message(output, existing))
    lease = _new_lease(run_id, local)
    holder = _take(output, LEASE_FILE, lease, existing)
    if holder is not None:
        raise LeaseError(_busy_message(output, holder if holder.run_id != "unknown" else None))
    return lease, existing


@contextlib.contextmanager
def commit_lock(output, run_id, wait_secs=COMMIT_LOCK_WAIT_SECS):
    """Held for the few seconds of a commit (read dataset.json, merge, write it): one commit at a time.

    Batch runs commit under it while holding the lease; a stream, which holds no
    lease, commits every window under it, so neither can lose the other's commit.
    A lock left by a dead holder (on this host) or older than COMMIT_LOCK_STALE_SECS
    is taken over.

    Raises:
      LeaseError: still held by another commit after `wait_secs`.
    """
    lease = _new_lease(run_id, local=True)
    deadline = time.monotonic() + wait_secs
    delay = 0.05
    while True:
        holder = read_lease(output, COMMIT_LOCK_FILE)
        stale = holder if holder is not None and holder.is_stale(COMMIT_LOCK_STALE_SECS) else None
        if holder is None or stale is not None:
            holder = _take(output, COMMIT_LOCK_FILE, lease, stale)
            if holder is None:
                break
        if time.monotonic() > deadline:
            raise LeaseError(
                f"{output}: the commit of {holder.describe()} has held {COMMIT_LOCK_FILE} for more than "
                f"{wait_secs:.0f} s; if that run is dead, remove {contract.join(output, COMMIT_LOCK_FILE)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        _release(output, COMMIT_LOCK_FILE, lease)  # This lock only: a stream's windows share its run id.


def commit(output, run_id, update, added_track_indexes=()):
    """The one commit of a run, or of a stream's window: dataset.json current now -> update -> written atomically.

    Under the commit lock, reads the committed description (None when there is
    none), calls `update(current)` for the new one, and writes it in one piece
    (`contract.write_description`), then the dataset card and attribution.csv
    that describe it (`cards.write_cards`). Batch runs and streams both commit here.

    The cards add the rows of `added_track_indexes` to the committed
    attribution.csv (one read, whatever the dataset's age), and read every
    committed track index only when those do not add up to what dataset.json
    now lists (a first commit, a run that replaces the dataset, stale cards).
    The commit is dataset.json: a card that cannot be written is a warning, and
    `python -m pipelines.verify OUTPUT --write_cards` writes it again.

    Args:
      output: the output directory.
      run_id: the committing run.
      update: callable(DatasetDescription or None) -> the DatasetDescription to
        write, or None to write nothing.
      added_track_indexes: paths of the track indexes this commit adds (the
        run's, or the window's).

    Returns:
      the DatasetDescription written, or None.

    Raises:
      contract.ContractError: the committed dataset.json cannot be read (nothing is written).
      LeaseError: the commit lock stayed held by another commit.
    """
    with commit_lock(output, run_id):
        current = current_description(output)
        description = update(current)
        if description is not None:
            contract.write_description(output, description)
            try:
                rows = _attribution_rows(output, description, current, added_track_indexes)
                cards.write_cards(output, description, rows)
            except (OSError, contract.ContractError) as e:
                logging.getLogger(__name__).warning(
                    "%s is committed, but its cards were not written (%s); write them with: "
                    "python -m pipelines.verify %s --write_cards", contract.join(output, contract.DATASET_FILE), e,
                    output,
                )  # fmt: skip
        return description


def _attribution_rows(output, description, current, added_track_indexes):
    """The attribution rows of what `description` commits: the committed rows plus the added indexes' where
    they add up to its track count, else read from every committed track index."""
    if current is not None:  # A window or run that adds no track still adds up: nothing read but attribution.csv.
        try:
            rows = contract.read_attribution(output)
            for path in added_track_indexes:
                rows += cards.attribution_rows(contract.read_records(path, contract.TrackRecord))
        except (FileNotFoundError, contract.ContractError):
            rows = []
        if len(rows) == description.tracks and len({row.track_id for row in rows}) == len(rows):
            return rows
    return cards.attribution_rows(committed_tracks(output, description))


def _same_holder(found, lease):
    """Whether `found` (a Lease read back, or None) is `lease` itself: run, host, pid and start time."""
    return found is not None and (found.run_id, found.host, found.pid, found.started) == (
        lease.run_id, lease.host, lease.pid, lease.started
    )


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
    holder = read_lease(output)
    if holder is not None and holder.run_id == run_id:
        contract.delete([contract.join(output, LEASE_FILE)])


def _release(output, name, lease):
    """Deletes `name` if it still holds `lease` (the same run, process and start time)."""
    holder = read_lease(output, name)
    if _same_holder(holder, lease):  # An unreadable file is found unreadable again: the same stale holder.
        contract.delete([contract.join(output, name)])


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
    if "*" not in name:
        return [contract.join(output, name)]
    paths = contract.match(contract.join(output, name))
    return [p for p in paths if contract.run_file_owner(posixpath.basename(p)) in (None, run_id)]


def committed_track_indexes(output, description):
    """Paths of the track indexes of every run `description` (a DatasetDescription, or None) names, in run order."""
    runs = description.runs if description is not None else ()
    return [path for run in runs for path in committed_files(output, run.tracks_file, run.run_id)]


def committed_tracks(output, description):
    """The `contract.TrackRecord`s in the track indexes of every run dataset.json names, in run order.

    A missing index holds none (a stream's window not written yet; verify reports an index that is missing).
    """
    for path in committed_track_indexes(output, description):
        try:
            yield from contract.read_records(path, contract.TrackRecord)
        except FileNotFoundError:
            continue


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
    prefix = output.rstrip("/") + "/"
    by_name = {}
    for path in contract.match(prefix + "**"):
        name = path[len(prefix) :].split("/", 1)[0]
        by_name.setdefault(name, []).append(path)
    return by_name


def remove(output, names):
    """Deletes top-level entries (files, or directories without following symlinks) of an output."""
    if not contract.is_remote(output):
        for name in names:
            path = os.path.join(output, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        return
    files = _remote_files(output)
    contract.delete([path for name in names for path in files.get(name, [])])
