"""Decoding: a file object of any format FFmpeg reads -> float32 blocks of interleaved-channel audio.

PyAV (in-process, streaming from the file object; the default) or pydub (ffmpeg and ffprobe
subprocesses); corrupt data is skipped or ends the track, and what was lost is reported.
"""

import dataclasses
import io
import shutil

import numpy as np

from pipelines.audio.config import DEFAULT_BLOCK_SAMPLES
from pipelines.contract import STAGE_DECODE, TrackError


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


DECODE_FUNCTIONS = {"pyav": decode_pyav, "pydub": decode_pydub}
