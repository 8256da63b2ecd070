"""Where the trainer's files live when TensorFlow cannot reach them itself.

TensorFlow reads and writes local paths and gs:// directly; for s3:// (and any
other Beam filesystem) the trainer stages the dataset to local disk
(`stage_dataset`) and works in local copies of the job_dir and the TensorBoard
directory that it mirrors back (`Mirror`). Every copy goes through Beam's
filesystems (`pipelines.contract`), with this process's storage settings, and
many at a time (`contract.copy_all`): a store serves parallel requests far faster than one stream.
"""

import dataclasses
import logging
import os
import tempfile

from pipelines import contract
from trainer import jobdir

_LOGGER = logging.getLogger(__name__)


def needs_staging(uri):
    """Whether TensorFlow cannot read/write `uri` itself: it does local paths and gs://, not s3://."""
    return contract.is_remote(uri) and not uri.startswith("gs://")


def stage_dataset(data_dir, local_dir):
    """Copies dataset.json and every shard it lists to local_dir, through Beam's filesystems (s3://, ...).

    Shard names come from dataset.json, which `contract.read_description`
    accepts only when each is a plain file name, so nothing is written outside local_dir.

    Returns:
      local_dir, a directory `trainer.data` reads like the original.
    """
    description = contract.read_description(data_dir)
    names = [contract.DATASET_FILE] + [name for split in description.splits.values() for name in split.files]
    contract.copy_all((contract.join(data_dir, name), os.path.join(local_dir, name)) for name in names)
    _LOGGER.warning("Staged %s (%d shards) to %s", data_dir, len(names) - 1, local_dir)
    return local_dir


# Files that name or complete others: TensorFlow's checkpoint state ("checkpoint": which ckpt-N is the latest) and
# the export's config.json (written after model.keras). Pushed after everything else, so a push killed part-way
# never leaves a store where one of them points at a file that did not arrive.
POINTER_FILES = ("checkpoint", contract.MODEL_CONFIG_FILE)


class Mirror:
    """A local working copy of a directory that TensorFlow cannot write itself (s3://).

    `pull` copies what the remote directory holds (to resume); `push` uploads the
    files that changed since the last push (after each checkpoint and the export),
    the files that point at others (`POINTER_FILES`) last.
    """

    def __init__(self, remote, local):
        self.remote = remote.rstrip("/")
        self.local = os.path.abspath(local)
        self._pushed = {}  # relative path -> (size, mtime) at the last push

    def pull(self):
        """Copies every file under the remote directory into the local copy; returns how many.

        Raises:
          ValueError: a remote name that would land outside the local copy.
        """
        pairs = []
        for path in contract.match(self.remote + "/**"):
            relative = path[len(self.remote) :].lstrip("/")
            destination = os.path.abspath(os.path.join(self.local, relative))
            if not destination.startswith(self.local + os.sep):
                raise ValueError(f"{path} would be copied outside {self.local}; refusing")
            pairs.append((path, destination))
        contract.copy_all(pairs)
        for _, destination in pairs:
            relative = os.path.relpath(destination, self.local)
            self._pushed[relative] = self._signature(relative)
        return len(pairs)

    def push(self):
        """Uploads the local files that changed since the last push, `POINTER_FILES` after the rest; returns how many.

        A push killed part-way leaves the store's pointers at what they named before
        (the previous checkpoint, the previous export), never at a file that is missing.
        """
        changed = []
        for root, _, files in os.walk(self.local):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), self.local)
                signature = self._signature(relative)
                if self._pushed.get(relative) != signature:
                    changed.append((relative, signature))
        for pointers in (False, True):
            contract.copy_all(
                (os.path.join(self.local, relative), contract.join(self.remote, *relative.split(os.sep)))
                for relative, _ in changed
                if (os.path.basename(relative) in POINTER_FILES) == pointers
            )
        self._pushed.update(changed)
        return len(changed)

    def _signature(self, relative):
        stat = os.stat(os.path.join(self.local, relative))
        return stat.st_size, stat.st_mtime_ns


@dataclasses.dataclass(frozen=True)
class WorkingDirs:
    """Where the trainer reads and writes, after staging: paths TensorFlow can use.

    Attributes:
      data_dir: the dataset (local or gs://; a local copy of an s3:// one).
      job_dir: checkpoints, job.json, condition.json (local or gs://; a mirrored local copy of an s3:// one).
      tensorboard_dir: TensorBoard logs (idem).
      mirrors: the Mirrors to push after each checkpoint and the export.
    """

    data_dir: str
    job_dir: str
    tensorboard_dir: str
    mirrors: tuple = ()

    def push(self):
        """Uploads what changed in every mirrored directory."""
        for mirror in self.mirrors:
            mirror.push()


def working_dirs(data_dir, job_dir, tensorboard_dir, export_dir, clean=True):
    """Stages s3:// data, mirrors an s3:// job_dir and TensorBoard directory, and cleans local ones.

    A TensorBoard directory inside a mirrored job_dir (the default, JOB_DIR/logs)
    is worked on inside the job_dir's local copy.

    Args:
      data_dir, job_dir, tensorboard_dir, export_dir: as the user gave them (local, gs://, s3://).
      clean: remove what killed writes left in a local job_dir (False on workers other than the chief,
        which would remove the chief's writes in flight).

    Returns:
      WorkingDirs.
    """
    if needs_staging(data_dir):
        data_dir = stage_dataset(data_dir, tempfile.mkdtemp(prefix="wavenet-data-"))
    mirrors = []
    local = {}
    for name, path in (("job_dir", job_dir), ("tensorboard_dir", tensorboard_dir)):
        inside = [m for m in mirrors if path.startswith(m.remote + "/")]
        if inside:
            path = os.path.join(inside[0].local, *path[len(inside[0].remote) + 1 :].split("/"))
        elif needs_staging(path):
            mirror = Mirror(path, tempfile.mkdtemp(prefix=f"wavenet-{name.replace('_', '-')}-"))
            _LOGGER.warning("Working in %s, mirrored to %s (%d files pulled)", mirror.local, path, mirror.pull())
            mirrors.append(mirror)
            path = mirror.local
        local[name] = path
    if clean and not contract.is_remote(local["job_dir"]):
        local_export = None if contract.is_remote(export_dir) else export_dir
        for path in jobdir.remove_killed_writes(local["job_dir"], local_export):
            _LOGGER.warning("Removed %s, left by a write that was killed", path)
    return WorkingDirs(data_dir, local["job_dir"], local["tensorboard_dir"], tuple(mirrors))
