"""Object stores (s3://, gs://): the user's storage settings, made Beam filesystem options once per process.

Every program (preprocess, verify, the trainer, evaluate, the sampler) calls
`configure` once, first thing, with the settings of its command line; every
file operation of `pipelines.contract.fs` makes sure it happened (with the
environment's defaults when a program did not), so no `FileSystems` call can
run without them: the lease, the commit, verify, the trainer's staging and
the sampler's loading reach a store exactly as the pipeline's workers do.

How a user points at a store follows each ecosystem's own conventions:

- S3 and S3-compatible stores (MinIO, Ceph, moto): the standard AWS
  environment and configuration (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID` /
  `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and `~/.aws/config`, instance and
  task roles), read by boto3; Beam's own `--s3_*` options win over them.
- Cloud Storage: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
  `gcloud auth application-default login`, the metadata server on Google
  Cloud); `STORAGE_EMULATOR_HOST` for an emulator; `--project`. With an
  emulator, or with no credentials on the machine (a public bucket), the
  connection is anonymous, decided once and at once, instead of after Beam's
  half a minute of retries per process.

`check_access` asks each store once, with short timeouts and one retry,
before a program starts work, so a missing bucket, refused credentials,
denied access or an unreachable endpoint is one line (`StorageError`) within
seconds; `describe_fault` turns the same faults into one line when they
surface later, inside Beam. `create_exclusive` is the store's own
create-if-absent (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`), for the
output's lease.
"""

import dataclasses
import os
import sys
import threading
import urllib.parse

from pipelines.contract import compat
from pipelines.contract.commands import CommandError

# Set by a process that found no Google credentials (or runs against an emulator); the pipeline's local
# worker processes inherit it, so they connect anonymously at once too (`pipelines.workers`).
ANONYMOUS_GOOGLE_ENV = "WAVENET_GCS_ANONYMOUS"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
CONNECT_TIMEOUT_SECS = 5.0
READ_TIMEOUT_SECS = 60.0
# A request is tried this many times in all by our own clients (boto3's "standard" retry mode counts so).
MAX_ATTEMPTS = 2


class StorageError(CommandError):
    """A store refused or could not be reached; the message names the path and what to do."""


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """How this process reaches object stores: Beam's own option names, None where the environment decides.

    Attributes:
      s3_endpoint_url: an S3-compatible endpoint (MinIO, Ceph, moto), e.g. http://127.0.0.1:9000;
        None: AWS_ENDPOINT_URL, else AWS.
      s3_access_key_id, s3_secret_access_key, s3_session_token: credentials; None: the AWS
        credential chain (environment, profile, instance role).
      s3_region_name: None: AWS_DEFAULT_REGION / the profile's region.
      s3_verify: False or a CA bundle path to verify TLS with; None: boto3's default (verify).
      s3_disable_ssl: talk plain HTTP to the endpoint.
      project: the Google Cloud project; None: the credentials' own.
    """

    s3_endpoint_url: str = None
    s3_access_key_id: str = None
    s3_secret_access_key: str = dataclasses.field(default=None, repr=False)
    s3_session_token: str = dataclasses.field(default=None, repr=False)
    s3_region_name: str = None
    s3_verify: str = None
    s3_disable_ssl: bool = False
    project: str = None

    @classmethod
    def from_options(cls, options):
        """The settings of parsed options: an argparse Namespace (`add_arguments`), Beam's PipelineOptions
        (any view), or a dict of option values."""
        if hasattr(options, "get_all_options"):
            options = options.get_all_options()
        get = options.get if isinstance(options, dict) else lambda name, default: getattr(options, name, default)
        values = {field.name: get(field.name, None) for field in dataclasses.fields(cls)}
        values["s3_disable_ssl"] = bool(values["s3_disable_ssl"])
        return cls(**values)

    def flags(self):
        """Beam's command-line flags for the settings given (`--s3_endpoint_url=...`, ...)."""
        flags = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is True:
                flags.append(f"--{field.name}")
            elif value not in (None, False):
                flags.append(f"--{field.name}={value}")
        return flags

    def pipeline_options(self):
        """These settings as Beam PipelineOptions (S3Options and GoogleCloudOptions)."""
        from apache_beam.options.pipeline_options import PipelineOptions

        return PipelineOptions(self.flags())


def add_arguments(parser):
    """The storage options of the commands that are not Beam pipelines (verify, the trainer, the sampler).

    The names, meanings and defaults are Beam's, so one set of flags works on every command.
    """
    group = parser.add_argument_group(
        "object stores",
        "s3:// uses the AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE, instance roles) and "
        "gs:// Google's Application Default Credentials or STORAGE_EMULATOR_HOST; these options win over them.",
    )
    group.add_argument(
        "--s3_endpoint_url",
        default=None,
        help="Endpoint of an S3-compatible store (MinIO, Ceph), e.g. http://127.0.0.1:9000. "
        "Default: AWS_ENDPOINT_URL, else AWS.",
    )
    group.add_argument(
        "--s3_access_key_id", default=None, help="S3 access key id. Default: the AWS credential chain."
    )
    group.add_argument(
        "--s3_secret_access_key", default=None, help="S3 secret access key. Default: the AWS credential chain."
    )
    group.add_argument(
        "--s3_session_token", default=None, help="S3 session token. Default: the AWS credential chain."
    )
    group.add_argument(
        "--s3_region_name", default=None, help="S3 region. Default: AWS_DEFAULT_REGION or the profile's."
    )
    group.add_argument(
        "--s3_verify",
        default=None,
        help="'False' to skip TLS verification, or a CA bundle to verify it with. Default: verify.",
    )
    group.add_argument(
        "--s3_disable_ssl", action="store_true", help="Talk plain HTTP to the S3 endpoint. Default: off."
    )
    group.add_argument(
        "--project", default=None, help="Google Cloud project for gs://. Default: the credentials' own."
    )
    return group


_lock = threading.Lock()
_state = {"settings": None, "s3_client": None, "gcs_client": None}


def configure(settings=None):
    """Makes `settings` this process's Beam filesystem options (the one place they are set).

    Args:
      settings: StorageSettings; None: the environment's defaults.

    Returns:
      the StorageSettings in force.
    """
    from apache_beam.io.filesystems import FileSystems

    settings = settings or StorageSettings()
    with _lock:
        FileSystems.set_options(settings.pipeline_options())
        _state.update(settings=settings, s3_client=None, gcs_client=None)
    _prepare_beam()
    return settings


def _prepare_beam():
    """What this process's Beam filesystems need before their first call (here and in the workers)."""
    compat.fix_beam_s3_empty_files()
    compat.reuse_beam_s3_clients()
    if _anonymous_google():
        compat.skip_beam_google_credentials()


def ensure_configured():
    """The settings in force, configuring the environment's defaults if no program did."""
    settings = _state["settings"]
    return settings if settings is not None else configure()


def bucket_of(path):
    """(scheme, bucket) of an object-store path, or None for local paths and other schemes."""
    parts = urllib.parse.urlsplit(path)
    if parts.scheme in ("s3", "gs") and parts.netloc:
        return parts.scheme, parts.netloc
    return None


def _split(path):
    parts = urllib.parse.urlsplit(path)
    return parts.netloc, parts.path.lstrip("/")


def s3_client():
    """A boto3 S3 client of the settings in force: short timeouts, one retry (for checks and conditional writes)."""
    import boto3
    import botocore.config

    settings = ensure_configured()
    with _lock:
        if _state["s3_client"] is None:
            config = botocore.config.Config(
                connect_timeout=CONNECT_TIMEOUT_SECS,
                read_timeout=READ_TIMEOUT_SECS,
                retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            )
            _state["s3_client"] = boto3.session.Session().client(
                "s3",
                region_name=settings.s3_region_name,
                endpoint_url=settings.s3_endpoint_url,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=settings.s3_secret_access_key,
                aws_session_token=settings.s3_session_token,
                use_ssl=not settings.s3_disable_ssl,
                verify=settings.s3_verify,
                config=config,
            )
        return _state["s3_client"]


def gcs_client():
    """A google-cloud-storage client of the settings in force: ADC, or anonymous with an emulator or no credentials.

    Finding no credentials is not an error (an emulator, a public bucket): the
    client, Beam's in this process and those of its local workers then connect
    anonymously.
    """
    from google.cloud import storage as gcs

    settings = ensure_configured()
    with _lock:
        if _state["gcs_client"] is None:
            credentials = None if _anonymous_google() else _google_credentials()
            if credentials is None:
                os.environ[ANONYMOUS_GOOGLE_ENV] = "1"
                compat.skip_beam_google_credentials()
                client = gcs.Client.create_anonymous_client()
                if settings.project:
                    client.project = settings.project
            else:
                client = gcs.Client(project=settings.project or credentials[1], credentials=credentials[0])
            _state["gcs_client"] = client
        return _state["gcs_client"]


def _gcs_request_limits():
    """Timeouts and retries of our own Cloud Storage requests: short, where the library's default retries
    connection errors for 120 s."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return {
        "timeout": (CONNECT_TIMEOUT_SECS, READ_TIMEOUT_SECS),
        "retry": DEFAULT_RETRY.with_timeout(CONNECT_TIMEOUT_SECS),
    }


def _anonymous_google():
    return bool(os.environ.get(EMULATOR_ENV) or os.environ.get(ANONYMOUS_GOOGLE_ENV))


def _google_credentials():
    """(credentials, project) from Application Default Credentials, or None when the machine has none."""
    import google.auth
    import google.auth.exceptions

    try:
        return google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        return None


def check_access(paths):
    """Asks each store named in `paths` for one listing under the path, before any work starts.

    Local paths and other schemes are skipped; each (scheme, bucket, prefix) is asked once.

    Raises:
      StorageError: the bucket does not exist, the credentials are refused or missing, access is
        denied, or the endpoint cannot be reached; one line naming the path and what to do.
    """
    seen = set()
    for path in paths:
        if not path or bucket_of(path) is None:
            continue
        scheme, _ = bucket_of(path)
        bucket, key = _split(path.split("*", 1)[0])
        prefix = key if key.endswith("/") or not key else key.rsplit("/", 1)[0] + "/"
        if (scheme, bucket, prefix) in seen:
            continue
        seen.add((scheme, bucket, prefix))
        try:
            if scheme == "s3":
                s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            else:
                blobs = gcs_client().list_blobs(bucket, prefix=prefix, max_results=1, **_gcs_request_limits())
                next(iter(blobs), None)
        except Exception as e:
            message = describe_fault(e, path)
            if message is None:
                raise
            raise StorageError(message) from None


def create_exclusive(path, data):
    """Writes the object `path` only if it does not exist yet: the store's own create-if-absent.

    S3 (and S3-compatible stores that honour it): PutObject with `If-None-Match: *`
    (a 412 or a 409 conditional-request conflict means another writer won); Cloud
    Storage: an upload with `ifGenerationMatch=0`.

    Args:
      path: an s3:// or gs:// object path.
      data: bytes.

    Returns:
      True when written, False when the object exists already, None for a scheme
      without create-if-absent (the caller falls back to write and read back).

    Raises:
      StorageError: for any other refusal (one line).
    """
    where = bucket_of(path)
    if where is None:
        return None
    bucket, key = _split(path)
    try:
        if where[0] == "s3":
            s3_client().put_object(
                Bucket=bucket, Key=key, Body=data, IfNoneMatch="*", ContentType="application/json"
            )
        else:
            blob = gcs_client().bucket(bucket).blob(key)
            blob.upload_from_string(
                data, content_type="application/json", if_generation_match=0, **_gcs_request_limits()
            )
        return True
    except Exception as e:
        if _is_precondition_failure(e):
            return False
        message = describe_fault(e, path)
        if message is None:
            raise
        raise StorageError(message) from None


def _is_precondition_failure(error):
    response = getattr(error, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
    return getattr(error, "code", None) == 412  # google.api_core.exceptions.PreconditionFailed


_S3_CREDENTIALS_REFUSED = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId",
    "AuthorizationHeaderMalformed", "UnrecognizedClientException",
}  # fmt: skip


def describe_fault(error, path=None):
    """The one line for a store's fault (missing bucket, refused or missing credentials, denied access,
    unreachable endpoint), or None when `error` is none of those.

    Args:
      error: an exception from boto3/botocore, google-cloud-storage, google-auth, or Beam's
        filesystems wrapping one of those (BeamIOError, S3ClientError).
      path: the path being accessed, when the caller knows it.
    """
    for path_, cause in _causes(error, path):
        message = _describe_one(cause, path_)
        if message is not None:
            return message
    return None


def _causes(error, path):
    """(path, exception) pairs: the error, what Beam's BeamIOError wraps per path, and the chained causes."""
    seen, pending = set(), [(path, error)]
    while pending:
        path_, error = pending.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield path_, error
        details = getattr(error, "exception_details", None)
        if isinstance(details, dict):
            pending.extend((key if isinstance(key, str) else path_, value) for key, value in details.items())
        pending.append((path_, error.__cause__ or error.__context__))


def _describe_one(error, path):
    where = path or "the store"
    name = type(error).__name__
    module = type(error).__module__
    settings = _state["settings"] or StorageSettings()
    if module.startswith("botocore") or name == "S3ClientError":
        return _describe_s3(error, where, settings)
    if module.startswith(("google.api_core", "google.auth", "google.cloud")):
        return _describe_gcs(error, where)
    if module.startswith(("requests", "urllib3")) and _is_connection_error(error) and (path or "").startswith("gs://"):
        return f"{where}: cannot reach Cloud Storage at {_gcs_endpoint()} ({_first_line(error)}); check " + (
            f"{EMULATOR_ENV}" if os.environ.get(EMULATOR_ENV) else "the network"
        )
    return None


def _describe_s3(error, where, settings):
    name = type(error).__name__
    endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError"):
        return (
            f"{where}: cannot reach the S3 endpoint {endpoint} ({_first_line(error)}); check --s3_endpoint_url or "
            "AWS_ENDPOINT_URL and that the store is running"
        )
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (
            f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile "
            "(AWS_PROFILE), an instance role, or --s3_access_key_id and --s3_secret_access_key"
        )
    if name == "ProfileNotFound":
        return f"{where}: {_first_line(error)}; check AWS_PROFILE and ~/.aws/config"
    code, status = _s3_code(error)
    bucket = (bucket_of(where) or (None, "?"))[1]
    if code == "NoSuchBucket" or (code in ("404", "NotFound") and status == 404 and "/" not in where[5:].strip("/")):
        return f"{where}: bucket {bucket!r} does not exist at {endpoint}; create it, or check the path"
    if code in _S3_CREDENTIALS_REFUSED:
        return (
            f"{where}: the S3 store at {endpoint} refused the credentials ({code}); check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, the profile, or --s3_access_key_id / --s3_secret_access_key"
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403", "Forbidden") or status == 403:
        return (
            f"{where}: access denied by the S3 store at {endpoint}; the credentials in use lack permission on "
            f"bucket {bucket!r} (check the bucket policy or the IAM role)"
        )
    return None


def _s3_code(error):
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code"), response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = getattr(error, "code", None)  # Beam's S3ClientError: the HTTP status, or None
    text = str(getattr(error, "message", error))
    for known in ("NoSuchBucket", "AccessDenied", *_S3_CREDENTIALS_REFUSED):
        if known in text:
            return known, code
    return (str(code) if code else None), code


def _describe_gcs(error, where):
    name = type(error).__name__
    code = getattr(error, "code", None)
    bucket = (bucket_of(where) or (None, "?"))[1]
    if name in ("DefaultCredentialsError", "RefreshError", "TransportError") and "auth" in type(error).__module__:
        return (
            f"{where}: Google credentials could not be used ({_first_line(error)}); run `gcloud auth "
            "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
        )
    if code == 404 or name == "NotFound":
        if not where.startswith("gs://"):  # Another Google service (a Pub/Sub subscription, ...).
            return f"{where}: not found ({_first_line(error)})"
        return f"{where}: bucket {bucket!r} does not exist (or the object is missing); create it, or check the path"
    if code in (401, 403) or name in ("Forbidden", "Unauthorized"):
        return (
            f"{where}: access denied by Cloud Storage ({_first_line(error)}); the credentials in use lack "
            f"permission on bucket {bucket!r}"
        )
    return None


def _is_connection_error(error):
    return "Connection" in type(error).__name__ or "Timeout" in type(error).__name__


def _gcs_endpoint():
    return os.environ.get(EMULATOR_ENV) or "storage.googleapis.com"


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


# A Beam worker process imports this module at start (through `pipelines.workers`, a Beam plugin): what `configure`
# prepared in its parent holds there too (Beam's S3 filesystem fixed, Google credentials skipped where none were).
if "apache_beam.runners.worker.sdk_worker" in sys.modules:
    _prepare_beam()
