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


CONDITION_FILE = "condition.json"  # In the job_dir: the label kind and vocabulary its first start chose.


def job_condition(job_dir, kind, description, has_checkpoint):
    """The label kind and vocabulary a job trains with, fixed at its first start.

    A resumed run indexes labels exactly as its checkpoints do, even when the
    dataset has gained values since (those train as contract.UNKNOWN_LABEL,
    index 0, with a warning).

    Args:
      job_dir: the job's directory (local or gs://).
      kind: --condition_on (a kind of contract.LABEL_KINDS), or None.
      description: the training data's contract.DatasetDescription (its vocabulary of that kind).
      has_checkpoint: whether job_dir already holds checkpoints.

    Returns:
      (kind, vocabulary tuple), or (None, ()) for an unconditioned job.

    Raises:
      contract.DatasetMismatchError: the option disagrees with what the job was started with, or
        the data has no label of that kind to condition on.
    """
    import json
    import logging

    import tensorflow as tf

    path = posixpath.join(job_dir, CONDITION_FILE)
    stored = None
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            stored = json.load(f)
        if kind != stored["kind"]:
            raise contract.DatasetMismatchError(
                f"{job_dir} trains a model conditioned on {stored['kind']}: pass --condition_on={stored['kind']} "
                "to resume it, or use another --job_dir"
            )
    vocabulary = description.vocabulary(kind) if kind else ()
    if kind and len(vocabulary) < 2:
        raise contract.DatasetMismatchError(
            f"every window of the dataset has {kind} '{contract.UNKNOWN_LABEL}': nothing to condition on; label "
            "the tracks (python -m pipelines.preprocess --label_from, --labels_file, or a scrape)"
        )
    if stored is not None:
        new = sorted(set(vocabulary) - set(stored["vocabulary"]))
        if new:
            logging.getLogger(__name__).warning(
                "%d %s values are not in the job's vocabulary and train as %r: %s",
                len(new), kind, contract.UNKNOWN_LABEL, ", ".join(new[:10]),
            )  # fmt: skip
        return kind, tuple(stored["vocabulary"])
    if kind is None:
        return None, ()
    if has_checkpoint:
        raise contract.DatasetMismatchError(
            f"{job_dir} holds checkpoints of an unconditioned model: --condition_on needs a new --job_dir"
        )
    tf.io.gfile.makedirs(job_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps({"kind": kind, "vocabulary": list(vocabulary)}, indent=2))
    return kind, tuple(vocabulary)
