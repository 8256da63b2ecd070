"""What a track becomes: the settings of the pipeline's audio path (`AudioConfig`) and its choices."""

import dataclasses

from pipelines import contract

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
        contract.check_quantization_channels(self.quantization_channels)
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
