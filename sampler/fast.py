"""Fast autoregressive generation from an exported WaveNet.

The fast WaveNet generation algorithm (T. L. Paine et al., "Fast Wavenet
Generation Algorithm", arXiv:1611.09482, 2016): every convolution keeps a
queue of its past inputs, (filter_width - 1) * dilation steps long, so a new
sample costs one step per layer instead of a pass over the receptive field.
The queues are ring buffers; zeros in them are exactly the zero padding of the
causal convolutions, so the cached computation equals the full forward pass.

Loads only the exported model (`model.keras`, Keras built-in layers) and its
`config.json`; the steps run in a `tf.while_loop` compiled with XLA.
"""

import json
import os

import numpy as np

from pipelines import contract

EXPORT_MODEL, EXPORT_CONFIG = contract.MODEL_FILE, contract.MODEL_CONFIG_FILE


def resolve_export_dir(path):
    """A local export directory from a job_dir or its export/, local or remote.

    Remote paths (gs://, s3://, any Beam filesystem) are fetched into a
    temporary directory: the export is two small files.

    Raises:
      FileNotFoundError: when neither path nor path/export holds model.keras and config.json.
    """
    if "://" in path:
        return _fetch_export(path)
    for candidate in (path, os.path.join(path, contract.EXPORT_DIR)):
        if os.path.isfile(os.path.join(candidate, EXPORT_MODEL)) and os.path.isfile(
            os.path.join(candidate, EXPORT_CONFIG)
        ):
            return candidate
    raise FileNotFoundError(
        f"no exported model in {path}: expected {EXPORT_MODEL} and {EXPORT_CONFIG} there or in {path}/export "
        "(written by python -m trainer.task)"
    )


def _fetch_export(uri):
    import shutil
    import tempfile

    from apache_beam.io.filesystems import FileSystems

    for candidate in (uri.rstrip("/"), FileSystems.join(uri.rstrip("/"), contract.EXPORT_DIR)):
        names = [FileSystems.join(candidate, name) for name in (EXPORT_MODEL, EXPORT_CONFIG)]
        if all(FileSystems.exists(name) for name in names):
            local = tempfile.mkdtemp(prefix="wavenet-export-")
            for remote, name in zip(names, (EXPORT_MODEL, EXPORT_CONFIG), strict=True):
                with FileSystems.open(remote) as src, open(os.path.join(local, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            return local
    raise FileNotFoundError(f"no exported model in {uri} or {uri}/{contract.EXPORT_DIR}")


class FastWaveNet:
    """A WaveNet's weights arranged for one-step-at-a-time generation.

    Attributes:
      config: the exported config.json (dict): model hyperparameters,
        receptive_field, sample_rate, quantization_channels.
    """

    def __init__(self, keras_model, config):
        import tensorflow as tf

        self.config = config
        self.keras_model = keras_model
        hyper = config["model"]
        self.quantization_channels = hyper["quantization_channels"]
        self.filter_width = hyper["filter_width"]
        self.dilations = list(hyper["dilations"])
        self.residual_channels = hyper["residual_channels"]

        def weights(name):
            layer = keras_model.get_layer(name)
            return [tf.constant(np.asarray(w), tf.float32) for w in layer.weights]

        def taps(name):
            # Conv1D kernel [width, in, out] -> [width * in, out]: the taps of one step in one matmul.
            kernel, bias = weights(name)
            width, c_in, c_out = kernel.shape
            return tf.reshape(kernel, [width * c_in, c_out]), bias

        (self._embedding,) = weights(contract.EMBEDDING_LAYER)
        self._causal = taps(contract.CAUSAL_CONV_LAYER)
        self._gates = [taps(contract.gate_layer(i)) for i in range(len(self.dilations))]
        self._residual_skip = [weights(contract.residual_skip_layer(i)) for i in range(len(self.dilations))]
        self._skip_out = weights(contract.SKIP_OUT_LAYER)
        self._logits = weights(contract.LOGITS_LAYER)
        for kernel_bias in (*self._residual_skip, self._skip_out, self._logits):
            kernel_bias[0] = kernel_bias[0][0]  # 1x1 convolutions: [1, in, out] -> [in, out]
        self._compiled = {}

    @classmethod
    def load(cls, path):
        """Loads an export written by `trainer.task` (path: job_dir or its export/)."""
        import keras

        export_dir = resolve_export_dir(path)
        with open(os.path.join(export_dir, EXPORT_CONFIG)) as f:
            config = json.load(f)
        return cls(keras.saving.load_model(os.path.join(export_dir, EXPORT_MODEL), compile=False), config)

    def initial_state(self, batch_size):
        """Empty queues (zeros: the causal convolutions' padding).

        Returns:
          list of float32 [queue_length, batch_size, channels] tensors, one for
          the causal convolution then one per dilated layer.
        """
        import tensorflow as tf

        lengths = [self.filter_width - 1] + [(self.filter_width - 1) * d for d in self.dilations]
        return [tf.zeros([n, batch_size, self.residual_channels]) for n in lengths]

    def _conv_step(self, queue, x, t, dilation, kernel_bias):
        """One output of a dilated causal convolution; returns (output, updated queue)."""
        import tensorflow as tf
        from tensorflow.compiler.tf2xla.python import xla

        length = (self.filter_width - 1) * dilation
        zero = tf.constant(0)
        size = [1, queue.shape[1], queue.shape[2]]
        # Taps from the oldest, x[t - (width-1) d], to the current input x[t], as Keras orders them.
        past = [
            xla.dynamic_slice(queue, [tf.math.floormod(t - m * dilation, length), zero, zero], size)[0]
            for m in range(self.filter_width - 1, 0, -1)
        ]
        out = tf.matmul(tf.concat([*past, x], axis=-1), kernel_bias[0]) + kernel_bias[1]
        # XLA updates the queue in place inside the while loop (a scatter would copy it every step).
        queue = xla.dynamic_update_slice(queue, x[None], [tf.math.floormod(t, length), zero, zero])
        return out, queue

    def step(self, state, codes, t):
        """Advances every queue by one sample.

        Args:
          state: list of queues (`initial_state`).
          codes: int32 [batch] the codes at time t.
          t: int32 scalar, the time index of `codes`.

        Returns:
          (logits float32 [batch, quantization_channels] for time t + 1, new state).
        """
        import tensorflow as tf

        x = tf.gather(self._embedding, codes)
        h, causal_queue = self._conv_step(state[0], x, t, 1, self._causal)
        new_state = [causal_queue]
        skips = 0.0
        channels = self.residual_channels
        for i, dilation in enumerate(self.dilations):
            gated, queue = self._conv_step(state[i + 1], h, t, dilation, self._gates[i])
            new_state.append(queue)
            filt, gate = tf.split(gated, 2, axis=-1)
            z = tf.tanh(filt) * tf.sigmoid(gate)
            out = tf.matmul(z, self._residual_skip[i][0]) + self._residual_skip[i][1]
            h = h + out[:, :channels]
            skips = skips + out[:, channels:]
        hidden = tf.nn.relu(tf.matmul(tf.nn.relu(skips), self._skip_out[0]) + self._skip_out[1])
        return tf.matmul(hidden, self._logits[0]) + self._logits[1], new_state

    def _loop(self, kind):
        """A compiled loop over `n` steps; kind 'sample' draws codes, 'forced' reads them."""
        import tensorflow as tf

        if kind in self._compiled:
            return self._compiled[kind]

        def body(sampling, state, code, t, n, inputs, temperature, seed, out):
            def one(i, state, code, out):
                logits, state = self.step(state, code, t + i)
                if sampling:
                    # Gumbel-max: argmax(logits / T + Gumbel noise) is an exact sample of
                    # softmax(logits / T) (E. J. Gumbel, 1954; Maddison et al., "A* Sampling",
                    # 2014), and compiles with XLA where categorical sampling does not.
                    uniform = tf.random.stateless_uniform(
                        tf.shape(logits), seed=tf.stack([seed, tf.cast(t + i, tf.int64)]), minval=1e-20, maxval=1.0
                    )
                    gumbel = -tf.math.log(-tf.math.log(uniform))
                    next_code = tf.argmax(logits / temperature + gumbel, axis=-1, output_type=tf.int32)
                    out = out.write(i, next_code)
                else:
                    next_code = inputs[:, tf.minimum(i + 1, tf.shape(inputs)[1] - 1)]
                    out = out.write(i, logits)
                return i + 1, state, next_code, out

            _, state, code, out = tf.while_loop(
                lambda i, *_: i < n, one, [tf.constant(0), state, code, out], parallel_iterations=1
            )
            return state, code, out.stack()

        # n is a Python int (XLA needs the TensorArray's size at compile time):
        # at most two traces, for the chunk size and the last, shorter chunk.
        @tf.function(jit_compile=True)
        def sample(state, code, t, n, temperature, seed):
            out = tf.TensorArray(tf.int32, size=n)
            return body(True, state, code, t, n, code[:, None], temperature, seed, out)

        @tf.function(jit_compile=True)
        def forced(state, inputs, t):
            n = tf.shape(inputs)[1]
            out = tf.TensorArray(tf.float32, size=n)
            return body(False, state, inputs[:, 0], t, n, inputs, 1.0, tf.constant(0, tf.int64), out)

        self._compiled = {"sample": sample, "forced": forced}
        return self._compiled[kind]

    def teacher_forced_logits(self, codes):
        """Per-step logits of the cached path while reading given codes.

        Args:
          codes: int [batch, time] codes.

        Returns:
          float32 [batch, time, quantization_channels]: logits after each code,
          to compare with the full model's output at the same positions.
        """
        import tensorflow as tf

        codes = tf.constant(codes, tf.int32)
        state = self.initial_state(codes.shape[0])
        _, _, logits = self._loop("forced")(state, codes, tf.constant(0))
        return np.transpose(logits.numpy(), (1, 0, 2))

    def prime(self, primer_codes):
        """Fills the queues from a primer in one parallel pass of the full model.

        Args:
          primer_codes: int [batch, time] codes (time >= 1).

        Returns:
          (state, last codes int32 [batch], t: time index of the last code).
        """
        import keras
        import tensorflow as tf

        primer_codes = np.asarray(primer_codes, np.int32)
        model = self.keras_model
        names = [contract.CAUSAL_CONV_LAYER] + [contract.gate_layer(i) for i in range(len(self.dilations))]
        inputs_of = keras.Model(model.input, [model.get_layer(n).input for n in names])
        # Feed all but the last code: the last one is fed by the first generation step.
        history, time = primer_codes[:, :-1], primer_codes.shape[1] - 1
        state = self.initial_state(primer_codes.shape[0])
        if time:
            activations = inputs_of(history)
            lengths = [q.shape[0] for q in state]
            filled = []
            for act, length in zip(activations, lengths, strict=True):
                act = tf.transpose(tf.cast(act, tf.float32), [1, 0, 2])  # [time, batch, channels]
                queue = np.zeros([length, *act.shape[1:]], np.float32)
                for s in range(max(0, time - length), time):  # The last `length` inputs, at s mod length.
                    queue[s % length] = act[s]
                filled.append(tf.constant(queue))
            state = filled
        return state, tf.constant(primer_codes[:, -1]), time

    def generate(
        self, num_samples, batch_size=1, temperature=1.0, seed=0, primer_codes=None, chunk=4000, progress=None
    ):
        """Samples new codes.

        Args:
          num_samples: codes to generate per clip.
          batch_size: clips generated together (ignored when primer_codes is given).
          temperature: softmax temperature (> 0); 1 samples the model's distribution.
          seed: int; the same seed gives the same clips.
          primer_codes: int [batch, time] codes to continue, or None to start
            from silence (the mid code).
          chunk: samples per compiled call; progress is reported between calls.
          progress: callable(samples_done) or None.

        Returns:
          int32 [batch, num_samples] codes in [0, quantization_channels).
        """
        import tensorflow as tf

        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if primer_codes is None:
            state = self.initial_state(batch_size)
            code = tf.fill([batch_size], self.quantization_channels // 2)
            t = 0
        else:
            state, code, t = self.prime(primer_codes)
        sample = self._loop("sample")
        pieces, done = [], 0
        while done < num_samples:
            n = min(chunk, num_samples - done)
            state, code, codes = sample(
                state, code, tf.constant(t + done), n, tf.constant(temperature, tf.float32),
                tf.constant(seed, tf.int64),
            )  # fmt: skip
            pieces.append(codes.numpy().T)
            done += n
            if progress is not None:
                progress(n)
        return np.concatenate(pieces, axis=1)
