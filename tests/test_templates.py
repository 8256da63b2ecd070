"""The Dataflow Flex Template files agree with the pipeline's options."""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from pipelines import contract, preprocess
from tests.helpers import CLIPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "templates")


def _metadata():
    with open(os.path.join(TEMPLATES, "metadata.json")) as f:
        return json.load(f)


def test_every_parameter_is_described():
    for param in _metadata()["parameters"]:
        assert param["label"] and len(param["helpText"]) > 20, param["name"]
        assert isinstance(param["isOptional"], bool)
        for regex in param.get("regexes", []):
            re.compile(regex)
    output = next(p for p in _metadata()["parameters"] if p["name"] == "output")
    assert not output["isOptional"] and re.match(output["regexes"][0], "gs://bucket/windows")


def test_committed_metadata_is_what_the_options_generate():
    generated = subprocess.run(
        [sys.executable, os.path.join(TEMPLATES, "make_metadata.py")], capture_output=True, text=True, check=True
    ).stdout
    # make_metadata.py writes one parameter per option of PreprocessOptions and nothing else: so does the file.
    assert json.loads(generated) == _metadata(), "run: python templates/make_metadata.py > templates/metadata.json"
    names = [p["name"] for p in _metadata()["parameters"]]
    assert len(names) == len(set(names))


def test_dockerfile_launches_the_preprocess_entry_point():
    with open(os.path.join(TEMPLATES, "Dockerfile")) as f:
        dockerfile = f.read()
    entry = re.search(r"ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)", dockerfile).group(1)
    assert os.path.exists(os.path.join(TEMPLATES, entry))
    # The SDK image is the Beam release setup.py pins, so launcher, workers and pip agree.
    with open(os.path.join(ROOT, "setup.py")) as f:
        pinned = re.search(r'"apache-beam\[[^\]]*\]==(\d+\.\d+)\.\*"', f.read()).group(1)
    image = re.search(r"^FROM apache/beam_python(\d+\.\d+)_sdk:(\d+\.\d+)\.\d+$", dockerfile, re.M)
    assert image is not None and image.group(2) == pinned


@pytest.fixture()
def held_track():
    """A loopback HTTP server whose one track is sent only once `release` is set; yields (url, release)."""
    release = threading.Event()
    with open(CLIPS["mp3_22k_mono"], "rb") as f:
        clip = f.read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/robots.txt":
                self.send_error(404)
                return
            release.wait(timeout=120)
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(clip)))
            self.end_headers()
            self.wfile.write(clip)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/held.mp3", release
    release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_template_launch_returns_after_submitting(job_service, held_track, tmp_path, monkeypatch, capsys):
    url, release = held_track
    monkeypatch.setenv(preprocess.FLEX_TEMPLATE_ENV, "/template/launch_preprocess.py")
    # An asynchronous runner, as Dataflow is: run() returns once the job service has the job.
    args = ["--runner=PortableRunner", f"--job_endpoint={job_service}", "--environment_type=LOOPBACK",
            f"--input={url}", f"--output={tmp_path}"]  # fmt: skip
    assert preprocess.run(args) is None
    # The job cannot have finished: its only track is still held by the server.
    assert not (tmp_path / contract.DATASET_FILE).exists()
    assert "Tracks:" not in capsys.readouterr().out  # No waiting, no summary...
    release.set()
    deadline = time.monotonic() + 120
    while not (tmp_path / contract.DATASET_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    description = contract.read_description(str(tmp_path))  # ...and the job still describes its output.
    assert description.accounting.tracks_ok == 1 and description.windows > 0
