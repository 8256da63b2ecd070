"""The private TensorFlow APIs the sampler uses, in one place.

`tests/test_compat.py` calls each, so an upgrade that moves or changes one
fails there by name. (The pipeline's are in `pipelines.compat`; the pipeline
never imports TensorFlow.)
"""


def xla_dynamic_slice(tensor, begin, size):
    """XLA's DynamicSlice (`tensorflow.compiler.tf2xla.python.xla.dynamic_slice`).

    Inside a jit-compiled `tf.while_loop` it reads a ring buffer's slot without
    a copy, where a gather would materialise one.

    Args:
      tensor: the tensor to slice.
      begin: int32 start index per dimension (tensors allowed).
      size: static size per dimension.
    """
    from tensorflow.compiler.tf2xla.python import xla

    return xla.dynamic_slice(tensor, begin, size)


def xla_dynamic_update_slice(tensor, update, begin):
    """XLA's DynamicUpdateSlice (`tensorflow.compiler.tf2xla.python.xla.dynamic_update_slice`).

    XLA updates the ring buffer in place inside the while loop; a scatter would
    copy the whole buffer every step.

    Args:
      tensor: the tensor to update.
      update: the values to write, of rank equal to tensor's.
      begin: int32 start index per dimension.
    """
    from tensorflow.compiler.tf2xla.python import xla

    return xla.dynamic_update_slice(tensor, update, begin)
