"""Pure audio functions: decode, downmix, resample, window, mu-law.

Everything here works on numpy arrays and file objects and knows nothing of
Beam, so the same code runs in a DoFn, in a test and (through
`contract.recording_codes`) in the sampler's primer. A `Track` flows through
as a stream of blocks: it pulls blocks from the decoder, downmixes, resamples
with a streaming resampler, cuts windows and encodes each one, so memory is
bounded by a block and a window, not by the length of the track.
"""

import dataclasses
import io
import math
import shutil

import numpy as np

from pipelines import compat, contract
from pipelines.contract import STAGE_DECODE, STAGE_WINDOW, TrackError

DECODERS = ("pyav", "pydub")
RESAMPLERS = ("soxr_hq", "soxr_vhq", "kaiser_best", "kaiser_fast")

# Decoded audio is handed on in blocks of about this many input samples:
# large enough that per-call overhead vanishes, small enough (0.25 MiB of
# float32 per channel) that memory stays flat.
DEFAULT_BLOCK_SAMPLES = 1 << 16
# Two hours: longer than nearly every piece of music, short of hours of silence in a 2 MB file.
DEFAULT_MAX_TRACK_SECS = 7200.0
# A declared duration this much longer than what decoded (and at least 1 s longer) marks a truncated file.
TRUNCATION_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """What the pipeline turns every track into.

    Attributes:
      sample_rate: output sample rate in Hz.
      quantization_channels: number of mu-law levels, 2..256.
      window_samples: window length in samples at `sample_rate`.
      hop_samples: distance between window starts in samples.
      decoder: one of DECODERS.
      resampler: one of RESAMPLERS.
      silence_threshold_db: a window whose peak is below this level in dBFS
        is digital silence and is dropped; -inf keeps every window.
      max_track_secs: audio of a track past this many seconds is not
        processed (an hours-long file of silence or a stream that never ends
        cannot flood the dataset); the track record says so.
    """

    sample_rate: int = contract.DEFAULT_SAMPLE_RATE
    quantization_channels: int = contract.DEFAULT_QUANTIZATION_CHANNELS
    window_samples: int = contract.DEFAULT_WINDOW_SAMPLES
    hop_samples: int = contract.DEFAULT_WINDOW_SAMPLES
    decoder: str = "pyav"
    resampler: str = "soxr_hq"
    silence_threshold_db: float = -60.0
    max_track_secs: float = DEFAULT_MAX_TRACK_SECS

    def __post_init__(self):
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate} Hz")
        if not 2 <= self.quantization_channels <= 256:
            raise ValueError(f"quantization_channels must be in 2..256, got {self.quantization_channels}")
        if self.window_samples <= 0 or self.hop_samples <= 0:
            raise ValueError(
                f"window_samples and hop_samples must be positive, got {self.window_samples} and {self.hop_samples}"
            )
        if not self.max_track_secs > 0:
            raise ValueError(f"max_track_secs must be positive, got {self.max_track_secs}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {self.resampler!r}")


@dataclasses.dataclass
class DecodeReport:
    """What a decoder saw besides the samples, filled in as it decodes.

    Attributes:
      declared_secs: the duration the container declares (header, index or
        bitrate estimate), or None when it declares none.
      skipped_packets: corrupt packets skipped (decoding resumed after them).
      skipped_secs: audio those packets held, in seconds (where the container says).
      stop_reason: why decoding ended before the end of the data ('' when it did not).
      container_format: FFmpeg's name of the container format, once opened.
      segment_offset: byte offset of the link of a chained stream being decoded.
      tags: the file's metadata tags (container and audio stream merged), once opened:
        dict of FFmpeg's keys (ID3, Vorbis comments, MP4 atoms, RIFF INFO) as written -> str.
    """

    declared_secs: float = None
    skipped_packets: int = 0
    skipped_secs: float = 0.0
    stop_reason: str = ""
    container_format: str = None
    segment_offset: int = 0
    tags: dict = dataclasses.field(default_factory=dict)


def decode_pyav(fileobj, block_samples=DEFAULT_BLOCK_SAMPLES, report=None):
    """Decodes the first audio stream of a file object with PyAV (in-process FFmpeg).

    No temporary files, no subprocess: the container is read from `fileobj`
    as it decodes, so only one block of decoded audio is held at a time.
    Packets are decoded one by one, so a corrupt packet is skipped and
    decoding resumes after it, as FFmpeg's own command line does; chained and
    concatenated streams decode to their end (a block never mixes sample
    rates or channel counts). Corrupt container data after some audio ends
    the stream; `report.stop_reason` says why.

    Args:
      fileobj: readable, seekable binary file object.
      block_samples: samples per channel in each yielded block (the last may be shorter).
      report: DecodeReport to fill in, or None.

    Yields:
      (sample_rate, audio): sample_rate in Hz (int); audio float32
      [channels, n_samples] in [-1, 1].

    Raises:
      TrackError: stage 'decode' when the data is not a decodable audio file,
        has no audio stream or has zero channels, or no packet decodes.
    """

    report = DecodeReport() if report is None else report
    segment = fileobj
    while True:
        yield from _decode_container(segment, block_samples, report)
        if not report.stop_reason or report.container_format != "ogg":
            return
        # FFmpeg's Ogg demuxer gives up where a chained stream changes its parameters
        # ("patches welcome"); the next link of the chain is an Ogg stream of its own.
        next_link = _next_ogg_link(fileobj, report.segment_offset)
        if next_link is None:
            return
        report.stop_reason, report.segment_offset = "", next_link
        segment = _Slice(fileobj, next_link)


def _decode_container(fileobj, block_samples, report):
    """decode_pyav for one container (one link of a chained stream)."""
    import av

    first_segment = report.container_format is None
    try:
        container = av.open(fileobj, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, OSError) as e:
        if not first_segment:
            report.stop_reason = f"the next link of the chained stream does not open: {e}"
            return
        raise TrackError(STAGE_DECODE, f"not a decodable audio file: {e}") from e
    with container:
        report.container_format = container.format.name
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise TrackError(
                STAGE_DECODE,
                f"no audio stream in the {container.format.name} container (streams: {', '.join(kinds)})",
            )
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise TrackError(
                STAGE_DECODE,
                f"unsupported audio codec in the {container.format.name} container: FFmpeg has no decoder for it",
            )
        if stream.codec_context.channels < 1:
            raise TrackError(STAGE_DECODE, "audio stream has zero channels")
        if first_segment:
            report.declared_secs = _declared_secs(container, stream)
            report.tags = {**container.metadata, **stream.metadata}
        converters = {}  # One libswresample format converter per input layout (chained streams may change it).
        pending = []  # Per frame, a list of one float32 [n] array per channel.
        pending_samples = 0
        layout = None  # (sample rate, channels) of what is pending.
        for frame in _frames(container, stream, report):
            if frame.format.name == "fltp":
                # Most lossy codecs decode to planar float already: read the planes, skipping a conversion.
                converted = [frame]
            else:
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if key not in converters:
                    converters[key] = av.AudioResampler(format="fltp")
                converted = converters[key].resample(frame)
            for f in converted:
                planes, samples = f.planes, f.samples
                if pending and (f.sample_rate, len(planes)) != layout:
                    yield layout[0], _join_planes(pending)
                    pending, pending_samples = [], 0
                layout = (f.sample_rate, len(planes))
                pending.append([np.frombuffer(plane, np.float32, samples) for plane in planes])
                pending_samples += samples
            if pending_samples >= block_samples:
                yield layout[0], _join_planes(pending)
                pending, pending_samples = [], 0
        if pending:
            yield layout[0], _join_planes(pending)


def _next_ogg_link(fileobj, start):
    """Byte offset of the next link of a chained Ogg stream after the one starting at `start`, or None.

    Walks the Ogg pages (RFC 3533 section 6: "OggS", version, header type,
    granule position, serial, sequence, CRC, segment count, segment table,
    body) from `start`; a link begins with a beginning-of-stream page (header
    type bit 0x02) that follows a page that is not one.
    """
    position, previous_bos = start, True
    while True:
        fileobj.seek(position)
        header = fileobj.read(27)
        if len(header) < 27 or header[:4] != b"OggS":
            return None  # The end, or lost sync (garbage): nothing more to find here.
        bos = bool(header[5] & 0x02)
        if bos and not previous_bos:
            return position
        table = fileobj.read(header[26])
        if len(table) < header[26]:
            return None
        position += 27 + len(table) + sum(table)
        previous_bos = bos


class _Slice(io.RawIOBase):
    """A read-only view of a seekable file from `offset` on (one link of a chained stream)."""

    def __init__(self, fileobj, offset):
        super().__init__()
        self._fileobj, self._offset = fileobj, offset
        self._fileobj.seek(offset)

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        data = self._fileobj.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, position, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            position += self._offset
        return self._fileobj.seek(position, whence) - self._offset

    def tell(self):
        return self._fileobj.tell() - self._offset


def _declared_secs(container, stream):
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _join_planes(frames):
    """float32 [channels, n] from a list of frames, each a list of per-channel arrays."""
    joined = np.empty((len(frames[0]), sum(len(frame[0]) for frame in frames)), np.float32)
    for row, channel in zip(joined, zip(*frames, strict=True), strict=True):
        np.concatenate(channel, out=row)
    return joined


def _frames(container, stream, report):
    """Decoded frames of `stream`, packet by packet, skipping the packets that fail to decode.

    Raises:
      TrackError: when packets failed and none decoded, or the container
        fails before any frame (after one, the stream just ends, with report.stop_reason).
    """
    import av

    decoded_any, first_error = False, None
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
        except (av.FFmpegError, OSError, ValueError) as e:  # Corrupt container data.
            if not decoded_any:
                raise TrackError(STAGE_DECODE, f"no decodable audio: {e}") from e
            report.stop_reason = str(e)
            return
        if packet is None:
            break
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            report.skipped_packets += 1
            if packet.duration and packet.time_base:
                report.skipped_secs += float(packet.duration * packet.time_base)
            first_error = first_error or e
            continue
        for frame in frames:
            decoded_any = True
            yield frame
    if first_error is not None and not decoded_any:
        raise TrackError(STAGE_DECODE, f"no decodable audio: {first_error}") from first_error


def decode_pydub(fileobj, block_samples=DEFAULT_BLOCK_SAMPLES, report=None):
    """Decodes a file object with pydub, which runs the `ffmpeg` executable.

    Kept for compatibility with existing recipes. pydub copies the input to a
    temporary file, starts ffmpeg and ffprobe subprocesses and holds the whole
    decoded track in memory, so prefer `decode_pyav`.

    Args, Yields: as `decode_pyav` (the report stays empty: ffmpeg's CLI
    skips corrupt packets itself and declares nothing to pydub).

    Raises:
      TrackError: stage 'decode' when ffmpeg/ffprobe are missing or cannot
        decode the data.
    """
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise TrackError(STAGE_DECODE, "the pydub decoder needs ffmpeg and ffprobe on PATH")
    import warnings

    with warnings.catch_warnings():
        # pydub imports audioop, deprecated since Python 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        import pydub
        from pydub.exceptions import CouldntDecodeError

    try:
        segment = pydub.AudioSegment.from_file(fileobj)
    except CouldntDecodeError as e:
        raise TrackError(STAGE_DECODE, f"ffmpeg could not decode the file: {_ffmpeg_reason(str(e))}") from e
    except (IndexError, KeyError, ValueError) as e:
        # pydub indexes ffprobe's JSON stream list; these mean no usable audio stream.
        raise TrackError(STAGE_DECODE, f"ffprobe found no usable audio stream ({type(e).__name__}: {e})") from e
    if segment.channels < 1:
        raise TrackError(STAGE_DECODE, "audio stream has zero channels")
    full_scale = float(1 << (8 * segment.sample_width - 1))
    interleaved = np.asarray(segment.get_array_of_samples())
    planar = interleaved.reshape(-1, segment.channels).T
    for start in range(0, planar.shape[1], block_samples):
        block = planar[:, start : start + block_samples].astype(np.float32) / np.float32(full_scale)
        yield segment.frame_rate, block


def _ffmpeg_reason(stderr):
    """The informative line of ffmpeg's stderr (pydub puts all of it in its error)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        lowered = line.lower()
        if "statistics" not in lowered and any(w in lowered for w in ("invalid", "error", "unsupported", "not ")):
            return line
    return lines[-1] if lines else "no message"


_DECODE_FUNCTIONS = {"pyav": decode_pyav, "pydub": decode_pydub}


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
        stopped early on corrupt data, or the container declares a duration
        well above what decoded. The audio that decoded is kept.
      skipped_secs: seconds of corrupt packets skipped inside the track
        (decoding resumed after them).
      max_track_secs_reached: the track was cut at `AudioConfig.max_track_secs`.
    """

    source_sample_rate: int = 0
    source_channels: int = 0
    samples: int = 0
    windows: int = 0
    windows_silent_dropped: int = 0
    decode_error: str = ""
    skipped_secs: float = 0.0
    max_track_secs_reached: bool = False


class Track:
    """One track's windows of mu-law codes, produced lazily from a file object.

    Iterating yields (offset, codes): offset in samples at
    `config.sample_rate`; codes uint8 [window_samples] mu-law codes in
    [0, quantization_channels). `stats` is complete once iteration ends.

    Corrupt packets are skipped and counted (`stats.skipped_secs`); corrupt
    container data after some audio ends the track early, and a declared
    duration well above what decoded marks it truncated: the audio before is
    kept and `stats.decode_error` says what happened. Chained streams whose
    sample rate changes are resampled part by part.

    Raises (during iteration):
      TrackError: stage 'decode' if no audio can be decoded, 'window' if the
        track is shorter than one window.
    """

    def __init__(self, fileobj, config, block_samples=DEFAULT_BLOCK_SAMPLES):
        self._fileobj = fileobj
        self._config = config
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
          float32 [n] mono audio at `config.sample_rate`; n varies per block.
          Fills `stats` (all but the window counts) as it goes.

        Raises:
          TrackError: stage 'decode' if no audio can be decoded.
        """
        config, stats = self._config, self.stats
        max_samples = int(config.max_track_secs * config.sample_rate)
        report = self._report = DecodeReport()
        blocks = self._decoded_blocks(report)
        resampler, decoded_secs = None, 0.0
        try:
            for block_rate, block in blocks:
                if resampler is None:
                    stats.source_sample_rate, stats.source_channels = block_rate, block.shape[0]
                elif block_rate != resampler.in_rate:  # A chained stream at another rate: flush, then start anew.
                    yield from self._counted(resampler.resample_chunk(np.zeros(0, np.float32), last=True), max_samples)
                    resampler = None
                if resampler is None:
                    resampler = StreamResampler(block_rate, config.sample_rate, config.resampler)
                decoded_secs += block.shape[1] / block_rate
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
        if report.stop_reason:
            stats.decode_error = f"decoding stopped after {decoded_secs:.2f} s: {report.stop_reason}"
        elif (
            not stats.max_track_secs_reached
            and report.declared_secs
            and report.declared_secs - decoded_secs > max(1.0, TRUNCATION_TOLERANCE * report.declared_secs)
        ):
            stats.decode_error = f"decoded {decoded_secs:.1f} s of {report.declared_secs:.1f} s declared"

    def _counted(self, mono, max_samples):
        """Yields `mono` (cut at max_samples in all) and counts it."""
        stats = self.stats
        if stats.samples + len(mono) >= max_samples:
            mono = mono[: max_samples - stats.samples]
            stats.max_track_secs_reached = True
        stats.samples += len(mono)
        if len(mono):
            yield mono

    def _decoded_blocks(self, report):
        """(sample_rate, float32 [channels, n]) blocks from the decoder.

        A failure before the first block is a TrackError; one after it ends
        the stream (the audio before it is good) with `report.stop_reason`.
        """
        blocks = _DECODE_FUNCTIONS[self._config.decoder](self._fileobj, self._block_samples, report)
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
        config = self._config
        stats = self.stats
        silence_peak = 10.0 ** (config.silence_threshold_db / 20.0)
        cutter = WindowCutter(config.window_samples, config.hop_samples)
        for mono in self.mono_blocks():
            for offset, window in cutter.push(mono):
                if np.max(np.abs(window)) < silence_peak:
                    stats.windows_silent_dropped += 1
                    continue
                stats.windows += 1
                yield offset, contract.mu_law_encode(window, config.quantization_channels)
        if stats.samples < config.window_samples:
            raise TrackError(
                STAGE_WINDOW,
                f"track has {stats.samples / config.sample_rate:.2f} s of audio, shorter than "
                f"one window ({config.window_samples / config.sample_rate:.2f} s)",
            )
