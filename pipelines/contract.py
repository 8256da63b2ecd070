"""The contracts shared by the pipeline, the trainer and the sampler.

This is the one small module that all three programs import: the names and
defaults of the TFRecord features and of `dataset.json` (the dataset
contract), the files and layer names of an exported model (the model
contract), and the mu-law codec. It depends on numpy only, so Beam workers,
the trainer and the sampler can all import it cheaply.
"""

import numpy as np

DATASET_FORMAT_VERSION = 1
ENCODING = "mu-law"

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_QUANTIZATION_CHANNELS = 256
DEFAULT_WINDOW_SAMPLES = 16000

# tf.train.Example feature keys.
AUDIO_FEATURE = "audio"  # bytes: window_samples uint8 mu-law codes
TRACK_ID_FEATURE = "track_id"  # bytes: stable hash of the source URI
OFFSET_FEATURE = "offset"  # int64: window start, in samples at sample_rate

# Files written into the output directory.
DATASET_FILE = "dataset.json"
FAILURES_FILE = "failures.jsonl"
TRACKS_FILE = "tracks.jsonl"
TFRECORD_SUFFIX = ".tfrecord"

# The model contract: what trainer.task exports and sampler.generate loads.
MODEL_FILE = "model.keras"  # Keras built-in layers only
MODEL_CONFIG_FILE = "config.json"  # hyperparameters, receptive_field, sample_rate, quantization_channels
EXPORT_DIR = "export"
EMBEDDING_LAYER = "embedding"
CAUSAL_CONV_LAYER = "causal_conv"
SKIP_OUT_LAYER = "skip_out"
LOGITS_LAYER = "logits"


def gate_layer(index):
    """Name of dilated layer `index`'s filter-and-gate convolution (2 x dilation_channels outputs)."""
    return f"gate_{index}"


def residual_skip_layer(index):
    """Name of dilated layer `index`'s 1x1 residual-and-skip convolution (residual, then skip channels)."""
    return f"residual_skip_{index}"


TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)


def mu_law_encode(audio, quantization_channels=DEFAULT_QUANTIZATION_CHANNELS):
    """Companding and uniform quantization of audio into mu-law codes.

    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), mu = quantization_channels - 1,
    then f in [-1, 1] is mapped to the nearest of `quantization_channels`
    levels. Source: ITU-T G.711 (1988); used as in van den Oord et al.,
    "WaveNet: A Generative Model for Raw Audio" (2016), section 2.2.

    Args:
      audio: float array [...] in [-1, 1]; values outside are clipped.
      quantization_channels: number of levels, 2..256.

    Returns:
      uint8 array of the same shape, codes in [0, quantization_channels).

    Raises:
      ValueError: if quantization_channels is outside 2..256.
    """
    mu = _mu(quantization_channels)
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.float32(np.log1p(mu))
    return np.rint((companded + 1.0) * (mu / 2.0)).astype(np.uint8)


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
    if not 2 <= quantization_channels <= 256:
        raise ValueError(f"quantization_channels must be in 2..256 to fit uint8 codes, got {quantization_channels}")
    return np.float32(quantization_channels - 1)
