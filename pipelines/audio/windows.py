"""A track as a stream: decode -> mono -> resample -> windows -> mu-law, with bounded memory (`Track`)."""

import dataclasses

import numpy as np

from pipelines import contract
from pipelines.audio.config import DEFAULT_BLOCK_SAMPLES, TRUNCATION_TOLERANCE
from pipelines.audio.decode import DECODE_FUNCTIONS, DecodeReport
from pipelines.audio.levels import clip_full_scale, drop_nonfinite
from pipelines.audio.resample import StreamResampler, downmix
from pipelines.contract import STAGE_DECODE, STAGE_WINDOW, TrackError


class WindowCutter:
    """Cuts fixed windows from a signal that arrives in chunks.

    Window k starts at sample k * hop_samples; a tail shorter than a window is
    dropped. Only the part of the signal that later windows can still use is
    kept between calls.
    """

    def __init__(self, window_samples, hop_samples):
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # Sample index of _buffer[0].
        self._next_offset = 0

    def push(self, audio):
        """Adds a chunk and yields every window it completes.

        Args:
          audio: float32 [n_samples].

        Yields:
          (offset, window): offset in samples from the start of the signal;
          window float32 [window_samples], a copy.
        """
        self._buffer = np.concatenate([self._buffer, audio])
        buffer_end = self._buffer_start + len(self._buffer)
        while self._next_offset + self.window_samples <= buffer_end:
            start = self._next_offset - self._buffer_start
            yield self._next_offset, self._buffer[start : start + self.window_samples].copy()
            self._next_offset += self.hop_samples
        keep_from = min(self._next_offset, buffer_end) - self._buffer_start
        self._buffer = self._buffer[keep_from:]
        self._buffer_start += keep_from


@dataclasses.dataclass
class TrackStats:
    """What happened to one track, filled in as its windows are consumed.

    Attributes:
      source_sample_rate: sample rate of the decoded stream in Hz (its first
        part's, for chained streams).
      source_channels: channel count of the decoded stream (likewise).
      samples: samples at the output sample rate after resampling.
      windows: windows kept.
      windows_silent_dropped: windows dropped as digital silence.
      decode_error: set when the file holds less than it should: decoding
        stopped early on corrupt data, the container declares a duration
        well above what decoded, or non-finite samples were dropped. The
        audio that decoded (and is finite) is kept.
      skipped_secs: seconds of corrupt packets skipped inside the track
        (decoding resumed after them).
      nonfinite_secs: seconds of decoded audio dropped because a sample was
        NaN or +/-Inf (`levels.drop_nonfinite`), at the source sample rate.
      clipped_samples: samples at the output sample rate that were beyond
        full scale and were clipped to +/-1 (`levels.clip_full_scale`).
      max_track_secs_reached: the track was cut at `AudioConfig.max_track_secs`.
    """

    source_sample_rate: int = 0
    source_channels: int = 0
    samples: int = 0
    windows: int = 0
    windows_silent_dropped: int = 0
    decode_error: str = ""
    skipped_secs: float = 0.0
    nonfinite_secs: float = 0.0
    clipped_samples: int = 0
    max_track_secs_reached: bool = False


class Track:
    """One track's windows of mu-law codes, produced lazily from a file object.

    Iterating yields (offset, codes): offset in samples at
    `audio_config.sample_rate`; codes uint8 [window_samples] mu-law codes in
    [0, quantization_channels). `stats` is complete once iteration ends.

    Corrupt packets are skipped and counted (`stats.skipped_secs`); corrupt
    container data after some audio ends the track early, and a declared
    duration well above what decoded marks it truncated: the audio before is
    kept and `stats.decode_error` says what happened. Sample frames holding
    NaN or +/-Inf are dropped before resampling and counted
    (`stats.nonfinite_secs`, and `decode_error` says so); samples beyond full
    scale are clipped after it and counted (`stats.clipped_samples`). Chained
    streams whose sample rate changes are resampled part by part.

    Raises (during iteration):
      TrackError: stage 'decode' if no audio can be decoded, 'window' if the
        track is shorter than one window.
    """

    def __init__(self, fileobj, audio_config, block_samples=DEFAULT_BLOCK_SAMPLES):
        self._fileobj = fileobj
        self._audio_config = audio_config
        self._block_samples = block_samples
        self.stats = TrackStats()
        self._report = DecodeReport()

    @property
    def tags(self):
        """The file's metadata tags (`DecodeReport.tags`), known once the first window or block is out.

        Empty before then, and with the pydub decoder (which reads none).
        """
        return self._report.tags

    def mono_blocks(self):
        """The track decoded, downmixed and resampled, block by block.

        Yields:
          float32 [n] mono audio at `audio_config.sample_rate` in [-1, 1]; n varies
          per block. Fills `stats` (all but the window counts) as it goes.

        Raises:
          TrackError: stage 'decode' if no audio can be decoded.
        """
        audio_config, stats = self._audio_config, self.stats
        max_samples = int(audio_config.max_track_secs * audio_config.sample_rate)
        report = self._report = DecodeReport()
        blocks = self._decoded_blocks(report)
        resampler, decoded_secs, nonfinite_from = None, 0.0, None
        try:
            for block_rate, block in blocks:
                block, dropped, first = drop_nonfinite(block)
                if dropped:
                    stats.nonfinite_secs += dropped / block_rate
                    if nonfinite_from is None:
                        nonfinite_from = decoded_secs + first / block_rate
                if resampler is None:
                    stats.source_sample_rate, stats.source_channels = block_rate, block.shape[0]
                elif block_rate != resampler.in_rate:  # A chained stream at another rate: flush, then start anew.
                    yield from self._counted(resampler.resample_chunk(np.zeros(0, np.float32), last=True), max_samples)
                    resampler = None
                if resampler is None:
                    resampler = StreamResampler(block_rate, audio_config.sample_rate, audio_config.resampler)
                decoded_secs += (block.shape[1] + dropped) / block_rate
                yield from self._counted(resampler.resample_chunk(downmix(block)), max_samples)
                if stats.max_track_secs_reached:
                    break
            if resampler is None:
                raise TrackError(STAGE_DECODE, "the file holds no audio samples")
            # The filter's delay line.
            yield from self._counted(resampler.resample_chunk(np.zeros(0, np.float32), last=True), max_samples)
        finally:
            blocks.close()  # Stops decoding (and reading) at once when the track is cut or abandoned.
        stats.skipped_secs = round(report.skipped_secs, 3)
        stats.nonfinite_secs = round(stats.nonfinite_secs, 3)
        errors = []
        if report.stop_reason:
            errors.append(f"decoding stopped after {decoded_secs:.2f} s: {report.stop_reason}")
        elif (
            not stats.max_track_secs_reached
            and report.declared_secs
            and report.declared_secs - decoded_secs > max(1.0, TRUNCATION_TOLERANCE * report.declared_secs)
        ):
            errors.append(f"decoded {decoded_secs:.1f} s of {report.declared_secs:.1f} s declared")
        if nonfinite_from is not None:
            errors.append(
                f"dropped {stats.nonfinite_secs:.3f} s of non-finite samples (NaN or Inf), the first at "
                f"{nonfinite_from:.3f} s"
            )
        stats.decode_error = "; ".join(errors)

    def _counted(self, mono, max_samples):
        """Yields `mono` (cut at max_samples in all, clipped to full scale) and counts it."""
        stats = self.stats
        if stats.samples + len(mono) >= max_samples:
            mono = mono[: max_samples - stats.samples]
            stats.max_track_secs_reached = True
        mono, clipped = clip_full_scale(mono)
        stats.clipped_samples += clipped
        stats.samples += len(mono)
        if len(mono):
            yield mono

    def _decoded_blocks(self, report):
        """(sample_rate, float32 [channels, n]) blocks from the decoder.

        A failure before the first block is a TrackError; one after it ends
        the stream (the audio before it is good) with `report.stop_reason`.
        """
        blocks = DECODE_FUNCTIONS[self._audio_config.decoder](self._fileobj, self._block_samples, report)
        try:
            first = next(blocks, None)
        except TrackError:
            raise
        except Exception as e:  # Decoders raise many types on corrupt data.
            raise TrackError(STAGE_DECODE, f"no decodable audio: {e}") from e
        if first is None:
            return
        yield first
        try:
            yield from blocks
        except Exception as e:  # As above: whatever the decoder raises, the audio before it is good.
            report.stop_reason = str(e)

    def __iter__(self):
        audio_config = self._audio_config
        stats = self.stats
        silence_peak = 10.0 ** (audio_config.silence_threshold_db / 20.0)
        cutter = WindowCutter(audio_config.window_samples, audio_config.hop_samples)
        for mono in self.mono_blocks():
            for offset, window in cutter.push(mono):
                if np.max(np.abs(window)) < silence_peak:
                    stats.windows_silent_dropped += 1
                    continue
                stats.windows += 1
                yield offset, contract.mu_law_encode(window, audio_config.quantization_channels)
        if stats.samples < audio_config.window_samples:
            raise TrackError(
                STAGE_WINDOW,
                f"track has {stats.samples / audio_config.sample_rate:.2f} s of audio, shorter than "
                f"one window ({audio_config.window_samples / audio_config.sample_rate:.2f} s)"
                + (f"; {stats.decode_error}" if stats.decode_error else ""),
            )
