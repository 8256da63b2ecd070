"""The pipeline on Beam's PortableRunner: proof it survives the serialization Spark, Flink and Dataflow v2 need."""

import pytest

from pipelines import preprocess
from pipelines.options import PACKAGE_DATA_DIR
from tests.helpers import last_failures


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
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (5, 4, 1)
    assert sum(split.windows for split in description.splits.values()) == 30
    assert len(last_failures(output)) == 1
