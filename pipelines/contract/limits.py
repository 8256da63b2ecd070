"""The audio format both contracts share, its defaults, and the bounds no real dataset or model passes."""

ENCODING = "mu-law"

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_QUANTIZATION_CHANNELS = 256
# Codes are stored as uint8: the one range of quantization channels, checked where each contract is read and
# where the codec and the pipeline's AudioConfig take it (`check_quantization_channels`).
MIN_QUANTIZATION_CHANNELS, MAX_QUANTIZATION_CHANNELS = 2, 256
DEFAULT_WINDOW_SAMPLES = 16000
# Bounds that no real dataset or model reaches; past them a description or config is damaged or hostile,
# and trusting it would allocate without limit.
MAX_SAMPLE_RATE = 768000  # Hz: the highest rate of common audio converters.
MAX_WINDOW_SAMPLES = 1 << 30  # 1 GiB of codes in one tf.train.Example (protobuf's limit is 2 GiB).
MAX_RECEPTIVE_FIELD = 1 << 24  # samples: 17 min at 16 kHz, hundreds of times the paper's.
MAX_CHANNELS = 1 << 14
MAX_CONDITION_VALUES = 1 << 24


def check_quantization_channels(value, error=ValueError):
    """Raises `error` unless `value` is an integer number of mu-law levels that uint8 codes hold (2..256)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_QUANTIZATION_CHANNELS <= value <= MAX_QUANTIZATION_CHANNELS
    ):
        raise error(
            f"quantization_channels must be in {MIN_QUANTIZATION_CHANNELS}..{MAX_QUANTIZATION_CHANNELS} (an integer, "
            f"to fit uint8 codes), got {value!r}"
        )
