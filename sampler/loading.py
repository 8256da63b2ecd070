"""Loading an export and choosing an engine for fast autoregressive generation.

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

Both derive from `sampler.engine.CachedWaveNet`, read the weights through one
re-layout (`sampler.weights`), and load only the exported model
(`model.keras`, Keras built-in layers) and its `config.json`
(`contract.ModelConfig`). This module loads an export, chooses the engine,
and offers `generate_audio`, the entry other programs (the trainer's audio
summaries) call.
"""

import os

from pipelines import contract

ENGINES = ("auto", "cpu", "xla")


def default_engine():
    """'xla' when TensorFlow sees a GPU, else 'cpu'."""
    import tensorflow as tf

    return "xla" if tf.config.list_physical_devices("GPU") else "cpu"


def make(model, model_config, engine="auto", threads=None):
    """A cached generator for a Keras WaveNet.

    Args:
      model: the WaveNet (`trainer.model.build_wavenet`, or the exported model).
      model_config: the export's contract.ModelConfig.
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

        return CpuWaveNet(model, model_config, threads=threads)
    from sampler.xla import XlaWaveNet

    return XlaWaveNet(model, model_config)


def load(path, engine="auto", threads=None):
    """Loads an export written by `trainer.task` (path: job_dir or its export/, local or remote).

    Raises:
      FileNotFoundError: no export at path.
      contract.ContractError: a malformed config.json, or a model.keras Keras cannot load.
      engine.WeightsMismatchError: config.json and model.keras describe different shapes.
      ValueError: unknown engine.
    """
    import keras

    export_dir = contract.local_export_dir(path)
    model_config = contract.read_model_config(export_dir)
    model_path = os.path.join(export_dir, contract.MODEL_FILE)
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # Keras reports a damaged file as "File not found", among other things.
        raise contract.ContractError(
            f"{model_path} is not a loadable Keras model ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "export it again with python -m trainer.task"
        ) from e
    return make(model, model_config, engine=engine, threads=threads)


def generate_audio(
    model, model_config, num_samples, seed=0, num_clips=1, temperature=1.0, engine="auto", conditions=None
):
    """Audio from a Keras WaveNet, by the fast algorithm: the public entry for other programs (the trainer).

    Args:
      model: the WaveNet (`trainer.model.build_wavenet`, or an exported model).
      model_config: contract.ModelConfig describing it.
      num_samples: samples per clip, at model_config.sample_rate.
      seed: int >= 0; the same seed and engine give the same clips.
      num_clips: clips generated together.
      temperature: softmax temperature (> 0).
      engine: one of ENGINES.
      conditions: a conditioned model's label index per clip (int or int [num_clips]); None otherwise.

    Returns:
      float32 [num_clips, num_samples] in [-1, 1] (mu-law decoded).
    """
    generator = make(model, model_config, engine=engine)
    codes = generator.generate(
        num_samples, batch_size=num_clips, temperature=temperature, seed=seed, conditions=conditions
    )
    return contract.mu_law_decode(codes, model_config.quantization_channels)
