"""Sample values the mu-law codec can place: non-finite frames dropped, samples beyond full scale clipped, both counted.

Float formats (32- and 64-bit WAV, AIFF-C, FLAC from float renders) can hold NaN, +/-Inf and samples
far beyond full scale. The codec has no code for NaN and none past +/-1, so these are handled here,
where the track's record can say what happened, and never quantized as garbage.
"""

import numpy as np


def drop_nonfinite(audio):
    """The sample frames of `audio` whose every channel is finite.

    A frame holding NaN or +/-Inf in any channel (a broken render) is dropped:
    it has no level, and a resampler would spread it over its whole filter.

    Args:
      audio: float32 [channels, n_samples].

    Returns:
      (kept, dropped, first): kept float32 [channels, n_kept], the finite
      frames in order (`audio` itself when all are finite); dropped, the
      number of frames dropped (int); first, the index in `audio` of the first
      frame dropped, or None.
    """
    finite = np.isfinite(audio).all(axis=0)
    kept = int(np.count_nonzero(finite))
    if kept == audio.shape[1]:
        return audio, 0, None
    return audio[:, finite], audio.shape[1] - kept, int(np.argmin(finite))


def clip_full_scale(mono):
    """Samples clipped to full scale, [-1, 1], as any conversion of float audio to fixed point does.

    A float file mastered hot (or a render at +40 dBFS) holds samples past
    +/-1, and resampling adds small overshoots near full scale; mu-law has no
    code beyond +/-1.

    Args:
      mono: float32 [n_samples], finite.

    Returns:
      (clipped, count): clipped float32 [n_samples] in [-1, 1] (`mono` itself
      when no sample is beyond full scale, else a new array); count, the
      samples that were beyond it (int).
    """
    count = int(np.count_nonzero(np.abs(mono) > 1.0))
    if not count:
        return mono, 0
    return np.clip(mono, np.float32(-1.0), np.float32(1.0)), count
