"""The Dataflow job, checked offline: DataflowRunner's dry run translates the job without submitting it.

Nothing here may reach the network: a guard refuses every name lookup and connection that is not
to the loopback address, so a Beam upgrade that starts calling Google from a dry run fails here
instead of sending anything.
"""

import socket

import apache_beam as beam
import pytest
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

from pipelines import commit, preprocess, streaming
from pipelines.options import PreprocessOptions, settings
from tests.helpers import dataflow_worker_environment

IMAGE = "us-central1-docker.pkg.dev/my-project/repo/wavenet-preprocess:1"
DATAFLOW = ["--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
            "--temp_location=gs://my-bucket/tmp", "--dry_run=True", f"--sdk_container_image={IMAGE}"]  # fmt: skip


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    real_lookup, real_connect = socket.getaddrinfo, socket.create_connection

    def lookup(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the dry run tried to look up {host}")
        return real_lookup(host, *args, **kwargs)

    def connect(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the dry run tried to connect to {address[0]}")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket, "create_connection", connect)


def _top_level_labels(job):
    return {t.unique_name for t in job.proto_pipeline.components.transforms.values() if "/" not in t.unique_name}


def test_the_batch_job_translates_for_dataflow(tmp_path):
    options = PreprocessOptions([*DATAFLOW, "--input=gs://my-bucket/raw/**.mp3", f"--output={tmp_path}",
                                 "--sample_rate=22050", "--scrape_url=https://example.com/genre/Ambient/"])  # fmt: skip
    pipeline = beam.Pipeline(runner=DataflowRunner(), options=options)
    preprocess.build_pipeline(pipeline, settings(options), commit.new_run_id(), None)
    job = pipeline.run().job  # Translated (DoFns pickled, stages fused), not submitted.
    assert {"ExpandInputs", "ScrapeTracks", "SelectSources", "ProcessTracks", "WriteTrain", "WriteValidation",
            "WriteFailures", "WriteTrackIndex", "Commit"} <= _top_level_labels(job)  # fmt: skip
    worker_options, images = dataflow_worker_environment(job)
    assert images == [IMAGE]  # Workers start from our image: our code and its dependencies, no installs.
    assert worker_options["output"] == str(tmp_path) and worker_options["sample_rate"] == 22050
    assert worker_options["input"] == ["gs://my-bucket/raw/**.mp3"]
    assert not worker_options.get("streaming")


def test_the_streaming_job_translates_for_dataflow(tmp_path):
    options = PreprocessOptions([*DATAFLOW, "--streaming", "--input_subscription=projects/my-project/subscriptions/s",
                                 f"--output={tmp_path}", "--streaming_window_secs=300"])  # fmt: skip
    pipeline = beam.Pipeline(runner=DataflowRunner(), options=options)
    messages = pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(
        subscription="projects/my-project/subscriptions/s", with_attributes=True
    )
    streaming.build_streaming_pipeline(messages, settings(options))
    job = pipeline.run().job
    assert {"ReadPubSub", "ParseMessages", "FirstSeen", "ProcessTracks", "MergeDescription"} <= _top_level_labels(job)
    worker_options, images = dataflow_worker_environment(job)
    assert worker_options["streaming"] is True and worker_options["streaming_window_secs"] == 300
    assert images == [IMAGE]


def test_the_flex_template_launch_submits_and_returns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(preprocess.FLEX_TEMPLATE_ENV, "/template/launch_preprocess.py")
    # Globs are matched by the job, on workers; the launcher itself touches no bucket.
    assert preprocess.run([*DATAFLOW, "--input=gs://my-bucket/raw/*.mp3", f"--output={tmp_path}"]) is None
    lease = commit.read_lease(str(tmp_path))
    # The launcher returns at once; the lease stays with the job, whose commit step releases it.
    assert lease is not None and not lease.local and commit.current_description(str(tmp_path)) is None
    assert "Tracks:" not in capsys.readouterr().out
