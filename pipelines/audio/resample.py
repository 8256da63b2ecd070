"""Channels and rate: downmixing to mono, and streaming resamplers (libsoxr, resampy's Kaiser filters)."""

import math

import numpy as np

from pipelines import compat
from pipelines.audio.config import RESAMPLERS


def downmix(audio):
    """Mono mix: the mean of the channels.

    Args:
      audio: float32 [channels, n_samples], channels >= 1.

    Returns:
      float32 [n_samples], a new array.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise ValueError(f"expected [channels >= 1, n_samples], got shape {audio.shape}")
    # The same float32 operations as audio.mean(axis=0) (channels added in order, then one division by
    # their count), without its temporaries: the result is identical, bit for bit.
    mono = audio[0].copy()
    for channel in audio[1:]:
        mono += channel
    if len(audio) > 1:
        mono /= np.float32(len(audio))
    return mono


class StreamResampler:
    """Resamples mono audio arriving in chunks, with state carried between chunks.

    `soxr_hq` and `soxr_vhq` use libsoxr's streaming resampler (soxr.ResampleStream);
    `kaiser_best` and `kaiser_fast` run resampy's band-limited interpolation
    kernel (J. O. Smith, "Digital Audio Resampling", ccrma.stanford.edu/~jos/resample)
    over a sliding buffer that keeps the filter's support on both sides, so the
    result equals `resampy.resample` on the whole signal.

    Over a whole stream the output has round(n * out_rate / in_rate) samples.
    """

    def __init__(self, in_rate, out_rate, resampler="soxr_hq"):
        if resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} and {out_rate} Hz")
        self.in_rate = in_rate
        self.out_rate = out_rate
        if in_rate == out_rate:
            self._impl = _Passthrough()
        elif resampler.startswith("soxr"):
            import soxr

            quality = "VHQ" if resampler == "soxr_vhq" else "HQ"
            self._impl = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        else:
            self._impl = _ResampyStream(in_rate, out_rate, resampler)

    def resample_chunk(self, audio, last=False):
        """Feeds one chunk.

        Args:
          audio: float32 [n_samples] at in_rate.
          last: True for the final chunk (flushes the filter's delay line).

        Returns:
          float32 [m_samples] at out_rate; m varies from chunk to chunk.
        """
        return self._impl.resample_chunk(np.ascontiguousarray(audio, dtype=np.float32), last=last)


class _Passthrough:
    def resample_chunk(self, audio, last=False):
        return audio


class _ResampyStream:
    """resampy.resample, computed chunk by chunk with an exact sliding buffer."""

    def __init__(self, in_rate, out_rate, filter_name):
        import resampy

        self._kernel = compat.resampy_kernel()
        interp_win, precision, _ = resampy.filters.get_filter(filter_name)
        sample_ratio = out_rate / in_rate
        if sample_ratio < 1:
            interp_win = sample_ratio * interp_win  # As resampy.resample does.
        self._interp_win = interp_win
        self._interp_delta = np.diff(interp_win, append=interp_win[-1])
        self._precision = precision
        self._scale = min(1.0, sample_ratio)
        self._time_increment = in_rate / out_rate
        # Input samples the filter reaches on either side of an output instant.
        self._support = len(interp_win) // int(self._scale * precision) + 1
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # Input index of _buffer[0].
        self._samples_in = 0
        self._samples_out = 0

    def resample_chunk(self, audio, last=False):
        self._buffer = np.concatenate([self._buffer, audio])
        self._samples_in += len(audio)
        if last:
            end = round(self._samples_in / self._time_increment)
        else:
            # Only outputs whose whole right-hand support has arrived.
            ready = (self._samples_in - 1 - self._support) / self._time_increment
            end = max(self._samples_out, math.floor(ready) + 1)
        times = np.arange(self._samples_out, end) * self._time_increment - self._buffer_start
        out = np.zeros(len(times), np.float32)
        if len(times):
            self._kernel(self._buffer, times, self._interp_win, self._interp_delta, self._precision, self._scale, out)
        self._samples_out = end
        keep_from = max(0, math.floor(end * self._time_increment) - self._support - self._buffer_start)
        self._buffer = self._buffer[keep_from:]
        self._buffer_start += keep_from
        return out


def resample(audio, in_rate, out_rate, resampler="soxr_hq"):
    """Resamples a whole mono signal.

    Args:
      audio: float32 [n_samples] at in_rate Hz.
      in_rate, out_rate: sample rates in Hz.
      resampler: one of RESAMPLERS.

    Returns:
      float32 [round(n_samples * out_rate / in_rate)] at out_rate Hz.
    """
    return StreamResampler(in_rate, out_rate, resampler).resample_chunk(audio, last=True)
