"""The private APIs the sampler uses (TensorFlow's XLA ops, where the wheels keep their BLAS), in one place.

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


def blas_sgemm():
    """The fastest single-precision GEMM at hand as a ctypes function, and its integer type.

    numpy's wheels bundle OpenBLAS as `libscipy_openblas64_*.so` (64-bit
    integers, symbols `scipy_sgemm_64_`); SciPy's bundle their own, exported
    as `scipy.linalg.cython_blas.sgemm` (32-bit integers). One clip's small
    products ran several times faster in numpy's (BENCHMARKS.md, "Generation",
    "which BLAS the cpu engine calls"), so it is used when threadpoolctl finds
    it; SciPy's is the fallback for any other numpy build.

    Returns:
      (sgemm, index_dtype): a ctypes function of 13 pointer arguments (Fortran
      BLAS sgemm, every argument by reference) and the numpy integer type of
      its dimension arguments (np.int64 or np.int32).
    """
    import ctypes

    import numpy as np

    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            name = info.get("filepath") or ""
            if info.get("internal_api") == "openblas" and "libscipy_openblas64_" in name and "numpy" in name:
                function = ctypes.CDLL(name).scipy_sgemm_64_
                return signature(ctypes.cast(function, ctypes.c_void_p).value), np.int64
    except (ImportError, OSError, AttributeError):
        pass
    import numba.extending

    return signature(numba.extending.get_cython_function_address("scipy.linalg.cython_blas", "sgemm")), np.int32
