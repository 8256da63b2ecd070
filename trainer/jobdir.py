"""What a job_dir remembers between starts: its model preset and its label, fixed at its first start.

job_dir/job.json         the preset and the architecture the job trains (`job_preset`)
job_dir/condition.json   the label kind and vocabulary a conditioned job trains with (`job_condition`)

Both are written atomically (`contract.write_text`), and what writes killed
part-way leave is removed before a job starts (`remove_killed_writes`).
"""

import json
import logging
import os
import re
import shutil

from pipelines import contract
from trainer import presets

_LOGGER = logging.getLogger(__name__)
JOB_FILE = "job.json"


def job_preset(job_dir, asked, has_checkpoint, write=True):
    """The model preset a job trains: the one it was started with, which a resumed run must not change.

    Args:
      job_dir: the job's directory (local or gs://).
      asked: --preset, or None for the job's own (a new job: presets.DEFAULT_PRESET).
      has_checkpoint: whether job_dir already holds checkpoints.
      write: record a new job's preset (False: a worker other than the chief, which only reads).

    Returns:
      the preset's name (a key of presets.PRESETS).

    Raises:
      contract.DatasetMismatchError: --preset names another preset than the job was started with;
        the message names both and what to do.
      contract.ContractError: a damaged job.json.
    """
    path = contract.join(job_dir, JOB_FILE)
    if contract.exists(path):
        stored = contract.read_json(path)
        name = stored.get("preset") if isinstance(stored, dict) else None
        if name not in presets.PRESETS:
            raise contract.ContractError(
                f"{path} names no known preset ({name!r}): restore it, or use another --job_dir"
            )
        if asked is not None and asked != name:
            raise contract.DatasetMismatchError(
                f"{job_dir} trains the {presets.describe(name)}; --preset asks for the {presets.describe(asked)}. "
                f"Pass --preset {name} to resume it, or use another --job_dir"
            )
        return name
    name = asked or presets.DEFAULT_PRESET
    if write and not has_checkpoint:  # A job started before job.json existed cannot say; its checkpoints will.
        contract.write_text(path, json.dumps({"preset": name, "model": presets.PRESETS[name].to_dict()}, indent=2))
    return name


CONDITION_FILE = "condition.json"  # In the job_dir: the label kind and vocabulary its first start chose.


def job_condition(job_dir, kind, description, has_checkpoint, write=True):
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
    path = contract.join(job_dir, CONDITION_FILE)
    stored = None
    if contract.exists(path):
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
            _LOGGER.warning(
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
    if write:
        contract.write_text(path, json.dumps({"kind": kind, "vocabulary": list(vocabulary)}, indent=2))
    return kind, tuple(vocabulary)


# What a write killed part-way leaves in a job_dir: TensorFlow's checkpoint staging and our atomic-write temporaries.
_CHECKPOINT_TEMP = re.compile(r"ckpt-\d+_temp")
_WRITE_TEMP = re.compile(
    r"\.(?:"
    + "|".join(re.escape(n) for n in (contract.MODEL_FILE, contract.MODEL_CONFIG_FILE, CONDITION_FILE, JOB_FILE))
    + r")\.[0-9a-f]{16}\.tmp"
)


def remove_killed_writes(job_dir, export_dir=None):
    """Removes what writes killed part-way left in a local job_dir; returns the paths removed.

    `checkpoints/ckpt-N_temp/` (TensorFlow stages a checkpoint there and renames
    it when complete) and the temporary files of `contract.write_bytes` in the
    job_dir, its export/ and `export_dir` (a local --export_dir elsewhere). Only
    those exact names: nothing else is touched. Call it before training starts,
    when no writer is active in the job_dir.
    """
    removed = []
    exports = {os.path.join(job_dir, contract.EXPORT_DIR), *([export_dir] if export_dir else [])}
    for directory, pattern in (
        (os.path.join(job_dir, "checkpoints"), _CHECKPOINT_TEMP),
        (job_dir, _WRITE_TEMP),
        *((export, _WRITE_TEMP) for export in sorted(exports)),
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


def check_checkpoint_holds(job_dir, restore_from, model, wavenet_config, preset):
    """Refuses checkpoints of another model before restoring them, naming both presets.

    A restore that fails part-way leaves TensorFlow printing, when the
    process ends, every value it could not place; the shapes
    (`tf.train.list_variables` reads only the checkpoint's index) tell first.

    Raises:
      contract.DatasetMismatchError: a variable of the model has none of its shape in the checkpoint.
    """
    import collections

    import tensorflow as tf

    from trainer.model import build_wavenet

    stored = collections.Counter(tuple(shape) for _, shape in tf.train.list_variables(restore_from))

    def fits(name):  # Every variable of the preset's model has one of its shape in the checkpoint.
        built = (
            model
            if name == preset
            else build_wavenet(
                presets.preset_config(name, wavenet_config.quantization_channels, wavenet_config.condition_values)
            )
        )
        return not collections.Counter(tuple(w.shape) for w in built.weights) - stored

    if fits(preset):
        return
    held = next((name for name in presets.PRESETS if name != preset and fits(name)), None)
    what = (
        f"the {presets.describe(held)}. Pass --preset {held} to resume it"
        if held
        else "no preset's. Pass the --preset it was started with"
    )
    raise contract.DatasetMismatchError(
        f"{job_dir}'s checkpoints hold another model than the {presets.describe(preset)}: {what}, or use another "
        "--job_dir"
    )
