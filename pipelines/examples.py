"""tf.train.Example encoding of windows, without importing TensorFlow.

tfx-bsl's C++ coder turns an Arrow RecordBatch into serialized examples; a
worker that uses it loads about 70 MB and starts in 0.2 s, where importing
TensorFlow costs about 780 MB and 4 s (measured on this project's machine).
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
    """

    track_id: str
    offset: int
    codes: bytes


class ExampleEncoder:
    """Serializes windows as tf.train.Example protos.

    Each example has `audio` (bytes_list of one element: the codes),
    `track_id` (bytes_list) and `offset` (int64_list), as named in
    `pipelines.contract`.
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
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([[w.codes] for w in windows], pa.list_(pa.binary())),
                pa.array([[w.track_id.encode()] for w in windows], pa.list_(pa.binary())),
                pa.array([[w.offset] for w in windows], pa.list_(pa.int64())),
            ],
            [contract.AUDIO_FEATURE, contract.TRACK_ID_FEATURE, contract.OFFSET_FEATURE],
        )
        return self._encoder.encode(batch)
