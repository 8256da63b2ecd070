"""Augmentation of mu-law code windows: a random level (`random_gain`) and a random polarity
(`random_polarity_inversion`), each a function of a stateless seed so the input stream stays deterministic.

`trainer.data` applies them to each crop, with the crop's own seed.
"""

import numpy as np
import tensorflow as tf

from pipelines import contract


def random_gain(codes, gain_db, seed, quantization_channels=contract.DEFAULT_QUANTIZATION_CHANNELS):
    """Mu-law codes of the same audio at a random level, never clipped: gain augmentation.

    Each code is read as an amplitude drawn uniformly within its quantization
    interval (the interval `contract.mu_law_encode` maps to it, so that
    re-quantizing at 0 dB gives back the same codes and louder audio has no
    gaps between the codes used), multiplied by a gain drawn uniformly in
    [-gain_db, +gain_db] dB, lowered where needed so the peak stays within
    [-1, 1], and quantized again with `contract.mu_law_encode`'s thresholds.
    Drawing within the interval is uniform dequantization (Theis, van den Oord
    and Bethge, "A note on the evaluation of generative models", ICLR 2016,
    section 3.1); a random gain is the usual level augmentation of audio models.

    Args:
      codes: int32 [time] codes in [0, quantization_channels).
      gain_db: the largest gain and attenuation, in dB (> 0).
      seed: int64 [2] stateless seed; the draws use keys split from it
        (tf.random.experimental.stateless_split), not the seed itself.
      quantization_channels: number of mu-law codes.

    Returns:
      int32 [time] codes in [0, quantization_channels).
    """
    thresholds = contract.mu_law_thresholds(quantization_channels)
    # The quantization interval of each code: [thresholds[k], thresholds[k + 1]), -1 and 1 at the ends.
    bounds = tf.constant(np.clip(thresholds, -1.0, 1.0), tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    within = tf.random.stateless_uniform(tf.shape(codes), seed=seeds[0], dtype=tf.float32)
    low, high = tf.gather(bounds, codes), tf.gather(bounds, codes + 1)
    audio = low + within * (high - low)
    decibels = tf.random.stateless_uniform([], seed=seeds[1], minval=-gain_db, maxval=gain_db)
    peak = tf.reduce_max(tf.abs(audio))
    gain = tf.minimum(tf.pow(10.0, decibels / 20.0), 1.0 / tf.maximum(peak, 1e-6))
    inner = tf.constant(thresholds[1:-1], tf.float32)
    return tf.cast(tf.searchsorted(inner, audio * gain, side="right"), tf.int32)


def random_polarity_inversion(codes, seed, quantization_channels=contract.DEFAULT_QUANTIZATION_CHANNELS):
    """The codes of the same audio with its sign inverted, or unchanged, with probability 1/2 each.

    Mu-law is odd-symmetric, so -x has the code (quantization_channels - 1) - code(x)
    (`contract.mu_law_encode`; ties of the rounding aside, which real audio does
    not hit); an inverted waveform sounds the same.

    Args:
      codes: int32 [time] codes in [0, quantization_channels).
      seed: int64 [2] stateless seed; the draw uses a key split from it, not
        the seed itself nor the keys `random_gain` uses.
      quantization_channels: number of mu-law codes.

    Returns:
      int32 [time] codes in [0, quantization_channels).
    """
    key = tf.random.experimental.stateless_split(seed, num=3)[2]
    invert = tf.random.stateless_uniform([], seed=key) < 0.5
    return tf.where(invert, quantization_channels - 1 - codes, codes)
