"""The tf.data input of the trainer, and only that.

Reads the dataset contract written by `python -m pipelines.preprocess`:
`dataset.json` first (the data describes itself), then its TFRecord shards,
interleaved in parallel and shuffled across files, batched to static shapes.
"""

import json
import posixpath

import tensorflow as tf

from pipelines import contract


class DatasetMismatchError(ValueError):
    """The dataset cannot serve the model; the message names both values."""


def read_description(data_dir):
    """dataset.json of a preprocess output directory (local or gs://), as a dict.

    Raises:
      FileNotFoundError: when data_dir has no dataset.json.
    """
    path = posixpath.join(data_dir, contract.DATASET_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: --data must be an output directory of pipelines.preprocess")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def check_compatible(description, quantization_channels, receptive_field, sample_rate=None):
    """Refuses data that cannot train (or does not match) the model.

    Args:
      description: dataset.json as a dict.
      quantization_channels: the model's softmax size.
      receptive_field: the model's receptive field in samples.
      sample_rate: the sample rate the model was trained at, when resuming or
        fine-tuning; None accepts the data's.

    Raises:
      DatasetMismatchError: naming the dataset's value and the model's.
    """
    if description.get("encoding") != contract.ENCODING:
        raise DatasetMismatchError(
            f"dataset encoding is {description.get('encoding')!r}, the model needs {contract.ENCODING!r}"
        )
    if description["quantization_channels"] != quantization_channels:
        raise DatasetMismatchError(
            f"dataset has quantization_channels={description['quantization_channels']}, "
            f"the model has quantization_channels={quantization_channels}"
        )
    if description["window_samples"] < receptive_field + 1:
        raise DatasetMismatchError(
            f"dataset windows have window_samples={description['window_samples']}, shorter than the model's "
            f"receptive field + 1 = {receptive_field + 1} samples; preprocess with a longer --window_samples "
            "or choose a smaller model"
        )
    if sample_rate is not None and description["sample_rate"] != sample_rate:
        raise DatasetMismatchError(
            f"dataset has sample_rate={description['sample_rate']} Hz, the model was trained at {sample_rate} Hz"
        )


def shard_paths(data_dir, description, split):
    """Paths of a split's shards as listed in dataset.json."""
    files = description["splits"][split]["files"]
    if not files:
        raise DatasetMismatchError(f"dataset has no {split} shards (0 windows in that split)")
    return [posixpath.join(data_dir, name) for name in files]


def parse_window(record, window_samples):
    """Serialized tf.train.Example -> int32 [window_samples] codes."""
    features = tf.io.parse_single_example(record, {contract.AUDIO_FEATURE: tf.io.FixedLenFeature([], tf.string)})
    codes = tf.io.decode_raw(features[contract.AUDIO_FEATURE], tf.uint8)
    return tf.cast(tf.reshape(codes, [window_samples]), tf.int32)


def make_dataset(
    paths,
    window_samples,
    batch_size,
    crop_samples=None,
    shuffle=True,
    repeat=True,
    seed=0,
    skip_windows=0,
    input_context=None,
):
    """Batches of code windows for training or evaluation.

    The stream is a deterministic function of `seed` (files and windows are
    shuffled with seeded shuffles, read in a deterministic order, and each
    window's crop is drawn from a stateless generator keyed by its position),
    so a restarted run that skips the windows already consumed sees exactly
    the batches an uninterrupted run would have.

    Args:
      paths: TFRecord shard paths (local or gs://).
      window_samples: samples per stored window (from dataset.json).
      batch_size: batch size of this input pipeline's batches (per replica
        when distributed).
      crop_samples: random crops of this many samples per window (None keeps
        whole windows); bounds memory for long windows.
      shuffle: shuffle files and windows.
      repeat: repeat forever (training) or read once (evaluation).
      seed: shuffling and cropping seed.
      skip_windows: windows of the stream to skip (read, not parsed) when resuming.
      input_context: tf.distribute.InputContext; with at least as many shards
        as input pipelines each pipeline reads its own files (FILE sharding),
        otherwise every pipeline reads all files and keeps its share of windows.

    Returns:
      tf.data.Dataset of int32 [batch_size, crop_samples or window_samples], static shapes.
    """
    files = tf.data.Dataset.from_tensor_slices(sorted(paths))
    windows_shard = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(paths) >= input_context.num_input_pipelines:
            files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            windows_shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(paths), 8), num_parallel_calls=tf.data.AUTOTUNE
    )
    if windows_shard:
        records = records.shard(*windows_shard)
    if repeat:
        records = records.repeat()
    if shuffle:
        records = records.shuffle(256, seed=seed)
    records = records.enumerate().skip(skip_windows)
    crop = crop_samples if crop_samples and crop_samples < window_samples else None

    def parse(index, record):
        codes = parse_window(record, window_samples)
        if crop is None:
            return codes
        start = tf.random.stateless_uniform(
            [], seed=tf.stack([tf.cast(seed, tf.int64), index]), maxval=window_samples - crop + 1, dtype=tf.int64
        )
        return codes[start : start + crop]

    dataset = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    shape = [batch_size, crop or window_samples]
    return (
        dataset.batch(batch_size, drop_remainder=True)
        .map(lambda batch: tf.ensure_shape(batch, shape))
        .prefetch(tf.data.AUTOTUNE)
    )
