"""The pipeline on Beam's PortableRunner: proof it survives the serialization Spark, Flink and Dataflow v2 need."""

import os
import socket
import subprocess
import sys
import time

import pytest

from pipelines import preprocess
from pipelines.options import PACKAGE_DATA_DIR


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


@pytest.mark.slow
def test_pipeline_runs_on_the_portable_runner_with_loopback_workers(job_service, tmp_path, broken_dir):
    output = tmp_path / "dataset"
    description = preprocess.run(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={job_service}",
            "--environment_type=LOOPBACK",
            f"--input={PACKAGE_DATA_DIR}",
            f"--input={broken_dir}/truncated.mp3",
            f"--output={output}",
            "--max_failure_fraction=0.9",
        ]
    )
    accounting = description["accounting"]
    assert (accounting["tracks_input"], accounting["tracks_ok"], accounting["tracks_failed"]) == (5, 4, 1)
    assert sum(split["windows"] for split in description["splits"].values()) == 30
    assert os.path.exists(output / "failures.jsonl")
