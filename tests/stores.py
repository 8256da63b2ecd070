"""Real object-store servers on 127.0.0.1 for the tests: moto's S3 REST server and gcp-storage-emulator's GCS JSON API.

Each runs as a subprocess on a free loopback port, started once for the test
session and stopped by its pid. The S3 server checks credentials and IAM
policies (moto's INITIAL_NO_AUTH_ACTION_COUNT: the first requests, which
create the users, go unchecked), so refused and denied requests are real.
Environments given to the programs under test point only at these servers:
no AWS instance metadata, no shared AWS config, no Google credentials.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

_BIN = os.path.dirname(sys.executable)
_IAM_SETUP_ACTIONS = 5  # create_user, put_user_policy, create_access_key; create_user, create_access_key
REGION = "us-east-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port, process, what, timeout_secs=60):
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_secs} s")


def _stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class S3Server:
    """moto's S3 server with IAM checks: `env` for a user allowed everything, `denied_env` for one allowed nothing."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [os.path.join(_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_IAM_SETUP_ACTIONS)},
        )
        _wait_for_port(self.port, self.process, "moto_server")
        iam = self._client("iam", "setup", "setup")
        iam.create_user(UserName="trainer")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="trainer", PolicyName="everything", PolicyDocument=json.dumps(policy))
        self.key = iam.create_access_key(UserName="trainer")["AccessKey"]
        iam.create_user(UserName="outsider")  # No policy: denied everything.
        self.denied_key = iam.create_access_key(UserName="outsider")["AccessKey"]

    def _client(self, service, key_id, secret):
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=key_id, aws_secret_access_key=secret,
        )  # fmt: skip

    def client(self):
        """A boto3 S3 client of the allowed user, for setting up and inspecting the store."""
        return self._client("s3", self.key["AccessKeyId"], self.key["SecretAccessKey"])

    def env(self, key=None, **overrides):
        """The AWS environment the programs read: this endpoint, a key (the allowed user's by default)."""
        key = key or self.key
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",  # Never ask 169.254.169.254 for credentials.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        env.update(overrides)
        return {name: value for name, value in env.items() if value is not None}

    def denied_env(self):
        return self.env(self.denied_key)

    def create_bucket(self, name):
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def upload(self, local_path, uri):
        bucket, key = uri[len("s3://") :].split("/", 1)
        self.client().upload_file(local_path, bucket, key)

    def keys(self, uri):
        """Sorted object keys under an s3:// prefix."""
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self):
        _stop(self.process)
        self.log.close()
        os.unlink(self.log.name)


class GcsServer:
    """gcp-storage-emulator's GCS JSON API (with the batch endpoint Beam's gcsio renames through), in memory.

    `requests()` reads its request log: what a client sent, e.g. the preconditions of an upload.
    """

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="gcs-emulator-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [os.path.join(_BIN, "gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={self.port}",
             "--in-memory"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait_for_port(self.port, self.process, "gcp-storage-emulator")

    def env(self):
        """The environment the programs read: the emulator, and no Google credentials or metadata server."""
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "NO_GCE_CHECK": "true",
            "GOOGLE_CLOUD_PROJECT": "test-project",
        }

    def client(self):
        """An anonymous google-cloud-storage client of the emulator, whatever the environment says."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test-project", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )

    def create_bucket(self, name):
        self.client().create_bucket(name)
        return f"gs://{name}"

    def upload(self, local_path, uri):
        bucket, key = uri[len("gs://") :].split("/", 1)
        self.client().bucket(bucket).blob(key).upload_from_filename(local_path)

    def names(self, uri):
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        return sorted(blob.name for blob in self.client().list_blobs(bucket, prefix=prefix))

    def requests(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self):
        _stop(self.process)
        self.log.close()
        os.unlink(self.log.name)
