"""The private APIs of Beam that the contract's storage access uses (`pipelines.contract.storage`).

Each is used because no public API does the job; `tests/test_compat.py` calls
every one, so an upgrade that moves or changes one fails there, by name.
"""


def skip_beam_google_credentials():
    """Makes Beam's Cloud Storage client connect anonymously, without looking for credentials.

    Beam (2.77, `apache_beam.internal.gcp.auth._Credentials`) looks for
    Application Default Credentials once per process, with 4 retries and
    exponential backoff from 2 s, and connects anonymously only after they all
    failed: about 30 s per process, and a probe of the GCE metadata address.
    Against an emulator (STORAGE_EMULATOR_HOST) or a public bucket with no
    credentials on the machine, anonymous is the answer from the start; this
    records it in Beam's once-per-process cache.
    """
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


def beam_google_credentials_skipped():
    """Whether Beam's Cloud Storage client will connect anonymously (`skip_beam_google_credentials`)."""
    from apache_beam.internal.gcp import auth

    return auth._Credentials._credentials_init and auth._Credentials._credentials is None


def fix_beam_s3_empty_files():
    """Lets Beam's S3 filesystem write empty files (apache/beam#21369, open for Beam 2.77).

    Beam writes every S3 object as a multipart upload and uploads no part for an
    empty file; S3 refuses to complete an upload without parts (MalformedXML,
    HTTP 400), so an empty failures file or an empty shard failed the whole job.
    S3 has no minimum size for the last part: one empty part completes it, as
    other S3 clients do for empty streams. Idempotent.
    """
    from apache_beam.io.aws import s3io

    finish = s3io.S3Uploader.finish
    if getattr(finish, "uploads_an_empty_part", False):
        return

    def finish_with_a_part(self):
        if not self.parts and not self.buffer:
            self._write_to_s3(b"")
        finish(self)

    finish_with_a_part.uploads_an_empty_part = True
    s3io.S3Uploader.finish = finish_with_a_part


_S3_SETTINGS = (
    "s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url", "s3_region_name",
    "s3_api_version", "s3_verify", "s3_disable_ssl",
)  # fmt: skip
# What Beam's S3 client wrapper holds besides its boto3 client: its own download position (Beam 2.77).
BEAM_S3_CLIENT_STATE = {"client": None, "_download_request": None, "_download_stream": None, "_download_pos": 0}


def reuse_beam_s3_clients():
    """Makes Beam's S3 filesystem reuse one boto3 client per storage settings. Idempotent.

    Beam (2.77, `apache_beam.io.aws.clients.s3.boto3_client.Client`) builds a new
    boto3 session and client for every filesystem call, which loads botocore's
    service model each time: about 150 ms per `exists`, `open` or `create`, where
    the request itself takes a few milliseconds on a nearby store. boto3 clients
    are thread-safe; the wrapper's own download position stays per call.
    """
    import threading

    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    build = boto3_client.Client.__init__
    if getattr(build, "reuses_clients", False):
        return
    clients, lock = {}, threading.Lock()

    def build_or_reuse(self, options):
        if isinstance(options, PipelineOptions):
            view = options.view_as(S3Options)
            key = tuple(getattr(view, name) for name in _S3_SETTINGS)
        else:
            key = tuple(options.get(name) for name in _S3_SETTINGS)
        with lock:
            client = clients.get(key)
        if client is None:
            build(self, options)
            with lock:
                clients.setdefault(key, self.client)
            return
        vars(self).update(BEAM_S3_CLIENT_STATE, client=client)

    build_or_reuse.reuses_clients = True
    boto3_client.Client.__init__ = build_or_reuse
