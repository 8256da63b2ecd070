"""Every private API of a dependency we use, called directly: an upgrade that breaks one fails here, by name."""

import argparse
import io

import numpy as np
import pytest

from pipelines import compat


def test_resampy_kernel_computes_what_resampy_resample_does():
    import resampy

    x = np.random.default_rng(0).normal(0, 0.3, 4410).astype(np.float32)
    interp_win, precision, _ = resampy.filters.get_filter("kaiser_fast")
    ratio = 16000 / 44100
    interp_win = ratio * interp_win
    t_out = np.arange(round(len(x) * ratio)) / ratio
    y = np.zeros(len(t_out), np.float32)
    compat.resampy_kernel()(x, t_out, interp_win, np.diff(interp_win, append=interp_win[-1]), precision, ratio, y)
    np.testing.assert_allclose(y, resampy.resample(x, 44100, 16000, filter="kaiser_fast", parallel=False), atol=1e-6)


def test_tfrecord_framing_is_length_crc_data_crc():
    import google_crc32c

    fh = io.BytesIO()
    compat.write_tfrecord(fh, b"abc")
    framed = fh.getvalue()

    def masked(data):  # tensorflow/core/lib/hash/crc32c.h: Mask()
        crc = google_crc32c.value(data)
        return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    # TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data).
    assert framed == (
        (3).to_bytes(8, "little") + masked((3).to_bytes(8, "little")).to_bytes(4, "little")
        + b"abc" + masked(b"abc").to_bytes(4, "little")
    )  # fmt: skip


def test_tfrecord_framing_reads_back_with_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "records.tfrecord"
    with open(path, "wb") as fh:
        for record in (b"first", b"", b"third" * 1000):
            compat.write_tfrecord(fh, record)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == [b"first", b"", b"third" * 1000]


def test_fn_api_runner_runs_a_pipeline_and_passes_the_options():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    runner = compat.fn_api_runner(options)
    assert type(runner).__name__ == "FnApiRunner"
    with beam.Pipeline(runner=runner, options=options) as pipeline:
        assert_that(pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x), equal_to([1, 4, 9]))


def test_parser_options_lists_the_options_in_order():
    parser = argparse.ArgumentParser()
    parser.add_argument("positional")
    parser.add_argument("--first", help="one")
    parser.add_argument("--second", type=int, default=3)
    assert [(a.dest, a.default) for a in compat.parser_options(parser)] == [("first", None), ("second", 3)]


def test_xla_slices_read_and_update_a_ring_buffer_under_xla():
    tf = pytest.importorskip("tensorflow")
    from sampler import compat as sampler_compat

    @tf.function(jit_compile=True)
    def read_then_write(queue, slot):
        zero = tf.constant(0)
        old = sampler_compat.xla_dynamic_slice(queue, [slot, zero], [1, 3])[0]
        return old, sampler_compat.xla_dynamic_update_slice(queue, tf.fill([1, 3], 9.0), [slot, zero])

    queue = tf.reshape(tf.range(12, dtype=tf.float32), [4, 3])
    old, updated = read_then_write(queue, tf.constant(2))
    np.testing.assert_array_equal(old.numpy(), [6, 7, 8])
    expected = np.arange(12, dtype=np.float32).reshape(4, 3)
    expected[2] = 9
    np.testing.assert_array_equal(updated.numpy(), expected)


@pytest.mark.parametrize("numpy_blas", [True, False])
def test_blas_sgemm_multiplies_with_numpy_openblas_or_scipy(numpy_blas, monkeypatch):
    import ctypes

    import threadpoolctl

    from sampler import compat as sampler_compat

    if not numpy_blas:  # No numpy OpenBLAS found: SciPy's Cython BLAS (32-bit integers).
        monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [])
    sgemm, index_dtype = sampler_compat.blas_sgemm()
    if numpy_blas:
        assert index_dtype == np.int64  # numpy's wheels bundle OpenBLAS with 64-bit integers.
    else:
        assert index_dtype == np.int32
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    c = np.zeros((3, 4), np.float32)
    # Row-major c = a @ b is column-major c^T = b^T a^T: sgemm(N, N, 4, 3, 5, 1, b, 4, a, 5, 0, c, 4).
    ints = [np.array([v], index_dtype) for v in (4, 3, 5, 4, 5, 4)]
    no_transpose, alpha, beta = np.array([ord("N")], np.uint8), np.ones(1, np.float32), np.zeros(1, np.float32)
    pointer = ctypes.c_void_p
    sgemm(*(pointer(x.ctypes.data) for x in (no_transpose, no_transpose, *ints[:3], alpha, b, ints[3], a, ints[4],
                                              beta, c, ints[5])))  # fmt: skip
    np.testing.assert_allclose(c, a @ b, rtol=1e-5)


def test_options_parser_holds_a_pipeline_options_classs_own_options():
    from pipelines.options import PreprocessOptions

    parser = compat.options_parser(PreprocessOptions, prog="x")
    names = [action.dest for action in compat.parser_options(parser)]
    assert names[:2] == ["input", "scrape_url"] and "runner" not in names and parser.prog == "x"


def test_beam_s3_client_wrapper_holds_what_reuse_assumes():
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.contract import compat as contract_compat

    contract_compat.reuse_beam_s3_clients()
    flags = ["--s3_endpoint_url=http://127.0.0.1:9", "--s3_region_name=us-east-1", "--s3_access_key_id=a",
             "--s3_secret_access_key=b"]  # fmt: skip
    first, second = boto3_client.Client(PipelineOptions(flags)), boto3_client.Client(PipelineOptions(flags))
    assert first.client is second.client  # One boto3 client per settings (building one takes ~150 ms).
    assert set(vars(second)) == set(contract_compat.BEAM_S3_CLIENT_STATE)  # Beam added state: revisit the reuse.
    other = boto3_client.Client(PipelineOptions([*flags[:-1], "--s3_secret_access_key=c"]))
    assert other.client is not first.client


def test_beam_s3_uploader_has_what_the_empty_file_fix_calls():
    import inspect

    from apache_beam.io.aws import s3io

    from pipelines.contract import compat as contract_compat

    contract_compat.fix_beam_s3_empty_files()
    assert s3io.S3Uploader.finish.uploads_an_empty_part
    # The fix reads the uploader's parts and buffer and calls its part writer (tests/test_stores.py writes one).
    source = inspect.getsource(s3io.S3Uploader.__init__)
    assert "self.parts" in source and "self.buffer" in source and callable(s3io.S3Uploader._write_to_s3)


def test_beam_google_credentials_can_be_skipped():
    from pipelines.contract import compat as contract_compat

    contract_compat.skip_beam_google_credentials()
    assert contract_compat.beam_google_credentials_skipped()
