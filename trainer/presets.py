"""The model presets of `python -m trainer.task --preset`: named WaveNet hyperparameters (no TensorFlow here)."""

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
    config = PRESETS[name]
    return (
        f"{name}: {config.residual_channels} residual / {config.skip_channels} skip channels, "
        f"{len(config.dilations)} layers, receptive field {config.receptive_field} samples"
    )
