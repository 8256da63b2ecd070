"""The private APIs of TensorFlow the trainer uses, in one place.

`tests/test_trainer.py::test_mirrored_strategies_made_one_after_another_in_one_process_each_reduce_their_own_shapes`
uses each, so an upgrade that moves or changes one fails there by name.
"""

import itertools

# Collective group keys each MirroredStrategy made in this process may use (it needs a few).
_KEYS_PER_STRATEGY = 10_000
_key_ranges = itertools.count()


def mirrored_strategy(devices):
    """A MirroredStrategy over `devices` (names such as "/gpu:0") that can live beside others in one process.

    TensorFlow starts every MirroredStrategy's collective group keys at 1, so a second one in
    the same process (a notebook training twice, a test comparing strategies) reuses the first
    one's all-reduce instances and fails with "Shape mismatch in the collective instance"
    (tensorflow/tensorflow#62790). Each strategy made here gets its own range of keys through
    the attribute TensorFlow reads for that, `_collective_key_base` (private: the test
    `test_mirrored_strategies_made_one_after_another_in_one_process_each_reduce_their_own_shapes`
    fails by name if an upgrade changes it).
    """
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy.__new__(tf.distribute.MirroredStrategy)
    strategy._collective_key_base = next(_key_ranges) * _KEYS_PER_STRATEGY
    strategy.__init__(devices)
    return strategy
