"""The code histogram's entropy: the loss, in bits per sample, of a model that learned nothing but how often
each mu-law code occurs (the baseline `python -m trainer.task` and `python -m trainer.evaluate` print beside
the model's loss).
"""

import numpy as np
import tensorflow as tf

from trainer import data


def code_entropy_bits(paths, window_samples, quantization_channels, max_windows=2000):
    """Entropy in bits per sample of the code histogram of some windows: the loss of a model that learned nothing else.

    Args:
      paths: TFRecord shard paths.
      window_samples: samples per stored window.
      quantization_channels: number of codes.
      max_windows: windows read at most (the first ones, in file order).

    Returns:
      float, bits per sample.
    """
    counts = np.zeros(quantization_channels, np.int64)
    dataset = tf.data.TFRecordDataset(paths).take(max_windows)
    for record in dataset.map(lambda r: data.parse_window(r, window_samples)):
        counts += np.bincount(record.numpy(), minlength=quantization_channels)
    return entropy_bits(counts)


def entropy_bits(counts):
    """Shannon entropy of a histogram: -sum p log2 p over the codes that occur (Shannon 1948, section 6).

    Args:
      counts: int64 [quantization_channels] occurrences of each code (not all zero).

    Returns:
      float, bits per sample.
    """
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
