"""The model contract's writer: the exported model and its config.json.

export_dir/model.keras   Keras built-in layers only, loadable without this code
export_dir/config.json   `contract.ModelConfig`: architecture, receptive field, sample rate, step
"""

import os
import posixpath
import re
import shutil
import tempfile

from pipelines import contract


def export(wavenet, model_config, export_dir):
    """Saves the model and everything the sampler needs to use it, each file replaced atomically.

    model.keras is saved to a local temporary directory, then written over the
    old one in one piece (`contract.write_bytes`: temp beside, fsync, rename;
    one object write on gs://), and config.json after it, so a kill at any
    moment leaves a loadable export (the old one, or the new model beside the
    old config of the same architecture) and a re-run exports again.

    Args:
      wavenet: the trained keras.Model (`trainer.model.build_wavenet`).
      model_config: contract.ModelConfig describing it.
      export_dir: local or gs:// directory.

    Returns:
      export_dir.
    """
    staging = tempfile.mkdtemp(prefix="wavenet-export-")
    try:
        local = os.path.join(staging, contract.MODEL_FILE)  # Keras saves to local paths only.
        wavenet.save(local)
        with open(local, "rb") as f:
            contract.write_bytes(contract.join(export_dir, contract.MODEL_FILE), f.read())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
        stored = contract.read_json(path)
        if not (
            isinstance(stored, dict)
            and stored.get("kind") in contract.LABEL_KINDS
            and isinstance(stored.get("vocabulary"), list)
            and all(isinstance(v, str) for v in stored["vocabulary"])
        ):
            raise contract.ContractError(
                f"{path} is malformed (expected {{'kind': one of {', '.join(contract.LABEL_KINDS)}, "
                "'vocabulary': [names]}): restore it, or use another --job_dir"
            )
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
    contract.write_text(path, json.dumps({"kind": kind, "vocabulary": list(vocabulary)}, indent=2))
    return kind, tuple(vocabulary)


# What a write killed part-way leaves in a job_dir: TensorFlow's checkpoint staging and our atomic-write temporaries.
_CHECKPOINT_TEMP = re.compile(r"ckpt-\d+_temp")
_WRITE_TEMP = re.compile(
    r"\.(?:"
    + "|".join(re.escape(n) for n in (contract.MODEL_FILE, contract.MODEL_CONFIG_FILE, CONDITION_FILE))
    + r")\.[0-9a-f]{16}\.tmp"
)


def remove_killed_writes(job_dir):
    """Removes what writes killed part-way left in a local job_dir; returns the paths removed.

    `checkpoints/ckpt-N_temp/` (TensorFlow stages a checkpoint there and renames
    it when complete) and the temporary files of `contract.write_bytes` in the
    job_dir and export/. Only those exact names: nothing else is touched. Call
    it before training starts, when no writer is active in the job_dir.
    """
    removed = []
    for directory, pattern in (
        (os.path.join(job_dir, "checkpoints"), _CHECKPOINT_TEMP),
        (job_dir, _WRITE_TEMP),
        (os.path.join(job_dir, contract.EXPORT_DIR), _WRITE_TEMP),
    ):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if not pattern.fullmatch(entry.name) or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            removed.append(entry.path)
    return removed
