"""The model presets of `python -m trainer.task --preset`: named WaveNet hyperparameters (no TensorFlow here)."""

import dataclasses

from pipelines.contract import WaveNetConfig

PRESETS = {
    # One stack of dilations 1..32, receptive field 65 samples: tests and quick CPU tries.
    "tiny": WaveNetConfig(
        residual_channels=16,
        dilation_channels=16,
        skip_channels=32,
        dilations=tuple(2**i for i in range(6)),
    ),
    # 2 stacks of dilations 1..512, receptive field 2,048 samples (0.128 s at 16 kHz).
    "default": WaveNetConfig(),
    # 4 stacks of 1..512, wider: receptive field 4,094 samples (0.256 s at 16 kHz).
    "large": WaveNetConfig(
        residual_channels=64,
        dilation_channels=64,
        skip_channels=256,
        dilations=tuple(2**i for i in range(10)) * 4,
    ),
}

DEFAULT_PRESET = "default"


def describe(name):
    """One line for --help: a preset's channels, layers and receptive field."""
    wavenet_config = PRESETS[name]
    return (
        f"{name}: {wavenet_config.residual_channels} residual / {wavenet_config.skip_channels} skip channels, "
        f"{len(wavenet_config.dilations)} layers, receptive field {wavenet_config.receptive_field} samples"
    )


def preset_config(preset, quantization_channels, condition_values):
    """A preset's WaveNetConfig for data of `quantization_channels` and a label of `condition_values` values."""
    return dataclasses.replace(
        PRESETS[preset], quantization_channels=quantization_channels, condition_values=condition_values
    )
