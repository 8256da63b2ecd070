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
from pipelines.contract import WaveNetConfig  # noqa: F401 (re-exported: the model's hyperparameters)
from trainer.presets import PRESETS  # noqa: F401 (re-exported)


def build_wavenet(wavenet_config):
    """The WaveNet as a Keras functional model.

    With `wavenet_config.condition_values` > 0 the model is globally conditioned
    (van den Oord et al. 2016, section 2.5): each dilated layer adds an
    embedding of the label, V_f h and V_g h for the one-hot label h, to its
    filter and gate pre-activations at every time step.

    Args:
      wavenet_config: WaveNetConfig.

    Returns:
      keras.Model mapping int32 [batch, time] codes in [0, quantization_channels)
      to float [batch, time, quantization_channels] logits; output t depends only
      on inputs 0..t (causal), and on all of t - receptive_field + 1 .. t.
      A conditioned model takes [codes, condition] with condition int32 [batch]
      label indices in [0, condition_values).
    """
    codes = keras.Input(shape=(None,), dtype="int32", name="codes")
    condition = None
    if wavenet_config.condition_values:
        condition = keras.Input(shape=(), dtype="int32", name=contract.CONDITION_INPUT)
    x = keras.layers.Embedding(
        wavenet_config.quantization_channels, wavenet_config.residual_channels, name=contract.EMBEDDING_LAYER
    )(codes)
    x = keras.layers.Conv1D(
        wavenet_config.residual_channels, wavenet_config.filter_width, padding="causal", name=contract.CAUSAL_CONV_LAYER
    )(x)
    skips = []
    for layer, dilation in enumerate(wavenet_config.dilations):
        # Filter and gate in one convolution, split in half (same maths as two).
        gated = keras.layers.Conv1D(
            2 * wavenet_config.dilation_channels,
            wavenet_config.filter_width,
            dilation_rate=dilation,
            padding="causal",
            name=contract.gate_layer(layer),
        )(x)
        if condition is not None:
            label = keras.layers.Embedding(
                wavenet_config.condition_values,
                2 * wavenet_config.dilation_channels,
                name=contract.condition_layer(layer),
            )(condition)
            gated = gated + keras.ops.expand_dims(label, 1)  # [batch, 1, 2D]: the same at every time step.
        filt, gate = keras.ops.split(gated, 2, axis=-1)
        z = keras.ops.tanh(filt) * keras.ops.sigmoid(gate)
        # Residual and skip 1x1 convolutions in one.
        out = keras.layers.Conv1D(
            wavenet_config.residual_channels + wavenet_config.skip_channels, 1, name=contract.residual_skip_layer(layer)
        )(z)
        residual, skip = keras.ops.split(out, [wavenet_config.residual_channels], axis=-1)
        x = x + residual
        skips.append(skip)
    h = keras.ops.relu(keras.ops.sum(keras.ops.stack(skips), axis=0))
    h = keras.ops.relu(keras.layers.Conv1D(wavenet_config.skip_channels, 1, name=contract.SKIP_OUT_LAYER)(h))
    logits = keras.layers.Conv1D(wavenet_config.quantization_channels, 1, name=contract.LOGITS_LAYER, dtype="float32")(
        h
    )
    return keras.Model(codes if condition is None else [codes, condition], logits, name="wavenet")


def scored_logits(model, wavenet_config, codes, condition=None):
    """The model's logits at the outputs that see a full receptive field, computed only where needed.

    The same function as `model(codes)[:, receptive_field - 1:]` (and the same
    weights, read from the model's layers by name), formulated for training:

    - each width-`filter_width` dilated causal convolution is `filter_width`
      matrix products of time-shifted inputs (y[t] = sum_k x[t - (w-1-k) d] W_k,
      van den Oord et al. 2016, section 2.1; as in the fast generation of
      Paine et al., "Fast Wavenet Generation Algorithm", 2016), where Keras
      dilates by SpaceToBatch/BatchToSpace copies;
    - the filter and gate halves, and the residual and skip parts, are products
      with halves of the kernels instead of splits of the activations;
    - each layer runs only at the positions some scored output depends on
      (layer j from receptive_field - 1 - (w - 1) * sum of the dilations of layers j..L-1),
      the skips and the output stack only at the scored positions;
    - the skips are added as they come, not stacked.

    How much faster than the Keras model's own forward: BENCHMARKS.md, "Training".
    Time slices use tf.slice: StridedSlice's gradient is a slow generic kernel on CPU.

    Args:
      model: keras.Model from `build_wavenet(wavenet_config)` (or loaded from an export).
      wavenet_config: its WaveNetConfig.
      codes: int32 [batch, time] codes, time static and >= receptive_field.
      condition: int32 [batch] label indices for a conditioned model, else None.

    Returns:
      float [batch, time - receptive_field + 1, quantization_channels] logits (float32),
      output i predicting the code after codes[:, receptive_field - 1 + i].

    Raises:
      ValueError: time is not static or shorter than the receptive field.
    """
    import tensorflow as tf

    length = codes.shape[1]
    first = wavenet_config.receptive_field - 1
    if length is None or length <= first:
        raise ValueError(f"scored_logits needs a static time of >= {first + 1} samples; got {length}")
    width, gated, residual = (
        wavenet_config.filter_width,
        wavenet_config.dilation_channels,
        wavenet_config.residual_channels,
    )

    def layer_weights(name, dtype):
        layer = model.get_layer(name)
        return tf.cast(tf.convert_to_tensor(layer.kernel), dtype), tf.cast(tf.convert_to_tensor(layer.bias), dtype)

    def time_slice(x, begin, end):
        return tf.slice(x, [0, begin, 0], [-1, end - begin, -1])

    def positions(x, x_first, begin, end):
        """Positions [begin, end) of x [batch, time, channels], which holds positions x_first..; zeros before 0."""
        if begin >= 0:
            return time_slice(x, begin - x_first, end - x_first)
        return tf.pad(time_slice(x, 0, end - x_first), [[0, 0], [-begin, 0], [0, 0]])

    def taps(x, x_first, begin, dilation):
        """x[t - (width-1-k) * dilation] for t in [begin, length), one tensor per kernel tap k."""
        shifts = [(width - 1 - k) * dilation for k in range(width)]
        return [positions(x, x_first, begin - shift, length - shift) for shift in shifts]

    def causal_conv(shifted, kernel):
        """sum_k shifted[k] @ kernel[k]: a causal convolution of the inputs `taps` shifted."""
        return sum(_matmul(tap, kernel[k]) for k, tap in enumerate(shifted))

    # needed[j]: the first position of layer j's residual input that a scored output depends on.
    needed = [first] * (len(wavenet_config.dilations) + 1)
    for j in reversed(range(len(wavenet_config.dilations))):
        needed[j] = needed[j + 1] - (width - 1) * wavenet_config.dilations[j]
    dtype = model.get_layer(contract.CAUSAL_CONV_LAYER).compute_dtype
    embeddings = tf.convert_to_tensor(model.get_layer(contract.EMBEDDING_LAYER).embeddings)
    embedded = tf.cast(tf.gather(embeddings, codes), dtype)
    kernel, bias = layer_weights(contract.CAUSAL_CONV_LAYER, dtype)
    x_first = max(needed[0], 0)
    x = causal_conv(taps(embedded, 0, x_first, 1), kernel) + bias
    skips = None
    for j, dilation in enumerate(wavenet_config.dilations):
        kernel, bias = layer_weights(contract.gate_layer(j), dtype)
        out_first = max(needed[j + 1], 0)
        shifted = taps(x, x_first, out_first, dilation)  # Sliced once for both halves.
        filt = causal_conv(shifted, kernel[:, :, :gated]) + bias[:gated]
        gate = causal_conv(shifted, kernel[:, :, gated:]) + bias[gated:]
        if condition is not None:
            table = tf.convert_to_tensor(model.get_layer(contract.condition_layer(j)).embeddings)
            label = tf.cast(tf.gather(table, condition), dtype)[:, None, :]  # [batch, 1, 2D]
            filt, gate = filt + label[:, :, :gated], gate + label[:, :, gated:]
        z = tf.tanh(filt) * tf.sigmoid(gate)
        kernel, bias = layer_weights(contract.residual_skip_layer(j), dtype)
        skip = _matmul(time_slice(z, first - out_first, length - out_first), kernel[0, :, residual:]) + bias[residual:]
        skips = skip if skips is None else skips + skip
        if j + 1 < len(wavenet_config.dilations):  # The last layer's residual output feeds nothing.
            residual_out = _matmul(z, kernel[0, :, :residual]) + bias[:residual]
            x = time_slice(x, out_first - x_first, length - x_first) + residual_out
            x_first = out_first
    kernel, bias = layer_weights(contract.SKIP_OUT_LAYER, dtype)
    h = tf.nn.relu(_matmul(tf.nn.relu(skips), kernel[0]) + bias)
    kernel, bias = layer_weights(contract.LOGITS_LAYER, model.get_layer(contract.LOGITS_LAYER).compute_dtype)
    return _matmul(tf.cast(h, kernel.dtype), kernel[0]) + bias


def _matmul(x, kernel):
    """x [batch, time, C] @ kernel [C, N] -> [batch, time, N], as one 2-D matrix product."""
    import tensorflow as tf

    channels, outputs = kernel.shape
    product = tf.matmul(tf.reshape(x, [-1, channels]), kernel)
    return tf.reshape(product, tf.concat([tf.shape(x)[:-1], [outputs]], 0))


def per_example_nats(model, wavenet_config, batch):
    """Per-example cross-entropy of a WaveNet's predictions, over the outputs that see a full receptive field.

    The model reads codes[:, :-1]; output t predicts codes[:, t + 1]. Outputs
    before receptive_field - 1 see the zero padding of the causal convolutions,
    not music, and are not scored (the quantity the paper reports, van den
    Oord et al. 2016, section 3.2, as negative log-likelihood per sample); the
    logits are computed only where scored (`scored_logits`).

    Args:
      model: keras.Model (`trainer.model.build_wavenet`); wavenet_config: its WaveNetConfig.
      batch: int32 [batch, time] mu-law codes (time static, > receptive_field), or
        (codes, int32 [batch] label indices) for a conditioned model.

    Returns:
      float32 [batch] mean nats per scored sample.
    """
    import tensorflow as tf

    codes, condition = batch if isinstance(batch, tuple | list) else (batch, None)
    logits = scored_logits(model, wavenet_config, codes[:, :-1], condition)
    per_sample = keras.losses.sparse_categorical_crossentropy(
        codes[:, wavenet_config.receptive_field :], tf.cast(logits, tf.float32), from_logits=True
    )
    return tf.reduce_mean(per_sample, axis=1)
