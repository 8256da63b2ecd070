"""python -m trainer.evaluate: how well an exported WaveNet predicts music it may never have heard.

    python -m trainer.evaluate --model JOB_DIR_OR_EXPORT --data PREPROCESS_OUTPUT [--split validation] [--json FILE]

Reads only the two contracts: the export (model.keras, config.json) and a
preprocess output (dataset.json and the shards it lists). Scores every window
of the split whole, as the training loop's validation does: the mean
cross-entropy, in nats and bits per sample, of the outputs that see a full
receptive field, beside the entropy of the same windows' code histogram (the
loss of a model that learned nothing but how often each code occurs).
A conditioned model reads each window's label; the loss is then also given
per label value (`--by_label`, by default the model's own label kind).
"""

import dataclasses
import json
import logging
import math
import sys

import numpy as np

from pipelines import contract
from trainer import storage


@dataclasses.dataclass
class Evaluation:
    """A model's score on a split.

    Attributes:
      split: the split scored.
      windows: windows scored.
      loss_nats, loss_bits: mean cross-entropy per scored sample.
      entropy_nats, entropy_bits: entropy of the code histogram of the same windows, per sample.
      model_step: training steps behind the model.
      label_kind: the label the loss is broken down by, or None.
      by_label: dict label value -> {"windows", "loss_nats", "loss_bits"} (empty without label_kind).
    """

    split: str
    windows: int
    loss_nats: float
    loss_bits: float
    entropy_nats: float
    entropy_bits: float
    model_step: int
    label_kind: str = None
    by_label: dict = dataclasses.field(default_factory=dict)


def evaluate(
    model_path, data_dir, split=contract.VALIDATION, batch_size=8, max_windows=None, progress=True, by_label=None
):
    """Scores an exported model on a preprocess output.

    Args:
      model_path: a training job_dir or its export/ (local, gs://, s3://).
      data_dir: a preprocess output (local or gs://; s3:// is staged to local disk).
      split: contract.TRAIN or contract.VALIDATION.
      batch_size: windows per forward pass.
      max_windows: score at most this many windows (None: all).
      progress: show a progress bar.
      by_label: a label kind to break the loss down by; None: the model's own
        kind when it is conditioned, else no breakdown.

    Returns:
      Evaluation.

    Raises:
      FileNotFoundError: no export or no dataset there.
      contract.DatasetMismatchError: the data cannot be scored by this model.
    """
    import keras
    import tensorflow as tf

    from trainer import data, shards, statistics
    from trainer.model import per_example_nats

    export_dir = contract.local_export_dir(model_path)
    model_config = contract.read_model_config(export_dir)
    if storage.needs_staging(data_dir):
        import tempfile

        data_dir = storage.stage_dataset(data_dir, tempfile.mkdtemp(prefix="wavenet-eval-"))
    description = contract.read_description(data_dir)
    rf = model_config.receptive_field
    contract.check_compatible(
        description,
        "the model",
        sample_rate=model_config.sample_rate,
        quantization_channels=model_config.quantization_channels,
        min_window_samples=rf + 1,
    )
    model_path = f"{export_dir}/{contract.MODEL_FILE}"
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # Keras reports a damaged file as "File not found", among other things.
        raise contract.ContractError(
            f"{model_path} is not a loadable Keras model ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e
    window = description.window_samples
    if not description.splits[split].files:
        other = contract.TRAIN if split == contract.VALIDATION else contract.VALIDATION
        raise contract.DatasetMismatchError(
            f"the dataset has no {split} shards (0 windows in that split): score --split {other}, or preprocess "
            f"with a --validation_fraction that gives the split tracks (it holds {description.validation_fraction:g} "
            "of the tracks, chosen by a hash of each)"
        )
    paths = data.split_paths(data_dir, description, split)
    for warning in shards.check_shard_files(data_dir, description, [split]):
        logging.getLogger(__name__).warning("%s", warning)
    records = tf.data.TFRecordDataset(paths)
    total_windows = description.splits[split].windows
    if max_windows is not None:
        records, total_windows = records.take(max_windows), min(total_windows, max_windows)
    label_kind = by_label or model_config.condition_kind
    kinds = [k for k in (model_config.condition_kind, label_kind) if k]

    def parse(record):
        if not kinds:
            return data.parse_window(record, window), ()
        codes, _ = data.parse_example(record, window, kinds[0])
        return codes, tuple(data.parse_example(record, window, kind)[1] for kind in kinds)

    batches = records.map(parse).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    table = data.label_lookup(model_config.condition_vocabulary) if model_config.conditioned else None

    @tf.function
    def score(codes, labels):
        batch = (codes, table.lookup(labels[0])) if table is not None else codes
        return per_example_nats(model, model_config.wavenet_config, batch)

    total, windows, per_label = 0.0, 0, {}
    counts = np.zeros(model_config.quantization_channels, np.int64)
    with contract.progress_bar(total_windows, "window", f"{split} windows", enabled=progress) as bar:
        for codes, labels in _checked(batches, paths, window, data_dir):
            losses = score(codes, labels).numpy()
            total += float(losses.sum())
            windows += int(codes.shape[0])
            counts += np.bincount(codes.numpy().ravel(), minlength=model_config.quantization_channels)
            if label_kind:
                for value, loss in zip(labels[-1].numpy(), losses, strict=True):
                    seen = per_label.setdefault(value.decode(), [0, 0.0])
                    seen[0], seen[1] = seen[0] + 1, seen[1] + float(loss)
            bar.update(int(codes.shape[0]))
    if not windows:
        raise contract.DatasetMismatchError(f"the dataset has no {split} windows to score")
    entropy_bits = statistics.entropy_bits(counts)
    loss_nats = total / windows
    return Evaluation(
        split=split,
        windows=windows,
        loss_nats=loss_nats,
        loss_bits=loss_nats / math.log(2),
        entropy_nats=entropy_bits * math.log(2),
        entropy_bits=entropy_bits,
        model_step=model_config.step,
        label_kind=label_kind,
        by_label={
            value: {"windows": n, "loss_nats": loss / n, "loss_bits": loss / n / math.log(2)}
            for value, (n, loss) in sorted(per_label.items())
        },
    )


def _checked(batches, paths, window_samples, data_dir):
    """The batches; a corrupt shard ends them with a CommandError naming it (TensorFlow's error names none)."""
    import tensorflow as tf

    from trainer import shards

    try:
        yield from batches
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        bad = shards.find_bad_shard(paths, window_samples)
        if bad is None:
            raise
        raise contract.CommandError(f"{bad[0]}: {bad[1]}; {shards.verify_hint(data_dir)}") from e


def build_parser():
    """The parser of `python -m trainer.evaluate`."""
    parser = contract.commands.ArgumentParser(
        prog="python -m trainer.evaluate",
        description="Score an exported WaveNet on a preprocess output: cross-entropy per sample beside the entropy "
        "of the code histogram.",
    )
    parser.add_argument(
        "--model", required=True, help="The training --job_dir or its export/ (local, gs://, s3://). Required."
    )
    parser.add_argument(
        "--data", required=True, help="An output directory of python -m pipelines.preprocess. Required."
    )
    parser.add_argument(
        "--split",
        choices=contract.SPLITS,
        default=contract.VALIDATION,
        help="validation: the tracks held out of training; train: the training tracks. Default: %(default)s.",
    )
    parser.add_argument(
        "--batch_size",
        type=contract.commands.int_in(1),
        default=8,
        help="Windows per forward pass. Default: %(default)s.",
    )
    parser.add_argument(
        "--max_windows",
        type=contract.commands.int_in(1),
        default=None,
        help="Score at most this many windows. Default: all of the split.",
    )
    parser.add_argument(
        "--by_label",
        choices=contract.LABEL_KINDS,
        default=None,
        help="Also give the loss per value of this label (genre or artist). Default: the label a conditioned model "
        "was trained on, else none.",
    )
    parser.add_argument(
        "--json", default=None, help="Also write the figures as JSON to this file ('-': stdout). Default: none."
    )
    contract.add_verbose_option(parser)
    contract.storage.add_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    contract.configure_storage(contract.StorageSettings.from_options(args))
    contract.check_access([args.model, args.data])
    result = evaluate(args.model, args.data, args.split, args.batch_size, args.max_windows, by_label=args.by_label)
    print(
        f"{result.split}: {result.loss_nats:.3f} nats ({result.loss_bits:.3f} bits) per sample over "
        f"{result.windows} windows; the code histogram's entropy is {result.entropy_nats:.3f} nats "
        f"({result.entropy_bits:.3f} bits); model at step {result.model_step}"
    )
    for value, scored in result.by_label.items():
        print(
            f"  {result.label_kind} {value}: {scored['loss_nats']:.3f} nats ({scored['loss_bits']:.3f} bits) "
            f"per sample over {scored['windows']} windows"
        )
    if args.json:
        text = json.dumps(dataclasses.asdict(result), indent=2, sort_keys=True)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    contract.filter_native_logs(verbose=contract.VERBOSE_OPTION in sys.argv[1:])
    sys.exit(contract.run_command(main))
