"""A recording as codes, exactly as the pipeline makes them: the sampler's primer path.

The one module of `pipelines` outside the contract that the sampler imports (import-linter allows
exactly that edge); it needs the decoders and resamplers, so it is not in the contract.
"""

import numpy as np

from pipelines import contract
from pipelines.audio.config import AudioConfig
from pipelines.audio.windows import Track


def recording_codes(fileobj, sample_rate, quantization_channels, max_samples=None):
    """A recording as mu-law codes, decoded, downmixed and resampled exactly as the pipeline does.

    Uses the pipeline's default decoder (PyAV) and resampler (soxr_hq); no
    windowing and no silence dropping. Memory is bounded by `max_samples`.

    Args:
      fileobj: readable, seekable binary file object of any format FFmpeg decodes.
      sample_rate: output sample rate in Hz.
      quantization_channels: mu-law levels, 2..256.
      max_samples: keep only the last this many samples (None keeps all).

    Returns:
      uint8 [n] codes in [0, quantization_channels), n <= max_samples.

    Raises:
      TrackError: stage 'decode' when the file holds no decodable audio.
    """
    audio_config = AudioConfig(sample_rate=sample_rate, quantization_channels=quantization_channels)
    tail = np.zeros(0, np.float32)
    for mono in Track(fileobj, audio_config).mono_blocks():
        tail = np.concatenate([tail, mono])
        if max_samples is not None:
            tail = tail[-max_samples:]
    return contract.mu_law_encode(tail, quantization_channels)
