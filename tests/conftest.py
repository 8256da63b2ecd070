"""Fixtures: real clips, broken files, a local HTTP server and music site, a preprocessed dataset, a trained job."""

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines.options import PACKAGE_DATA_DIR
from tests.helpers import CLIPS, MusicSite, broken_file_contents, wav_bytes

# TensorFlow's preemption handler and google-auth ask whether they run on Google Cloud (an HTTP request to the
# metadata server, metadata.google.internal), boto3 asks 169.254.169.254 for credentials: point the first at a
# closed loopback port and turn the others off, here and in every program the tests start.
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["NO_GCE_CHECK"] = "true"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

# Loopback only: in this process a connection to, or a name lookup of, anything but loopback is refused
# before it is made, and recorded; `_loopback_only` fails the test that tried.
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}
_refused = []
_real_connect, _real_connect_ex, _real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES


def _checked(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refused.append(address[0])
        raise ConnectionRefusedError(f"the tests refuse a connection to {address[0]}: loopback only")
    return address


def _is_address(host):
    try:
        return bool(ipaddress.ip_address(host.split("%")[0]))
    except ValueError:
        return False


def _guarded_getaddrinfo(host, *args, **kwargs):
    """Addresses pass (no lookup is sent; `_checked` stops the connection); names but loopback's are refused."""
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_address(name) and not _is_loopback(name):
        _refused.append(host)
        raise socket.gaierror(socket.EAI_NONAME, f"the tests resolve no name but loopback's: {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = lambda self, address: _real_connect(self, _checked(self, address))
socket.socket.connect_ex = lambda self, address: _real_connect_ex(self, _checked(self, address))
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _loopback_only():
    before = len(_refused)
    yield
    assert _refused[before:] == [], f"the test tried to reach {_refused[before:]}: tests reach loopback only"


@pytest.fixture()
def refused_addresses():
    """What the loopback guard refused during the test; a test that reads it takes the refusals as its own."""
    before = len(_refused)
    yield _refused
    del _refused[before:]


@pytest.fixture(scope="session")
def broken_dir(tmp_path_factory):
    """A directory holding every broken file of `broken_file_contents`."""
    directory = tmp_path_factory.mktemp("broken")
    for name, (content, _, _) in broken_file_contents().items():
        (directory / name).write_bytes(content)
    return directory


@pytest.fixture(scope="session")
def silent_wav(tmp_path_factory):
    """Three seconds of digital silence."""
    path = tmp_path_factory.mktemp("silent") / "silence.wav"
    path.write_bytes(wav_bytes(np.zeros(48000, np.int16)))
    return path


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory):
    """Every real clip copied into one directory (names with spaces kept)."""
    directory = tmp_path_factory.mktemp("clips")
    for path in CLIPS.values():
        shutil.copy(path, directory)
    return directory


@pytest.fixture(scope="session")
def http_server(clips_dir):
    """A real HTTP server on 127.0.0.1 serving `clips_dir`; yields its base URL."""
    import functools
    import threading

    handler = functools.partial(_QuietHandler, directory=str(clips_dir))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(__import__("http.server").server.ThreadingHTTPServer):
    """A loopback HTTP server that says nothing when a client hangs up early (a download cut at its limit)."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture()
def music_site(clips_dir):
    import http.server
    import threading
    import time
    import urllib.parse

    site = MusicSite(clips_dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, body=b"", content_type="text/html", headers=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            site.requests.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            if path == "/robots.txt":
                return self.send(200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
            if path == "/genre/Ambient/":
                page = int(urllib.parse.parse_qs(url.query).get("page", ["1"])[0])
                return self.send(200, site.listing(page).encode())
            if path == "/genre/Electronic/":
                return self.send(200, site.electronic_listing().encode())
            if path == "/files/old-nebula.mp3":
                return self.send(302, headers=[("Location", "/files/Nebula%20(22k%20mono).mp3")])
            if path == "/files/error-page.mp3":
                return self.send(200, b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>")
            if path == "/slow/Deprecation.flac" and site.throttled_at is None:
                self.send(429, b"slow down", "text/plain", [("Retry-After", str(site.RETRY_AFTER_SECS))])
                site.throttled_at = time.monotonic()
                return None
            name = os.path.basename(path)
            local = os.path.join(site.clips_dir, name)
            if path.startswith(("/files/", "/slow/", "/private/")) and os.path.isfile(local):
                with open(local, "rb") as f:
                    return self.send(200, f.read(), "audio/mpeg")
            return self.send(404, b"not found", "text/plain")

    server = QuietServer(("127.0.0.1", 0), Handler)
    site.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture()
def job_service(tmp_path):
    """Beam's own local job service, on a free port of 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={port}",
         f"--staging_dir={tmp_path / 'staging'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the job service did not start")
    yield f"localhost:{port}"
    process.terminate()
    process.wait(timeout=30)


def pytest_collection_finish(session):
    """Two logical CPU devices, so MirroredStrategy runs on a machine without GPUs.

    Only when a collected test module imported TensorFlow (the audio and
    pipeline tests never load it), and before TensorFlow initialises its
    runtime, which happens at the first op, after collection.
    """
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def clips_dataset(tmp_path_factory):
    """The bundled clips at 8 kHz in 400-sample windows: Awakening in validation, the other three in train.

    Built in two runs into one output (the second adds to the first), because a track's split
    hashes its path, which differs between checkouts; this split is the same everywhere.
    """
    from pipelines import preprocess

    output = tmp_path_factory.mktemp("trainer-data")
    common = [f"--output={output}", "--sample_rate=8000", "--window_samples=400", "--direct_num_workers=1",
              "--direct_running_mode=in_memory"]  # fmt: skip
    held_out = os.path.join(PACKAGE_DATA_DIR, "Awakening.mp3")
    train = [path for name, path in CLIPS.items() if path.startswith(PACKAGE_DATA_DIR) and path != held_out]
    preprocess.run(common + [f"--input={path}" for path in train] + ["--validation_fraction=0"])
    preprocess.run(common + [f"--input={held_out}", "--validation_fraction=1"])
    return output


@pytest.fixture(scope="session")
def trained_job(clips_dataset, tmp_path_factory):
    """A job_dir holding a tiny WaveNet trained for 40 steps on `clips_dataset`, exported."""
    from trainer import task

    job_dir = tmp_path_factory.mktemp("job")
    task.run(
        [
            f"--data={clips_dataset}", f"--job_dir={job_dir}", "--preset=tiny", "--batch_size=8", "--steps=40",
            "--summary_audio_secs=0", "--eval_batches=1",
        ]
    )  # fmt: skip
    return job_dir


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 REST server (moto) on 127.0.0.1 for the whole session, with IAM checks (`tests.stores`)."""
    from tests.stores import S3Server

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """A real GCS JSON API server (gcp-storage-emulator) on 127.0.0.1 for the whole session (`tests.stores`)."""
    from tests.stores import GcsServer

    server = GcsServer()
    yield server
    server.stop()


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    """This process (and the pipeline's local workers it starts) reach `s3_server` as the allowed user."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture()
def gcs_env(gcs_server, monkeypatch):
    """This process (and the pipeline's local workers it starts) reach `gcs_server`, anonymously."""
    for name, value in gcs_server.env().items():
        monkeypatch.setenv(name, value)
    return gcs_server


@pytest.fixture(scope="session")
def two_worker_job(clips_dataset, tmp_path_factory):
    """3 steps of MultiWorkerMirroredStrategy, two local worker processes from TF_CONFIG (tests/helpers.py's
    `train_args`): the reference a Slurm job step of two tasks is held to (tests/test_slurm.py).

    Returns:
      SimpleNamespace(job_dir: pathlib.Path, output: both workers' stdout and stderr, worker 0's first).
    """
    import types

    from tests.helpers import run_tf_config_workers, train_args

    job_dir = tmp_path_factory.mktemp("two-workers")
    statuses, output = run_tf_config_workers(train_args(clips_dataset, job_dir, "--steps=3", "--strategy=auto"))
    assert statuses == [0, 0], output
    return types.SimpleNamespace(job_dir=job_dir, output=output)
