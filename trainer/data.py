"""The tf.data input of the trainer, and only that.

Reads the dataset contract written by `python -m pipelines.preprocess`: the
shards its `contract.DatasetDescription` lists, interleaved in parallel and
shuffled across files, batched to static shapes. For a conditioned model each
window comes with its label's index in the model's vocabulary.
"""

import numpy as np
import tensorflow as tf

from pipelines import contract


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


# Bytes of TFRecord framing around each record: its length (8), the length's CRC (4) and the data's CRC (4).
TFRECORD_FRAMING_BYTES = 16


def check_shard_files(data_dir, description, splits=contract.SPLITS):
    """What a stat of each listed shard can tell before training, so that nothing trains on half the data.

    Args:
      data_dir: the dataset directory (local or gs://).
      description: its contract.DatasetDescription.
      splits: the splits to check.

    Returns:
      list of str warnings: an empty shard; shards too small to hold the windows
      dataset.json counts (each record holds window_samples codes plus framing).

    Raises:
      contract.DatasetMismatchError: a listed shard is missing or is a directory; the
        message names it and the check to run.
    """
    warnings = []
    for split in splits:
        total = 0
        for path in description.shard_paths(data_dir, split):
            if not tf.io.gfile.exists(path):
                raise contract.DatasetMismatchError(
                    f"{path} is listed in dataset.json but missing; {verify_hint(data_dir)}"
                )
            if tf.io.gfile.isdir(path):
                raise contract.DatasetMismatchError(f"{path} is a directory, not a shard; {verify_hint(data_dir)}")
            size = tf.io.gfile.stat(path).length
            if size == 0:
                warnings.append(f"{path} is empty (0 bytes); {verify_hint(data_dir)}")
            total += size
        windows = description.splits[split].windows
        needed = windows * (description.window_samples + TFRECORD_FRAMING_BYTES)
        if total < needed:
            warnings.append(
                f"the {split} shards hold {total:,} bytes, fewer than the {windows:,} windows dataset.json lists "
                f"need (at least {needed:,}): shards were truncated or replaced; {verify_hint(data_dir)}"
            )
    return warnings


def verify_hint(data_dir):
    return f"check the dataset with: python -m pipelines.verify {data_dir}"


def find_bad_shard(paths, window_samples):
    """Reads each shard whole to find which one the input pipeline failed on (called after a failure).

    Args:
      paths: TFRecord shard paths.
      window_samples: samples per window (from dataset.json).

    Returns:
      (path, what is wrong) of the first bad shard, or None when every one reads.
    """
    for path in paths:
        records = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                parse_window(record, window_samples)
                records += 1
        except tf.errors.DataLossError as e:
            return path, f"corrupt after {records} good records ({e.message.splitlines()[0]})"
        except tf.errors.InvalidArgumentError as e:
            return path, f"record {records} does not hold {window_samples} codes ({e.message.splitlines()[0]})"
        except tf.errors.OpError as e:
            return path, f"unreadable ({type(e).__name__}: {e.message.splitlines()[0]})"
    return None


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
        in [-gain_db, +gain_db] dB (`random_gain`), from the same stateless
        generator as the crop.
      random_polarity: invert half the crops' polarity (`random_polarity_inversion`),
        drawn from the same generator.
      quantization_channels: number of mu-law codes (for `gain_db` and `random_polarity`).
      shuffle_buffer_windows: windows in the shuffle buffer (their serialized records,
        about window_samples bytes each). The pipeline writes each track's windows
        one after another, so a buffer smaller than the dataset gives batches of
        few tracks and a stream that moves from track to track. None:
        `default_shuffle_buffer_windows(window_samples)`.

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
        records = records.shuffle(shuffle_buffer_windows or default_shuffle_buffer_windows(window_samples), seed=seed)
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
            codes = random_gain(codes, gain_db, window_seed, quantization_channels)
        if random_polarity:
            codes = random_polarity_inversion(codes, window_seed, quantization_channels)
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


def default_shuffle_buffer_windows(window_samples):
    """Windows of serialized records (window_samples bytes of codes each) that fit in `SHUFFLE_BUFFER_BYTES`."""
    return max(1, SHUFFLE_BUFFER_BYTES // window_samples)


def random_gain(codes, gain_db, seed, quantization_channels=contract.DEFAULT_QUANTIZATION_CHANNELS):
    """Mu-law codes of the same audio at a random level, never clipped: gain augmentation.

    Each code is read as an amplitude drawn uniformly within its quantization
    interval (the interval `contract.mu_law_encode` maps to it, so that
    re-quantizing at 0 dB gives back the same codes and louder audio has no
    gaps between the codes used), multiplied by a gain drawn uniformly in
    [-gain_db, +gain_db] dB, lowered where needed so the peak stays within
    [-1, 1], and quantized again with `contract.mu_law_encode`'s thresholds.
    Drawing within the interval is uniform dequantization (Theis, van den Oord
    and Bethge, "A note on the evaluation of generative models", ICLR 2016,
    section 3.1); a random gain is the usual level augmentation of audio models.

    Args:
      codes: int32 [time] codes in [0, quantization_channels).
      gain_db: the largest gain and attenuation, in dB (> 0).
      seed: int64 [2] stateless seed; the draws use keys split from it
        (tf.random.experimental.stateless_split), not the seed itself.
      quantization_channels: number of mu-law codes.

    Returns:
      int32 [time] codes in [0, quantization_channels).
    """
    thresholds = contract.mu_law_thresholds(quantization_channels)
    # The quantization interval of each code: [thresholds[k], thresholds[k + 1]), -1 and 1 at the ends.
    bounds = tf.constant(np.clip(thresholds, -1.0, 1.0), tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    within = tf.random.stateless_uniform(tf.shape(codes), seed=seeds[0], dtype=tf.float32)
    low, high = tf.gather(bounds, codes), tf.gather(bounds, codes + 1)
    audio = low + within * (high - low)
    decibels = tf.random.stateless_uniform([], seed=seeds[1], minval=-gain_db, maxval=gain_db)
    peak = tf.reduce_max(tf.abs(audio))
    gain = tf.minimum(tf.pow(10.0, decibels / 20.0), 1.0 / tf.maximum(peak, 1e-6))
    inner = tf.constant(thresholds[1:-1], tf.float32)
    return tf.cast(tf.searchsorted(inner, audio * gain, side="right"), tf.int32)


def random_polarity_inversion(codes, seed, quantization_channels=contract.DEFAULT_QUANTIZATION_CHANNELS):
    """The codes of the same audio with its sign inverted, or unchanged, with probability 1/2 each.

    Mu-law is odd-symmetric, so -x has the code (quantization_channels - 1) - code(x)
    (`contract.mu_law_encode`; ties of the rounding aside, which real audio does
    not hit); an inverted waveform sounds the same.

    Args:
      codes: int32 [time] codes in [0, quantization_channels).
      seed: int64 [2] stateless seed; the draw uses a key split from it, not
        the seed itself nor the keys `random_gain` uses.
      quantization_channels: number of mu-law codes.

    Returns:
      int32 [time] codes in [0, quantization_channels).
    """
    key = tf.random.experimental.stateless_split(seed, num=3)[2]
    invert = tf.random.stateless_uniform([], seed=key) < 0.5
    return tf.where(invert, quantization_channels - 1 - codes, codes)


def code_entropy_bits(paths, window_samples, quantization_channels, max_windows=2000):
    """Entropy in bits per sample of the code histogram of some windows: the loss of a model that learned nothing else.

    Args:
      paths: TFRecord shard paths.
      window_samples: samples per stored window.
      quantization_channels: number of codes.
      max_windows: windows read at most (the first ones, in file order).

    Returns:
      float, bits per sample.
    """
    counts = np.zeros(quantization_channels, np.int64)
    dataset = tf.data.TFRecordDataset(paths).take(max_windows)
    for record in dataset.map(lambda r: parse_window(r, window_samples)):
        counts += np.bincount(record.numpy(), minlength=quantization_channels)
    return entropy_bits(counts)


def entropy_bits(counts):
    """Shannon entropy in bits of a histogram (int array of counts per code)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


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

    def find_bad_shard(self):
        """After the input failed: (path, what is wrong) of the first damaged shard, or None (`find_bad_shard`)."""
        return find_bad_shard(self.train_paths + self.validation_paths, self._window)
