"""The model contract's writer: the exported model and its config.json.

export_dir/model.keras   Keras built-in layers only, loadable without this code
export_dir/config.json   `contract.ModelConfig`: architecture, receptive field, sample rate, step
"""

import os
import shutil
import tempfile

from pipelines import contract


def export(model, model_config, export_dir):
    """Saves the model and everything the sampler needs to use it, each file replaced atomically.

    model.keras is saved to a local temporary directory, then written over the
    old one in one piece (`contract.write_bytes`: temp beside, fsync, rename;
    one object write on gs://), and config.json after it, so a kill at any
    moment leaves a loadable export (the old one, or the new model beside the
    old config of the same architecture) and a re-run exports again.

    Args:
      model: the trained keras.Model (`trainer.model.build_wavenet`).
      model_config: contract.ModelConfig describing it.
      export_dir: local or gs:// directory.

    Returns:
      export_dir.
    """
    staging = tempfile.mkdtemp(prefix="wavenet-export-")
    try:
        local = os.path.join(staging, contract.MODEL_FILE)  # Keras saves to local paths only.
        model.save(local)
        with open(local, "rb") as f:
            contract.write_bytes(contract.join(export_dir, contract.MODEL_FILE), f.read())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    contract.write_model_config(export_dir, model_config)
    return export_dir


def read_exported_config(export_dir):
    """The ModelConfig already exported into export_dir, or None (a new run).

    Raises:
      contract.ContractError: when the existing config.json is malformed.
    """
    try:
        return contract.read_model_config(export_dir)
    except FileNotFoundError:
        return None
