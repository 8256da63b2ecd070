"""Where the trainer's files live when TensorFlow cannot reach them itself.

TensorFlow reads and writes local paths and gs:// directly; for s3:// (and any
other Beam filesystem) the trainer stages the dataset to local disk
(`stage_dataset`) and works in a local copy of the job_dir that it mirrors
back (`JobDirMirror`). Every copy goes through Beam's filesystems.
"""

import logging
import os

from pipelines import contract

_LOGGER = logging.getLogger(__name__)


def needs_staging(uri):
    """Whether TensorFlow cannot read/write `uri` itself: it does local paths and gs://, not s3://."""
    return contract.is_remote(uri) and not uri.startswith("gs://")


def stage_dataset(data_uri, local_dir):
    """Copies dataset.json and every shard it lists to local_dir, through Beam's filesystems (s3://, ...).

    Shard names come from dataset.json, which `contract.read_description`
    accepts only when each is a plain file name, so nothing is written outside local_dir.

    Returns:
      local_dir, a directory `trainer.data` reads like the original.
    """
    description = contract.read_description(data_uri)
    contract.copy(_join(data_uri, contract.DATASET_FILE), os.path.join(local_dir, contract.DATASET_FILE))
    names = [name for split in description.splits.values() for name in split.files]
    for name in names:
        contract.copy(_join(data_uri, name), os.path.join(local_dir, name))
    _LOGGER.warning("Staged %s (%d shards) to %s", data_uri, len(names), local_dir)
    return local_dir


def _join(uri, *names):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(uri, *names)


class JobDirMirror:
    """A local working copy of a job_dir that TensorFlow cannot write itself (s3://).

    `pull` copies what the remote job_dir holds (to resume); `push` uploads the
    files that changed since the last push (after each checkpoint and the export).
    """

    def __init__(self, remote, local):
        self.remote = remote.rstrip("/")
        self.local = os.path.abspath(local)
        self._pushed = {}  # relative path -> (size, mtime) at the last push

    def pull(self):
        """Copies every file under the remote job_dir into the local copy; returns how many.

        Raises:
          ValueError: a remote name that would land outside the local copy.
        """
        from apache_beam.io.filesystems import FileSystems

        matches = FileSystems.match([self.remote + "/**"])[0].metadata_list
        for metadata in matches:
            relative = metadata.path[len(self.remote) :].lstrip("/")
            destination = os.path.abspath(os.path.join(self.local, relative))
            if not destination.startswith(self.local + os.sep):
                raise ValueError(f"{metadata.path} would be copied outside {self.local}; refusing")
            contract.copy(metadata.path, destination)
            self._pushed[relative] = self._signature(relative)
        return len(matches)

    def push(self):
        """Uploads the local files that changed since the last push; returns how many."""
        pushed = 0
        for root, _, files in os.walk(self.local):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), self.local)
                signature = self._signature(relative)
                if self._pushed.get(relative) != signature:
                    contract.copy(os.path.join(self.local, relative), _join(self.remote, *relative.split(os.sep)))
                    self._pushed[relative] = signature
                    pushed += 1
        return pushed

    def remote_path(self, local_path):
        """The remote counterpart of a path inside the local copy."""
        return _join(self.remote, *os.path.relpath(local_path, self.local).split(os.sep))

    def _signature(self, relative):
        stat = os.stat(os.path.join(self.local, relative))
        return stat.st_size, stat.st_mtime_ns
