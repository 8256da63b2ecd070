"""Writing: windows encoded as tf.train.Examples (tfx-bsl, no TensorFlow) into TFRecord shards, records as lines."""


import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import contract, examples
from pipelines.transforms.metrics import EXAMPLES_ENCODED, NAMESPACE


class EncodeExamplesFn(beam.DoFn):
    """A batch of `examples.Window` -> serialized tf.train.Example bytes."""

    def __init__(self):
        self._encoded = Metrics.counter(NAMESPACE, EXAMPLES_ENCODED)
        self._encoder = None

    def setup(self):
        self._encoder = examples.ExampleEncoder()

    def process(self, windows):
        serialized = self._encoder.encode(windows)
        self._encoded.inc(len(serialized))
        yield from serialized


class EncodeExamples(beam.PTransform):
    """`examples.Window`s -> serialized tf.train.Examples, encoded in batches.

    One Arrow batch per call costs ~10 us a window instead of ~135 us one by
    one; a streaming job passes min_batch_size=1 so that a window's last
    elements are not held back.
    """

    def __init__(self, min_batch_size=16, max_batch_size=64):
        super().__init__()
        self._min, self._max = min_batch_size, max_batch_size

    def expand(self, windows):
        return (
            windows
            | "BatchWindows" >> beam.BatchElements(min_batch_size=self._min, max_batch_size=self._max)
            | "Encode" >> beam.ParDo(EncodeExamplesFn())
        )


class WriteSplit(beam.PTransform):
    """Windows of one split -> TFRecord shards `<split>-<run_id>-SSSSS-of-NNNNN.tfrecord`.

    The run id keeps a later run's shards beside an earlier run's. Returns the
    PCollection of the shard paths written.
    """

    def __init__(self, output, split, run_id, num_shards):
        super().__init__()
        self._prefix = FileSystems.join(output, contract.shard_prefix(split, run_id))
        self._num_shards = num_shards

    def expand(self, windows):
        return (
            windows
            | "EncodeExamples" >> EncodeExamples()
            | "WriteTFRecord"
            >> beam.io.WriteToTFRecord(
                self._prefix,
                file_name_suffix=contract.TFRECORD_SUFFIX,
                num_shards=self._num_shards,
            )
        )


class WriteJsonLines(beam.PTransform):
    """Dicts -> one JSON-lines file (a single shard); returns its path."""

    def __init__(self, path):
        super().__init__()
        self._path = path

    def expand(self, records):
        return (
            records
            | "ToJson" >> beam.Map(lambda record: record.to_json())
            | "WriteText" >> beam.io.WriteToText(self._path, shard_name_template="")
        )
