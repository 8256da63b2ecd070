"""The tf.data input of the trainer, and only that.

Reads the dataset contract written by `python -m pipelines.preprocess`: the
shards its `contract.DatasetDescription` lists, interleaved in parallel and
shuffled across files, cropped, augmented (`trainer.augment`), batched to
static shapes. For a conditioned model each window comes with its label's
index in the model's vocabulary. Checking the shards themselves is
`trainer.shards`; the code histogram's entropy is `trainer.statistics`.
"""

import tensorflow as tf

from pipelines import contract
from trainer import augment


def split_paths(data_dir, description, split):
    """Paths of a split's shards as listed in dataset.json.

    Args:
      data_dir: the dataset directory (local or gs://).
      description: its contract.DatasetDescription.
      split: one of contract.SPLITS.

    Raises:
      contract.DatasetMismatchError: the split has no shards.
    """
    paths = description.shard_paths(data_dir, split)
    if not paths:
        raise contract.DatasetMismatchError(f"the dataset has no {split} shards (0 windows in that split)")
    return paths


def parse_window(record, window_samples):
    """Serialized tf.train.Example -> int32 [window_samples] codes."""
    return parse_example(record, window_samples)


def parse_example(record, window_samples, label_kind=None):
    """Serialized tf.train.Example -> codes, or (codes, label) when label_kind is given.

    Args:
      record: scalar string tensor.
      window_samples: samples per window.
      label_kind: a kind of contract.LABEL_KINDS, or None.

    Returns:
      int32 [window_samples] codes; with label_kind also the label, a string
      scalar (contract.UNKNOWN_LABEL for windows written before labels existed).
    """
    spec = {contract.AUDIO_FEATURE: tf.io.FixedLenFeature([], tf.string)}
    if label_kind is not None:
        key = contract.label_feature(label_kind)
        spec[key] = tf.io.FixedLenFeature([], tf.string, default_value=contract.UNKNOWN_LABEL)
    features = tf.io.parse_single_example(record, spec)
    codes = tf.cast(
        tf.reshape(tf.io.decode_raw(features[contract.AUDIO_FEATURE], tf.uint8), [window_samples]), tf.int32
    )
    if label_kind is None:
        return codes
    return codes, features[contract.label_feature(label_kind)]


def label_lookup(vocabulary):
    """A table from label strings to their index in `vocabulary`; values outside it map to 0 (unknown).

    Args:
      vocabulary: tuple of str, contract.UNKNOWN_LABEL first (`DatasetDescription.vocabulary`).

    Returns:
      tf.lookup.StaticHashTable string -> int32.
    """
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(vocabulary)), tf.range(len(vocabulary), dtype=tf.int32), tf.string, tf.int32
        ),
        default_value=0,
    )


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
    condition=None,
    gain_db=0.0,
    random_polarity=False,
    quantization_channels=contract.DEFAULT_QUANTIZATION_CHANNELS,
    shuffle_buffer_windows=None,
    split_windows=None,
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
      condition: (label kind, vocabulary) for a conditioned model, or None.
      gain_db: when > 0, each crop's level is changed by a gain drawn uniformly
        in [-gain_db, +gain_db] dB (`augment.random_gain`), from the same stateless
        generator as the crop.
      random_polarity: invert half the crops' polarity (`augment.random_polarity_inversion`),
        drawn from the same generator.
      quantization_channels: number of mu-law codes (for `gain_db` and `random_polarity`).
      shuffle_buffer_windows: windows in the shuffle buffer (their serialized records,
        about window_samples bytes each). The pipeline writes each track's windows
        one after another, so a buffer smaller than the dataset gives batches of
        few tracks and a stream that moves from track to track. None:
        `default_shuffle_buffer_windows(window_samples, split_windows)`.
      split_windows: windows the shards of `paths` hold (the split's `windows` in dataset.json), which
        caps the default shuffle buffer; None when unknown (no cap).

    Returns:
      tf.data.Dataset of int32 [batch_size, crop_samples or window_samples], static
      shapes; with `condition`, of (codes, int32 [batch_size] label indices).
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
        buffer_windows = shuffle_buffer_windows or default_shuffle_buffer_windows(window_samples, split_windows)
        records = records.shuffle(buffer_windows, seed=seed)
    records = records.enumerate().skip(skip_windows)
    crop = crop_samples if crop_samples and crop_samples < window_samples else None
    table = label_lookup(condition[1]) if condition else None

    def parse(index, record):
        if table is not None:
            codes, label = parse_example(record, window_samples, condition[0])
        else:
            codes = parse_window(record, window_samples)
        window_seed = tf.stack([tf.cast(seed, tf.int64), index])  # Every random draw of this window derives from it.
        if crop is not None:
            start = tf.random.stateless_uniform([], seed=window_seed, maxval=window_samples - crop + 1, dtype=tf.int64)
            codes = codes[start : start + crop]
        if gain_db > 0:
            codes = augment.random_gain(codes, gain_db, window_seed, quantization_channels)
        if random_polarity:
            codes = augment.random_polarity_inversion(codes, window_seed, quantization_channels)
        return codes if table is None else (codes, table.lookup(label))

    dataset = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    shape = [batch_size, crop or window_samples]

    def static(codes, labels=None):
        if labels is None:
            return tf.ensure_shape(codes, shape)
        return tf.ensure_shape(codes, shape), tf.ensure_shape(labels, shape[:1])

    # AUTOTUNE's threads: the CPUs this process may use (TensorFlow counts its affinity mask only, not a
    # cgroup quota or Slurm's --cpus-per-task).
    threads = tf.data.Options()
    threads.threading.private_threadpool_size = contract.usable_cpus()
    return dataset.batch(batch_size, drop_remainder=True).map(static).prefetch(tf.data.AUTOTUNE).with_options(threads)


# Memory of the default shuffle buffer (per input pipeline: one per worker): a dataset of up to 16,777 windows
# of 16,000 samples (4.7 h at 16 kHz) whole.
SHUFFLE_BUFFER_BYTES = 256 << 20


def default_shuffle_buffer_windows(window_samples, split_windows=None):
    """Windows of serialized records (window_samples bytes of codes each) that fit in `SHUFFLE_BUFFER_BYTES`, and
    no more than the split holds (`split_windows`, when known).

    The buffer shuffles the repeated stream: one larger than the split holds each window several times, mixes
    no better, and only takes longer to fill (6 s for 16,777 windows of a 638-window split on this project's CPU).
    """
    fits = max(1, SHUFFLE_BUFFER_BYTES // window_samples)
    return min(fits, split_windows) if split_windows else fits


class TrainingInputs:
    """The training and validation input functions of one job, from its dataset and options.

    Args:
      data_dir: the dataset directory; description: its contract.DatasetDescription.
      global_batch: batch size over all replicas; crop_samples: samples per training example.
      seed: the input stream's seed.
      condition: (label kind, vocabulary) for a conditioned model, or None.
      gain_db, random_polarity, shuffle_buffer_windows: `make_dataset`'s augmentation and shuffling.
      eval_batches: validation batches per evaluation.

    Attributes:
      train_paths, validation_paths: the splits' shard paths, as dataset.json lists them.
      validation: callable(input_context) -> validation batches, or None when the split has no windows.
    """

    def __init__(self, data_dir, description, global_batch, crop_samples, seed, condition=None, gain_db=0.0,
                 random_polarity=False, shuffle_buffer_windows=None, eval_batches=20):  # fmt: skip
        self._description, self._window = description, description.window_samples
        self._global_batch, self._crop, self._seed, self._condition = global_batch, crop_samples, seed, condition
        self._augmentation = dict(gain_db=gain_db, random_polarity=random_polarity)
        self._shuffle_buffer_windows = shuffle_buffer_windows
        self._eval_batches = eval_batches
        self.train_paths = split_paths(data_dir, description, contract.TRAIN)
        self.validation_paths = description.shard_paths(data_dir, contract.VALIDATION)
        self.validation = self._validation if description.splits[contract.VALIDATION].windows else None

    def training(self, resumed_step=0):
        """callable(input_context) -> the training batches of one input pipeline, from `resumed_step` on.

        The input is a deterministic stream: a resumed job skips what its checkpointed steps consumed.
        """

        def make(input_context):
            return make_dataset(
                self.train_paths,
                self._window,
                input_context.get_per_replica_batch_size(self._global_batch),
                crop_samples=self._crop,
                seed=self._seed,
                skip_windows=resumed_step * self._global_batch // input_context.num_input_pipelines,
                input_context=input_context,
                condition=self._condition,
                shuffle_buffer_windows=self._shuffle_buffer_windows,
                split_windows=self._description.splits[contract.TRAIN].windows,
                quantization_channels=self._description.quantization_channels,
                **self._augmentation,
            )

        return make

    def _validation(self, input_context):
        return make_dataset(
            self.validation_paths,
            self._window,
            input_context.get_per_replica_batch_size(self._global_batch),
            crop_samples=self._crop,
            shuffle=False,
            repeat=False,
            seed=self._seed,
            input_context=input_context,
            condition=self._condition,
        ).take(self._eval_batches)
