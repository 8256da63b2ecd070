"""A WaveNet's weights laid out for one step at a time: the one re-layout both engines use.

Read by name from the exported Keras model's layers (`contract`'s layer
names), as float32 numpy arrays. A Conv1D kernel [width, in, out] becomes
[width * in, out] with the taps oldest first, so one step's taps are one
matrix product (y[t] = sum_k x[t - (w-1-k) d] W_k, van den Oord et al. 2016,
section 2.1); 1x1 convolutions become plain [in, out] matrices.
"""

import dataclasses

import numpy as np

from pipelines import contract


@dataclasses.dataclass(frozen=True)
class StepWeights:
    """float32 arrays; Q quantization, C residual, D dilation and S skip channels, L layers, w filter width.

    Attributes:
      embedding: [Q, C].
      causal_kernel: [w * C, C], taps oldest first; causal_bias: [C].
      gate_kernels: [L, w * C, 2 * D] (filter, then gate); gate_biases: [L, 2 * D].
      residual_skip_kernels: [L, D, C + S] (residual, then skip); residual_skip_biases: [L, C + S].
      hidden_kernel: [S, S], hidden_bias: [S] (`skip_out`).
      logits_kernel: [S, Q], logits_bias: [Q].
      condition_tables: [L, V, 2 * D], each layer's label embedding (V = 0 for an unconditioned model).
    """

    embedding: np.ndarray
    causal_kernel: np.ndarray
    causal_bias: np.ndarray
    gate_kernels: np.ndarray
    gate_biases: np.ndarray
    residual_skip_kernels: np.ndarray
    residual_skip_biases: np.ndarray
    hidden_kernel: np.ndarray
    hidden_bias: np.ndarray
    logits_kernel: np.ndarray
    logits_bias: np.ndarray
    condition_tables: np.ndarray


def layer_weights(model, name):
    """A layer's weights as float32 numpy arrays ([kernel, bias] for convolutions)."""
    return [np.asarray(w, np.float32) for w in model.get_layer(name).get_weights()]


def step_weights(model, wavenet_config):
    """The weights of `model` (checked against `wavenet_config`, `engine.check_weights`) as StepWeights.

    Args:
      model: the exported WaveNet.
      wavenet_config: its contract.WaveNetConfig.
    """
    layers = range(len(wavenet_config.dilations))

    def taps(name):
        kernel, bias = layer_weights(model, name)
        return kernel.reshape(-1, kernel.shape[-1]), bias

    def one_by_one(name):
        kernel, bias = layer_weights(model, name)
        return np.ascontiguousarray(kernel[0]), bias

    (embedding,) = layer_weights(model, contract.EMBEDDING_LAYER)
    causal_kernel, causal_bias = taps(contract.CAUSAL_CONV_LAYER)
    gates = [taps(contract.gate_layer(i)) for i in layers]
    residual_skip = [one_by_one(contract.residual_skip_layer(i)) for i in layers]
    hidden_kernel, hidden_bias = one_by_one(contract.SKIP_OUT_LAYER)
    logits_kernel, logits_bias = one_by_one(contract.LOGITS_LAYER)
    width = 2 * wavenet_config.dilation_channels
    tables = (
        [layer_weights(model, contract.condition_layer(i))[0] for i in layers]
        if wavenet_config.condition_values
        else []
    )
    return StepWeights(
        embedding=embedding,
        causal_kernel=causal_kernel,
        causal_bias=causal_bias,
        gate_kernels=np.stack([k for k, _ in gates]),
        gate_biases=np.stack([b for _, b in gates]),
        residual_skip_kernels=np.stack([k for k, _ in residual_skip]),
        residual_skip_biases=np.stack([b for _, b in residual_skip]),
        hidden_kernel=hidden_kernel,
        hidden_bias=hidden_bias,
        logits_kernel=logits_kernel,
        logits_bias=logits_bias,
        condition_tables=np.stack(tables) if tables else np.zeros((len(layers), 0, width), np.float32),
    )
