"""Fast autoregressive generation from an exported WaveNet.

The fast WaveNet generation algorithm (T. L. Paine et al., "Fast Wavenet
Generation Algorithm", arXiv:1611.09482, 2016): every convolution keeps a
queue of its past inputs, (filter_width - 1) * dilation steps long, so a new
sample costs one step per layer instead of a pass over the receptive field.
The queues are ring buffers; zeros in them are exactly the zero padding of the
causal convolutions, so the cached computation equals the full forward pass.

Two engines run the same algorithm:
  cpu: `sampler.cpu`, a numba kernel calling BLAS directly, clips split
       across CPU threads (no per-step dispatch: the CPU default).
  xla: `sampler.xla`, one XLA-compiled `tf.while_loop` per chunk of samples
       (the GPU default: all clips of a batch in one kernel launch per op).

Both load only the exported model (`model.keras`, Keras built-in layers) and
its `config.json`.
"""

import json
import os

import numpy as np

from pipelines import contract

EXPORT_MODEL, EXPORT_CONFIG = contract.MODEL_FILE, contract.MODEL_CONFIG_FILE
ENGINES = ("auto", "cpu", "xla")


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


def default_engine():
    """'xla' when TensorFlow sees a GPU, else 'cpu'."""
    import tensorflow as tf

    return "xla" if tf.config.list_physical_devices("GPU") else "cpu"


def make(keras_model, config, engine="auto", threads=None):
    """A cached generator for a Keras WaveNet.

    Args:
      keras_model: the WaveNet (`trainer.model.build_wavenet`, or the exported model).
      config: the export's config.json as a dict (needs "model" and "quantization_channels").
      engine: one of ENGINES; "auto" picks `default_engine()`.
      threads: CPU threads for the cpu engine (None: every core this process may use).

    Raises:
      ValueError: unknown engine.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        engine = default_engine()
    if engine == "cpu":
        from sampler.cpu import CpuWaveNet

        return CpuWaveNet(keras_model, config, threads=threads)
    from sampler.xla import XlaWaveNet

    return XlaWaveNet(keras_model, config)


def load(path, engine="auto", threads=None):
    """Loads an export written by `trainer.task` (path: job_dir or its export/, local or remote).

    Raises:
      FileNotFoundError: no export at path.
      ValueError: unknown engine.
    """
    import keras

    export_dir = resolve_export_dir(path)
    with open(os.path.join(export_dir, EXPORT_CONFIG)) as f:
        config = json.load(f)
    wavenet = keras.saving.load_model(os.path.join(export_dir, EXPORT_MODEL), compile=False)
    return make(wavenet, config, engine=engine, threads=threads)


class CachedWaveNet:
    """What both engines share: the hyperparameters, priming, and the chunked loops.

    Engines implement `_initial_state(batch_size)`, `_state_from(history, activations)`
    (caches after the codes `history`, whose layer inputs are `activations`; None when
    history is empty), `_sample(state, codes, t, n, temperature, seed)` -> (state, next
    codes, sampled codes [batch, n]) and `_forced(state, inputs, t)` -> (state, logits
    [batch, n, quantization_channels]).

    Attributes:
      config: the exported config.json (dict): model hyperparameters,
        receptive_field, sample_rate, quantization_channels.
      engine: "cpu" or "xla".
    """

    engine = None

    def __init__(self, keras_model, config):
        self.config = config
        self.keras_model = keras_model
        hyper = config["model"]
        self.quantization_channels = hyper["quantization_channels"]
        self.filter_width = hyper["filter_width"]
        self.dilations = list(hyper["dilations"])
        self.residual_channels = hyper["residual_channels"]

    def layer_weights(self, name):
        """A layer's weights as float32 numpy arrays ([kernel, bias] for convolutions)."""
        return [np.asarray(w, np.float32) for w in self.keras_model.get_layer(name).get_weights()]

    def queue_lengths(self):
        """Ring buffer lengths: the causal convolution's, then one per dilated layer."""
        return [self.filter_width - 1] + [(self.filter_width - 1) * d for d in self.dilations]

    def _layer_inputs(self, history):
        """Inputs of the causal and of every dilated convolution over `history`, in one parallel pass.

        Args:
          history: int32 [batch, time] codes.

        Returns:
          list of float32 [time, batch, residual_channels] numpy arrays: the causal
          convolution's input (the embedding), then each dilated layer's input.
        """
        import keras

        model = self.keras_model
        names = [contract.CAUSAL_CONV_LAYER] + [contract.gate_layer(i) for i in range(len(self.dilations))]
        inputs_of = keras.Model(model.input, [model.get_layer(n).input for n in names])
        return [np.transpose(np.asarray(a, np.float32), (1, 0, 2)) for a in inputs_of(history)]

    def prime(self, primer_codes):
        """Fills the queues from a primer in one parallel pass of the full model.

        Args:
          primer_codes: int [batch, time] codes (time >= 1).

        Returns:
          (state, last codes int32 [batch], t: time index of the last code). The
          last code is not fed yet: the first generation step feeds it.
        """
        primer_codes = np.asarray(primer_codes, np.int32)
        # Feed all but the last code: the last one is fed by the first generation step.
        history, time = primer_codes[:, :-1], primer_codes.shape[1] - 1
        activations = self._layer_inputs(history) if time else None
        return self._state_from(history, activations), primer_codes[:, -1], time

    @staticmethod
    def ring_from(activations, length):
        """The ring buffer [length, batch, channels] holding the last `length` of activations [time, ...].

        The input at time s sits at slot s mod length, as the stepping loop leaves it.
        """
        time = activations.shape[0]
        ring = np.zeros((length, *activations.shape[1:]), np.float32)
        for s in range(max(0, time - length), time):
            ring[s % length] = activations[s]
        return ring

    def teacher_forced_logits(self, codes, primer_codes=None):
        """Per-step logits of the cached path while reading given codes.

        Args:
          codes: int [batch, time] codes fed one step at a time.
          primer_codes: optional int [batch, primer_time] codes fed first, in one
            parallel pass (`prime`).

        Returns:
          float32 [batch, time, quantization_channels]: entry [:, i] is the full
          model's output at position primer_time + i of concat(primer, codes).
        """
        codes = np.asarray(codes, np.int32)
        if primer_codes is None:
            state, t = self._initial_state(codes.shape[0]), 0
        else:
            state, _, t = self.prime(np.concatenate([np.asarray(primer_codes, np.int32), codes[:, :1]], axis=1))
        _, logits = self._forced(state, codes, t)
        return logits

    def generate(
        self, num_samples, batch_size=1, temperature=1.0, seed=0, primer_codes=None, chunk=4000, progress=None
    ):
        """Samples new codes.

        Args:
          num_samples: codes to generate per clip.
          batch_size: clips generated together (ignored when primer_codes is given).
          temperature: softmax temperature (> 0); 1 samples the model's distribution.
          seed: int; the same seed and engine give the same clips.
          primer_codes: int [batch, time] codes to continue, or None to start
            from silence (the mid code).
          chunk: samples per compiled call; progress is reported between calls.
          progress: callable(samples_done) or None.

        Returns:
          int32 [batch, num_samples] codes in [0, quantization_channels).

        Raises:
          ValueError: temperature <= 0 or a negative seed.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if primer_codes is None:
            state = self._initial_state(batch_size)
            codes = np.full([batch_size], self.quantization_channels // 2, np.int32)
            t = 0
        else:
            state, codes, t = self.prime(primer_codes)
        pieces, done = [], 0
        while done < num_samples:
            n = min(chunk, num_samples - done)
            state, codes, new = self._sample(state, codes, t + done, n, float(temperature), int(seed))
            pieces.append(new)
            done += n
            if progress is not None:
                progress(n)
        return np.concatenate(pieces, axis=1)
