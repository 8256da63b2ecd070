"""The errors of the contracts and the checks that raise them."""

import contextlib

import numpy as np

from pipelines.contract.limits import ENCODING, MAX_SAMPLE_RATE, check_quantization_channels
from pipelines.contract.names import DATASET_FILE


class DatasetMismatchError(ValueError):
    """A dataset does not match what its user needs; the message names both values."""


class ContractError(ValueError):
    """A dataset.json or config.json is malformed or of an unknown format version."""


@contextlib.contextmanager
def parsing(file_name):
    """Turns the errors of reading a JSON object into fields into one ContractError naming the file."""
    try:
        yield
    except ContractError:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise ContractError(f"malformed {file_name}: {type(e).__name__}: {e}") from e


def check_audio_fields(contract_object, format_version, kind):
    """The fields both contracts share: a known format version, mu-law, a positive rate, uint8 codes."""
    check(
        contract_object.format_version == format_version,
        f"unknown {kind}format_version {contract_object.format_version!r}",
    )
    check(contract_object.encoding == ENCODING, f"encoding is {contract_object.encoding!r}, expected {ENCODING!r}")
    check_count(contract_object.sample_rate, "sample_rate", 1, MAX_SAMPLE_RATE)
    check_quantization_channels(contract_object.quantization_channels, ContractError)


def check(condition, message):
    if not condition:
        raise ContractError(message)


def check_count(value, name, low=0, high=None):
    """An integer (a JSON number without a fraction; not a boolean) in [low, high]."""
    check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
    bounds = f"in {low}..{high}" if high is not None else f">= {low}"
    check(value >= low and (high is None or value <= high), f"{name} must be {bounds}, got {value}")


def check_number(value, name, low, high=None):
    """A finite real number (int or float; not a boolean) in [low, high]."""
    check(
        isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value),
        f"{name} must be a finite number, got {value!r}",
    )
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    check(value >= low and (high is None or value <= high), f"{name} must be {bounds}, got {value}")


def check_plain_name(name):
    """Names read from data never choose where we read or write: a plain file name only."""
    check(
        isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0"),
        f"file name {name!r} in {DATASET_FILE} is not a plain file name",
    )
