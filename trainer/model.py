"""The WaveNet, and only the WaveNet.

van den Oord et al., "WaveNet: A Generative Model for Raw Audio" (2016):
mu-law codes (section 2.2) go through an embedding and a causal convolution,
then stacks of dilated causal convolutions with gated tanh x sigmoid units
(section 2.3) and residual and parameterised skip connections (section 2.4);
the summed skips go through ReLU -> 1x1 -> ReLU -> 1x1 to a softmax over the
quantization channels.

Built with Keras 3 built-in layers only (functional API, named layers), so
the exported `.keras` file loads without this module, and the sampler can
read each layer's weights by name for its cached generation.
"""

import keras

from pipelines import contract
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


def build_wavenet(config):
    """The WaveNet as a Keras functional model.

    With `config.condition_values` > 0 the model is globally conditioned
    (van den Oord et al. 2016, section 2.5): each dilated layer adds an
    embedding of the label, V_f h and V_g h for the one-hot label h, to its
    filter and gate pre-activations at every time step.

    Args:
      config: WaveNetConfig.

    Returns:
      keras.Model mapping int32 [batch, time] codes in [0, quantization_channels)
      to float [batch, time, quantization_channels] logits; output t depends only
      on inputs 0..t (causal), and on all of t - receptive_field + 1 .. t.
      A conditioned model takes [codes, condition] with condition int32 [batch]
      label indices in [0, condition_values).
    """
    codes = keras.Input(shape=(None,), dtype="int32", name="codes")
    condition = None
    if config.condition_values:
        condition = keras.Input(shape=(), dtype="int32", name=contract.CONDITION_INPUT)
    x = keras.layers.Embedding(config.quantization_channels, config.residual_channels, name=contract.EMBEDDING_LAYER)(
        codes
    )
    x = keras.layers.Conv1D(
        config.residual_channels, config.filter_width, padding="causal", name=contract.CAUSAL_CONV_LAYER
    )(x)
    skips = []
    for layer, dilation in enumerate(config.dilations):
        # Filter and gate in one convolution, split in half (same maths as two).
        gated = keras.layers.Conv1D(
            2 * config.dilation_channels,
            config.filter_width,
            dilation_rate=dilation,
            padding="causal",
            name=contract.gate_layer(layer),
        )(x)
        if condition is not None:
            label = keras.layers.Embedding(
                config.condition_values, 2 * config.dilation_channels, name=contract.condition_layer(layer)
            )(condition)
            gated = gated + keras.ops.expand_dims(label, 1)  # [batch, 1, 2D]: the same at every time step.
        filt, gate = keras.ops.split(gated, 2, axis=-1)
        z = keras.ops.tanh(filt) * keras.ops.sigmoid(gate)
        # Residual and skip 1x1 convolutions in one.
        out = keras.layers.Conv1D(
            config.residual_channels + config.skip_channels, 1, name=contract.residual_skip_layer(layer)
        )(z)
        residual, skip = keras.ops.split(out, [config.residual_channels], axis=-1)
        x = x + residual
        skips.append(skip)
    h = keras.ops.relu(keras.ops.sum(keras.ops.stack(skips), axis=0))
    h = keras.ops.relu(keras.layers.Conv1D(config.skip_channels, 1, name=contract.SKIP_OUT_LAYER)(h))
    logits = keras.layers.Conv1D(config.quantization_channels, 1, name=contract.LOGITS_LAYER, dtype="float32")(h)
    return keras.Model(codes if condition is None else [codes, condition], logits, name="wavenet")
