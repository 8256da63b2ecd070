"""tf.train.Example encoding of windows, without importing TensorFlow.

tfx-bsl's C++ coder turns an Arrow RecordBatch into serialized examples (and
back, for `pipelines.verify`); a worker that uses it stays far lighter than one
that imports TensorFlow (docs/dependencies.md).
"""

import dataclasses

from pipelines import contract


@dataclasses.dataclass(frozen=True)
class Window:
    """One training window.

    Attributes:
      track_id: stable hash of the source URI (str of hex digits).
      offset: window start in samples at the dataset's sample rate.
      codes: bytes of window_samples uint8 mu-law codes.
      labels: the track's value of each kind of contract.LABEL_KINDS, in that order
        (a window without labels is written with contract.UNKNOWN_LABEL).
    """

    track_id: str
    offset: int
    codes: bytes
    labels: tuple = ()


class ExampleEncoder:
    """Serializes windows as tf.train.Example protos.

    Each example has `audio` (bytes_list of one element: the codes),
    `track_id` (bytes_list), `offset` (int64_list) and one bytes_list per
    label kind (`contract.label_feature`), as named in `pipelines.contract`.
    """

    def __init__(self):
        import pyarrow as pa
        from tfx_bsl.coders import example_coder

        self._pa = pa
        self._encoder = example_coder.RecordBatchToExamplesEncoder()

    def encode(self, windows):
        """Encodes a batch of windows (one Arrow batch: ~10 us a window for 16 or more).

        Args:
          windows: sequence of `Window`.

        Returns:
          list of bytes, one serialized tf.train.Example per window, in order.
        """
        pa = self._pa
        unknown = (contract.UNKNOWN_LABEL,) * len(contract.LABEL_KINDS)
        labels = [w.labels or unknown for w in windows]
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([[w.codes] for w in windows], pa.list_(pa.binary())),
                pa.array([[w.track_id.encode()] for w in windows], pa.list_(pa.binary())),
                pa.array([[w.offset] for w in windows], pa.list_(pa.int64())),
                *(
                    pa.array([[values[k].encode()] for values in labels], pa.list_(pa.binary()))
                    for k in range(len(contract.LABEL_KINDS))
                ),
            ],
            [
                contract.AUDIO_FEATURE,
                contract.TRACK_ID_FEATURE,
                contract.OFFSET_FEATURE,
                *map(contract.label_feature, contract.LABEL_KINDS),
            ],
        )
        return self._encoder.encode(batch)


class ExampleDecoder:
    """Reads back what `ExampleEncoder` wrote, without TensorFlow (tfx-bsl's C++ decoder)."""

    def __init__(self):
        import pyarrow.compute as pc
        from tfx_bsl.coders import example_coder

        self._pc = pc
        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def audio_lengths(self, records):
        """The number of codes in each record's `audio` feature.

        Args:
          records: sequence of serialized tf.train.Example bytes.

        Returns:
          list of int, one per record: its codes (window_samples for a sound record), or -1 when
          the record has no `audio` feature or more than one value in it.
        """
        if not records:
            return []
        batch = self._decoder.DecodeBatch(list(records))
        index = batch.schema.get_field_index(contract.AUDIO_FEATURE)
        if index < 0:
            return [-1] * len(records)
        column = batch.column(index)
        counts = self._pc.list_value_length(column).to_pylist()  # None for a record without the feature.
        flat = self._pc.binary_length(self._pc.list_flatten(column)).to_pylist()
        lengths, position = [], 0
        for count in counts:
            lengths.append(flat[position] if count == 1 else -1)
            position += count or 0
        return lengths
