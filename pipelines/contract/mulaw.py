"""The mu-law codec: companding and uniform quantization of audio into codes, and back."""

import functools

import numpy as np

from pipelines.contract.limits import DEFAULT_QUANTIZATION_CHANNELS, check_quantization_channels


def mu_law_encode(audio, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """Companding and uniform quantization of audio into mu-law codes.

    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), mu = quantization_channels - 1,
    then f in [-1, 1] is mapped to the nearest of `quantization_channels`
    levels: code = rint((f + 1) mu / 2), in float32 (`mu_law_encode_reference`).
    Source: ITU-T G.711 (1988); used as in van den Oord et al., "WaveNet: A
    Generative Model for Raw Audio" (2016), section 2.2.

    Computed without log1p (5x slower than log in numpy's float32 code): an
    estimate from log(1 + mu |x|), within one level of the exact code, is
    corrected against the exact decision thresholds, i.e. the smallest float32
    input of each code under the reference formula (`mu_law_thresholds`). The
    result equals the reference's for every float32 input.

    Args:
      audio: float array [...] in [-1, 1]; values outside are clipped, NaN is read as -1.
      quantization_channels: number of levels, 2..256.

    Returns:
      uint8 array of the same shape, codes in [0, quantization_channels).

    Raises:
      ValueError: if quantization_channels is outside 2..256.
    """
    mu = _mu(quantization_channels)
    thresholds = mu_law_thresholds(quantization_channels)
    x = _clip_unit(audio)
    estimate = np.abs(x)
    estimate *= mu
    estimate += np.float32(1.0)
    np.log(estimate, out=estimate)
    estimate *= np.float32(mu / 2.0 / np.log1p(mu))
    np.copysign(estimate, x, out=estimate)
    estimate += mu / 2.0
    codes = np.rint(estimate).astype(np.int32)
    np.clip(codes, 0, quantization_channels - 1, out=codes)
    codes -= x < thresholds[codes]
    codes += x >= thresholds[codes + 1]
    return codes.astype(np.uint8)


def mu_law_encode_reference(audio, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """`mu_law_encode` written as the formula, one float32 operation after another (slower; the definition)."""
    mu = _mu(quantization_channels)
    x = _clip_unit(audio)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.float32(np.log1p(mu))
    return np.rint((companded + 1.0) * (mu / 2.0)).astype(np.uint8)


@functools.cache
def mu_law_thresholds(quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """The decision thresholds of `mu_law_encode_reference`, exact to the float32.

    Returns:
      float32 [quantization_channels + 1]: entry k (1 <= k < quantization_channels)
      is the smallest float32 x in [-1, 1] whose reference code is >= k; entry 0
      is -inf and the last +inf. The reference formula is non-decreasing in x,
      so code(x) = k exactly when thresholds[k] <= x < thresholds[k + 1].
      Found by bisection over the ordered float32 values (32 rounds).
    """
    levels = np.arange(1, quantization_channels)
    low = np.full(len(levels), _ordered_key(np.float32(-1.0)), np.int64)  # Code < k there (or -1.0 itself).
    high = np.full(len(levels), _ordered_key(np.float32(1.0)), np.int64)  # Code >= k there.
    while np.any(high - low > 1):
        middle = (low + high) // 2
        at_least = mu_law_encode_reference(_from_ordered_key(middle), quantization_channels) >= levels
        high, low = np.where(at_least, middle, high), np.where(at_least, low, middle)
    thresholds = np.empty(quantization_channels + 1, np.float32)
    thresholds[0], thresholds[-1] = -np.inf, np.inf
    thresholds[1:-1] = _from_ordered_key(high)
    thresholds.flags.writeable = False
    return thresholds


def _clip_unit(audio):
    """float32 audio clipped to [-1, 1]; NaN becomes -1 (fmax and fmin drop NaN, np.clip keeps it)."""
    return np.fmin(np.fmax(np.asarray(audio, dtype=np.float32), np.float32(-1.0)), np.float32(1.0))


def _ordered_key(x):
    """float32 -> int64 keys in the same order as the floats (adjacent floats differ by 1)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.int64)
    return np.where(bits & 0x80000000, -(bits & 0x7FFFFFFF), bits)


def _from_ordered_key(keys):
    keys = np.asarray(keys, np.int64)
    return np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32).view(np.float32)


def mu_law_decode(codes, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """Inverse of `mu_law_encode`: codes back to amplitudes.

    x = sign(y) ((1 + mu)^|y| - 1) / mu with y = 2 code / mu - 1.
    Source: ITU-T G.711 (1988); WaveNet (van den Oord et al., 2016), section 2.2.

    Args:
      codes: integer array [...] of codes in [0, quantization_channels).
      quantization_channels: number of levels, 2..256.

    Returns:
      float32 array of the same shape, in [-1, 1].

    Raises:
      ValueError: if quantization_channels is outside 2..256.
    """
    mu = _mu(quantization_channels)
    companded = np.asarray(codes, dtype=np.float32) * np.float32(2.0 / mu) - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.float32(np.log1p(mu))) / mu).astype(np.float32)


def _mu(quantization_channels):
    check_quantization_channels(int(quantization_channels))
    return np.float32(quantization_channels - 1)
