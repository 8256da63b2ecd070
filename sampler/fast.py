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

Both derive from `sampler.engine.CachedWaveNet` and load only the exported
model (`model.keras`, Keras built-in layers) and its `config.json`
(`contract.ModelConfig`). This module loads an export and chooses the engine.
"""

import os

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
      config: the export's contract.ModelConfig.
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
      contract.ContractError: a malformed config.json.
      ValueError: unknown engine.
    """
    import keras

    export_dir = resolve_export_dir(path)
    config = contract.read_model_config(export_dir)
    wavenet = keras.saving.load_model(os.path.join(export_dir, EXPORT_MODEL), compile=False)
    return make(wavenet, config, engine=engine, threads=threads)
