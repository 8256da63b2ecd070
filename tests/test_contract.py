import numpy as np
import pytest

from pipelines import contract


def _compand(x, mu):
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def _expand(y, mu):
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


@pytest.mark.parametrize("quantization_channels", [256, 64, 2], ids=["q256", "q64", "q2"])
def test_mu_law_round_trip_within_quantization_error(quantization_channels):
    mu = quantization_channels - 1
    x = np.concatenate([np.linspace(-1, 1, 20001), np.random.default_rng(0).uniform(-1, 1, 20000)])
    decoded = contract.mu_law_decode(contract.mu_law_encode(x, quantization_channels), quantization_channels)
    # Quantization moves the companded value by at most half a step (1/mu);
    # the error is largest on the outer side, where the expansion is steepest.
    bound = _expand(np.minimum(1.0, np.abs(_compand(x, mu)) + 1.0 / mu), mu) - np.abs(x)
    assert np.all(np.abs(decoded - x) <= bound + 1e-5)


def test_mu_law_codes_use_every_level_and_are_a_fixed_point():
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(contract.mu_law_encode(contract.mu_law_decode(codes)), codes)
    encoded = contract.mu_law_encode(np.linspace(-1, 1, 100000))
    assert encoded.dtype == np.uint8
    assert encoded.min() == 0 and encoded.max() == 255
    assert contract.mu_law_encode(np.zeros(1))[0] in (127, 128)


def test_mu_law_clips_out_of_range_input():
    assert contract.mu_law_encode(np.array([-3.0, 3.0])).tolist() == [0, 255]


def test_mu_law_rejects_more_levels_than_uint8_holds():
    with pytest.raises(ValueError, match="quantization_channels must be in 2..256"):
        contract.mu_law_encode(np.zeros(4), quantization_channels=512)
