"""The XLA engine: the cached generation loop as one XLA-compiled `tf.while_loop` per chunk.

The GPU default (every op of a step is one kernel launch for the whole batch).
Sampling is by inversion, as in the CPU engine and with the same uniform
numbers (`engine.uniforms`, one per clip and step, keyed by the seed and the
clip's index): XLA has no categorical sampling kernel on CPU, and a clip's
random numbers must not depend on the batch it is generated in.
"""

import numpy as np

from sampler.engine import CachedWaveNet


class XlaWaveNet(CachedWaveNet):
    """A WaveNet's weights arranged for one-step-at-a-time generation under XLA.

    State: list of float32 [queue_length, batch, residual_channels] tensors, one
    for the causal convolution then one per dilated layer; for a conditioned
    model then float32 [layers, batch, 2 * dilation_channels], what each clip's
    label adds to every layer's filter and gate (`condition_biases`).
    """

    engine = "xla"

    def __init__(self, model, model_config):
        import tensorflow as tf

        super().__init__(model, model_config)

        w = self.weights

        def constants(*arrays):
            return [tf.constant(a) for a in arrays]

        (self._embedding,) = constants(w.embedding)
        self._causal = constants(w.causal_kernel, w.causal_bias)
        self._gates = [constants(k, b) for k, b in zip(w.gate_kernels, w.gate_biases, strict=True)]
        self._residual_skip = [
            constants(k, b) for k, b in zip(w.residual_skip_kernels, w.residual_skip_biases, strict=True)
        ]
        self._skip_out = constants(w.hidden_kernel, w.hidden_bias)
        self._logits = constants(w.logits_kernel, w.logits_bias)
        self._compiled = None

    def _condition_state(self, conditions):
        import tensorflow as tf

        return [tf.constant(self.condition_biases(conditions))] if self.condition_values else []

    def _initial_state(self, conditions):
        import tensorflow as tf

        queues = [tf.zeros([n, len(conditions), self.residual_channels]) for n in self.queue_lengths()]
        return queues + self._condition_state(conditions)

    def _state_from(self, history, activations, conditions):
        import tensorflow as tf

        if activations is None:
            return self._initial_state(conditions)
        queues = [tf.constant(self.ring_from(a, n)) for a, n in zip(activations, self.queue_lengths(), strict=True)]
        return queues + self._condition_state(conditions)

    def _conv_step(self, queue, x, t, dilation, kernel_bias):
        """One output of a dilated causal convolution; returns (output, updated queue)."""
        import tensorflow as tf

        from sampler import compat

        length = (self.filter_width - 1) * dilation
        zero = tf.constant(0)
        size = [1, queue.shape[1], queue.shape[2]]
        # Taps from the oldest, x[t - (width-1) d], to the current input x[t], as Keras orders them.
        past = [
            compat.xla_dynamic_slice(queue, [tf.math.floormod(t - m * dilation, length), zero, zero], size)[0]
            for m in range(self.filter_width - 1, 0, -1)
        ]
        out = tf.matmul(tf.concat([*past, x], axis=-1), kernel_bias[0]) + kernel_bias[1]
        # XLA updates the queue in place inside the while loop (a scatter would copy it every step).
        queue = compat.xla_dynamic_update_slice(queue, x[None], [tf.math.floormod(t, length), zero, zero])
        return out, queue

    def step(self, state, codes, t):
        """Advances every queue by one sample.

        Args:
          state: list of queues.
          codes: int32 [batch] the codes at time t.
          t: int32 scalar, the time index of `codes`.

        Returns:
          (logits float32 [batch, quantization_channels] for time t + 1, new state).
        """
        import tensorflow as tf

        biases = state[-1] if self.condition_values else None
        x = tf.gather(self._embedding, codes)
        h, causal_queue = self._conv_step(state[0], x, t, 1, self._causal)
        new_state = [causal_queue]
        skips = 0.0
        channels = self.residual_channels
        for i, dilation in enumerate(self.dilations):
            gated, queue = self._conv_step(state[i + 1], h, t, dilation, self._gates[i])
            new_state.append(queue)
            if biases is not None:
                gated = gated + biases[i]
            filt, gate = tf.split(gated, 2, axis=-1)
            z = tf.tanh(filt) * tf.sigmoid(gate)
            out = tf.matmul(z, self._residual_skip[i][0]) + self._residual_skip[i][1]
            h = h + out[:, :channels]
            skips = skips + out[:, channels:]
        hidden = tf.nn.relu(tf.matmul(tf.nn.relu(skips), self._skip_out[0]) + self._skip_out[1])
        if biases is not None:
            new_state.append(biases)
        return tf.matmul(hidden, self._logits[0]) + self._logits[1], new_state

    def _loops(self):
        """Compiled loops over `n` steps: 'sample' draws codes, 'forced' reads them."""
        import tensorflow as tf

        if self._compiled is not None:
            return self._compiled

        def body(sampling, state, code, t, n, inputs, temperature, uniforms, out):
            def one(i, state, code, out):
                logits, state = self.step(state, code, t + i)
                if sampling:
                    # Inversion: the first code whose cumulative weight exceeds u times the total,
                    # for weights exp((logits - max) / T), as the CPU kernel samples.
                    scaled = logits / temperature
                    weights = tf.exp(scaled - tf.reduce_max(scaled, axis=-1, keepdims=True))
                    cumulative = tf.cumsum(weights, axis=-1)
                    threshold = uniforms[i][:, None] * cumulative[:, -1:]
                    below = tf.reduce_sum(tf.cast(cumulative <= threshold, tf.int32), axis=-1)
                    next_code = tf.minimum(below, self.quantization_channels - 1)
                    out = out.write(i, next_code)
                else:
                    next_code = inputs[:, tf.minimum(i + 1, tf.shape(inputs)[1] - 1)]
                    out = out.write(i, logits)
                return i + 1, state, next_code, out

            _, state, code, out = tf.while_loop(
                lambda i, *_: i < n, one, [tf.constant(0), state, code, out], parallel_iterations=1
            )
            return state, code, out.stack()

        # The steps n are the uniforms' static first dimension (XLA needs the TensorArray's size at
        # compile time): at most two traces, for the chunk size and the last, shorter chunk.
        @tf.function(jit_compile=True)
        def sample(state, code, t, temperature, uniforms):
            n = uniforms.shape[0]
            out = tf.TensorArray(tf.int32, size=n)
            return body(True, state, code, t, n, code[:, None], temperature, uniforms, out)

        @tf.function(jit_compile=True)
        def forced(state, inputs, t):
            n = tf.shape(inputs)[1]
            out = tf.TensorArray(tf.float32, size=n)
            return body(False, state, inputs[:, 0], t, n, inputs, 1.0, None, out)

        self._compiled = {"sample": sample, "forced": forced}
        return self._compiled

    def _sample(self, state, codes, t, temperature, uniforms):
        import tensorflow as tf

        state, code, new = self._loops()["sample"](
            state, tf.constant(codes, tf.int32), tf.constant(t), tf.constant(temperature, tf.float32),
            tf.constant(uniforms, tf.float32),
        )  # fmt: skip
        return state, code.numpy(), new.numpy().T

    def _forced(self, state, inputs, t):
        import tensorflow as tf

        state, _, logits = self._loops()["forced"](state, tf.constant(inputs, tf.int32), tf.constant(t))
        return state, np.transpose(logits.numpy(), (1, 0, 2))
