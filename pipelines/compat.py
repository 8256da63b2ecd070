"""The private APIs of our dependencies that the pipeline uses, each in one place.

Each is used because no public API does the same job; `tests/test_compat.py`
calls every one, so an upgrade that moves or changes one fails there, loudly
and by name, instead of somewhere inside a job.
"""


def resampy_kernel():
    """resampy's band-limited interpolation kernel (`resampy.interpn.resample_f_s`).

    `resampy.resample` only takes whole signals; the kernel lets
    `audio.StreamResampler` run the same filter over a sliding buffer.

    Returns:
      callable(x, t_out, interp_win, interp_delta, num_table, scale, y): writes
      float y [len(t_out)] from float x [n] at fractional input times t_out.
    """
    from resampy.interpn import resample_f_s

    return resample_f_s


def write_tfrecord(fileobj, record):
    """Writes one record with TFRecord framing (length, masked CRC32C of both, data).

    Beam's `WriteToTFRecord` has no windowed variant; the streaming writer uses
    `fileio.WriteToFiles` with this framing (`apache_beam.io.tfrecordio._TFRecordUtil`).

    Args:
      fileobj: binary file object open for writing.
      record: bytes.
    """
    from apache_beam.io.tfrecordio import _TFRecordUtil

    _TFRecordUtil.write_record(fileobj, record)


def fn_api_runner(options):
    """Beam's FnApiRunner (the DirectRunner's engine) given the pipeline options, as the DirectRunner builds it.

    Naming the engine skips the DirectRunner's attempt to download the Prism
    runner, which fails without internet access. Its workers read the options
    from the provision info, as they do under the DirectRunner.

    Args:
      options: PipelineOptions.

    Returns:
      an `apache_beam.runners.portability.fn_api_runner.fn_runner.FnApiRunner`.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded_options = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded_options)
        )
    )


def options_parser(options_class, **kwargs):
    """An argparse parser of one PipelineOptions subclass's own options (Beam's `_add_argparse_args`).

    Args:
      options_class: a PipelineOptions subclass.
      **kwargs: for argparse.ArgumentParser (prog, description, ...).
    """
    import argparse

    parser = argparse.ArgumentParser(**kwargs)
    options_class._add_argparse_args(parser)
    return parser


def parser_options(parser):
    """The options an argparse parser defines (argparse keeps them in the private `_actions`).

    Returns:
      list of argparse.Action with option strings, --help excluded, in definition order.
    """
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def read_tfrecords(fileobj):
    """The records of a TFRecord file, each checked against its CRC32C checksums.

    Uses `apache_beam.io.tfrecordio._TFRecordUtil.read_record`, Beam's reader of
    the framing `write_tfrecord` writes.

    Args:
      fileobj: binary file object open for reading.

    Yields:
      bytes, one per record.

    Raises:
      ValueError: a truncated record or a checksum mismatch.
    """
    from apache_beam.io.tfrecordio import _TFRecordUtil

    while (record := _TFRecordUtil.read_record(fileobj)) is not None:
        yield record


def pinned_http_adapter(pinned_address):
    """A requests transport adapter whose connections go to an address we chose, not one DNS gives.

    urllib3 connects to `HTTPConnection._dns_host`, a private attribute; each
    new connection here swaps in `pinned_address(host, port)` (an address the
    caller has already checked) for that one connect. TLS still verifies, and
    sends SNI for, the URL's host name, so https works unchanged. This closes
    the window between checking an address and connecting (DNS rebinding).

    Args:
      pinned_address: callable(host, port) -> IP address str; raises when the
        host was not checked.

    Returns:
      a `requests.adapters.HTTPAdapter` to mount for "http://" and "https://".
    """
    import urllib3
    from requests.adapters import HTTPAdapter

    class Pinned:
        def _new_conn(self):
            host = self._dns_host
            self._dns_host = pinned_address(host.rstrip(".").lower(), self.port)
            try:
                return super()._new_conn()
            finally:
                self._dns_host = host

    class PinnedHTTPConnection(Pinned, urllib3.connection.HTTPConnection):
        pass

    class PinnedHTTPSConnection(Pinned, urllib3.connection.HTTPSConnection):
        pass

    class PinnedHTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": PinnedHTTPPool, "https": PinnedHTTPSPool}

    return PinnedAdapter()


def beam_option_parser():
    """A parser knowing every option of every loaded `PipelineOptions` class, as Beam builds it.

    `PipelineOptions.get_all_options` builds this parser (Beam's private
    `_BeamArgumentParser`, which adds value-provider arguments) from the
    direct subclasses of `PipelineOptions` and silently discards what it
    cannot parse; we build the same one to tell the user instead.

    Returns:
      an argparse.ArgumentParser.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser
