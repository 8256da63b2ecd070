"""Shard integrity: is each shard dataset.json lists there and whole, and which one is damaged.

Before training (and scoring) a stat of each listed shard finds what is missing, a directory or
too small for the windows dataset.json counts (`check_shard_files`); after the input failed,
reading each shard whole names the damaged one (`find_bad_shard`), where TensorFlow's
"corrupted record at N" names no file. Every message ends with the check to run (`verify_hint`).
"""

import tensorflow as tf

from pipelines import contract
from trainer import data

# Bytes of TFRecord framing around each record: its length (8), the length's CRC (4) and the data's CRC (4)
# (the TFRecord format, TensorFlow's "TFRecord and tf.train.Example" guide).
TFRECORD_FRAMING_BYTES = 16


def check_shard_files(data_dir, description, splits=contract.SPLITS):
    """What a stat of each listed shard can tell before training, so that nothing trains on half the data.

    Args:
      data_dir: the dataset directory (local or gs://).
      description: its contract.DatasetDescription.
      splits: the splits to check.

    Returns:
      list of str warnings: an empty shard; shards too small to hold the windows
      dataset.json counts (each record holds window_samples codes plus framing).

    Raises:
      contract.DatasetMismatchError: a listed shard is missing or is a directory; the
        message names it and the check to run.
    """
    warnings = []
    for split in splits:
        total = 0
        for path in description.shard_paths(data_dir, split):
            if not tf.io.gfile.exists(path):
                raise contract.DatasetMismatchError(
                    f"{path} is listed in dataset.json but missing; {verify_hint(data_dir)}"
                )
            if tf.io.gfile.isdir(path):
                raise contract.DatasetMismatchError(f"{path} is a directory, not a shard; {verify_hint(data_dir)}")
            size = tf.io.gfile.stat(path).length
            if size == 0:
                warnings.append(f"{path} is empty (0 bytes); {verify_hint(data_dir)}")
            total += size
        windows = description.splits[split].windows
        needed = windows * (description.window_samples + TFRECORD_FRAMING_BYTES)
        if total < needed:
            warnings.append(
                f"the {split} shards hold {total:,} bytes, fewer than the {windows:,} windows dataset.json lists "
                f"need (at least {needed:,}): shards were truncated or replaced; {verify_hint(data_dir)}"
            )
    return warnings


def verify_hint(data_dir):
    """The end of every message about a damaged shard: the command that checks the whole dataset."""
    return f"check the dataset with: python -m pipelines.verify {data_dir}"


def find_bad_shard(paths, window_samples):
    """Reads each shard whole to find which one the input pipeline failed on (called after a failure).

    Args:
      paths: TFRecord shard paths.
      window_samples: samples per window (from dataset.json).

    Returns:
      (path, what is wrong) of the first bad shard, or None when every one reads.
    """
    for path in paths:
        records = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                data.parse_window(record, window_samples)
                records += 1
        except tf.errors.DataLossError as e:
            return path, f"corrupt after {records} good records ({e.message.splitlines()[0]})"
        except tf.errors.InvalidArgumentError as e:
            return path, f"record {records} does not hold {window_samples} codes ({e.message.splitlines()[0]})"
        except tf.errors.OpError as e:
            return path, f"unreadable ({type(e).__name__}: {e.message.splitlines()[0]})"
    return None
