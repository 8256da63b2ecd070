"""The model contract's writer: the exported model and its config.json.

export_dir/model.keras   Keras built-in layers only, loadable without this code
export_dir/config.json   `contract.ModelConfig`: architecture, receptive field, sample rate, step
"""

import os
import posixpath
import tempfile

from pipelines import contract


def export(wavenet, model_config, export_dir):
    """Saves the model and everything the sampler needs to use it.

    Args:
      wavenet: the trained keras.Model (`trainer.model.build_wavenet`).
      model_config: contract.ModelConfig describing it.
      export_dir: local or gs:// directory.

    Returns:
      export_dir.
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(export_dir)
    # Keras saves to local paths only.
    local = tempfile.mkdtemp(prefix="wavenet-export-") if "://" in export_dir else export_dir
    wavenet.save(os.path.join(local, contract.MODEL_FILE))
    if local != export_dir:
        tf.io.gfile.copy(
            os.path.join(local, contract.MODEL_FILE), posixpath.join(export_dir, contract.MODEL_FILE), overwrite=True
        )
    contract.write_model_config(export_dir, model_config)
    return export_dir


def read_exported_config(job_dir):
    """The ModelConfig already exported under job_dir, or None (a new run).

    Raises:
      contract.ContractError: when the existing config.json is malformed.
    """
    export_dir = posixpath.join(job_dir, contract.EXPORT_DIR)
    try:
        return contract.read_model_config(export_dir)
    except FileNotFoundError:
        return None
