"""Object stores for real: every program against a real S3 server (moto) and a real GCS server (gcp-storage-emulator).

Both servers listen on 127.0.0.1 (`tests/stores.py`); the programs find them as users' programs do, through
the AWS environment (AWS_ENDPOINT_URL, keys) and STORAGE_EMULATOR_HOST. TensorFlow's own Cloud Storage client
has no endpoint override, so the trainer's gs:// paths are tested up to that boundary (its checks and errors).
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave

import pytest

from pipelines import commit, contract, preprocess, verify
from pipelines.contract import storage
from sampler import generate
from tests.helpers import CLIPS, broken_file_contents
from trainer import evaluate, task
from trainer import storage as trainer_storage

SMALL = ["--sample_rate=8000", "--window_samples=400", "--validation_fraction=0.5"]
TRAIN = ["--preset=tiny", "--batch_size=4", "--summary_audio_secs=0", "--eval_batches=1", "--eval_every=100"]


def _upload_inputs(server, bucket):
    """Two real clips and a file that is not audio, under BUCKET/raw/."""
    for name in ("mp3_44k", "ogg_48k"):
        server.upload(CLIPS[name], f"{bucket}/raw/{os.path.basename(CLIPS[name])}")
    content, _, _ = broken_file_contents()["error page.mp3"]
    with tempfile.NamedTemporaryFile(suffix=".mp3") as f:
        f.write(content)
        f.flush()
        server.upload(f.name, f"{bucket}/raw/error page.mp3")


def _one_line_error(capsys, main, *args):
    status = contract.run_command(main, *args)
    err = capsys.readouterr().err.strip()
    return status, err


def _preprocess_verify_and_rerun(bucket, capsys):
    """The pipeline into a store, checked by verify, then run again from an @list on the store (skipping what is
    committed), a dead run's leftover cleaned by verify --clean: the store's output and the first run's description."""
    output = f"{bucket}/windows"
    first = preprocess.run([f"--input={bucket}/raw/*", f"--output={output}", *SMALL])
    assert (first.accounting.tracks_ok, first.accounting.tracks_failed) == (2, 1)
    capsys.readouterr()
    assert verify.main([output]) == 0
    assert "sound (" in capsys.readouterr().out
    listed = [f"{bucket}/raw/{os.path.basename(CLIPS[name])}" for name in ("mp3_44k", "ogg_48k")]
    contract.write_text(f"{bucket}/lists/tracks.txt", "\n".join(listed) + "\n")
    # Beam's worker processes ran the first run (they reach the store as this process does); this one in-process.
    again = preprocess.run([f"--input=@{bucket}/lists/tracks.txt", f"--output={output}", *SMALL,
                            "--direct_running_mode=in_memory"])  # fmt: skip
    assert again.runs[-1].accounting.tracks_skipped_existing == 2 and again.runs[-1].accounting.tracks_input == 2
    assert again.windows == first.windows and len(again.runs) == 2
    dead = f"{output}/{contract.tracks_file('20261206T000000Z-deadbeef')}"  # What a killed run leaves.
    contract.write_text(dead, "")
    assert verify.main([output, "--clean"]) == 0
    assert "Removed: 1" in capsys.readouterr().out and not contract.exists(dead)
    return output, first


def test_s3_end_to_end_preprocess_verify_rerun_train_kill_resume_evaluate_sample(s3_env, tmp_path, capsys):
    bucket = s3_env.create_bucket("music-e2e")
    _upload_inputs(s3_env, bucket)
    output, _ = _preprocess_verify_and_rerun(bucket, capsys)
    assert f"windows/{contract.DATASET_FILE}" in s3_env.keys(f"{bucket}/windows/")
    assert "windows/lease.json" not in s3_env.keys(f"{bucket}/windows/")  # Released at the commit.

    # Training from the store into the store, killed after a checkpoint reached the store, resumed from it.
    job = f"{bucket}/runs/a"
    args = [f"--data={output}", f"--job_dir={job}", *TRAIN, "--checkpoint_every=2"]
    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer.task", *args, "--steps=1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while "runs/a/checkpoints/checkpoint" not in s3_env.keys(f"{job}/checkpoints/"):
            assert trainer.poll() is None, trainer.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint reached the store"
            time.sleep(0.2)
    finally:
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait()
        trainer.stderr.close()
    # The store's checkpoint state names the latest checkpoint whose files all arrived (a later one may be part-way).
    state = contract.read_bytes(f"{job}/checkpoints/checkpoint").decode()
    saved = int(re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state, re.M).group(1))
    resumed = task.run([*args, f"--steps={saved + 2}"])
    assert [step for step, _ in resumed.losses] == [saved + 1, saved + 2]  # From the store's checkpoint.
    assert resumed.export_dir == f"{job}/export"
    assert {"runs/a/export/model.keras", "runs/a/export/config.json"} <= set(s3_env.keys(f"{job}/export/"))
    assert any("/logs/train/" in k for k in s3_env.keys(f"{job}/"))  # TensorBoard mirrored back.

    capsys.readouterr()
    assert evaluate.main(["--model", job, "--data", output, "--json", str(tmp_path / "scores.json")]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())["model_step"] == saved + 2

    primer = f"{bucket}/raw/{os.path.basename(CLIPS['ogg_48k'])}"
    clip = tmp_path / "clip.wav"
    generate.run(["--model", job, "--primer", primer, "--seconds=0.1", f"--output={clip}"])
    with wave.open(str(clip)) as f:
        assert f.getframerate() == 8000 and f.getnframes() == 800


def test_the_event_files_pushed_with_a_checkpoint_hold_every_step_before_it(s3_env, clips_dataset, tmp_path):
    """TensorBoard's writers are flushed before the mirror's push: the store has what was written, not a header."""
    import tensorflow as tf

    job = f"{s3_env.create_bucket('music-events')}/runs/a"
    args = [f"--data={clips_dataset}", f"--job_dir={job}", *TRAIN, "--checkpoint_every=2", "--steps_per_loop=1"]
    # Stopped after the checkpoint at step 2 (as if preempted): what reached the store is what its push sent.
    assert task.run([*args, "--steps=100"], stop_after_steps=2).step == 2
    pushed = tmp_path / "pushed"
    contract.copy_all((key, str(pushed / key.rsplit("/", 1)[1])) for key in contract.match(f"{job}/logs/train/*"))
    steps = {
        event.step
        for path in pushed.iterdir()
        for event in tf.compat.v1.train.summary_iterator(str(path))
        if any(value.tag == "loss_nats" for value in event.summary.value)
    }
    assert steps == {1, 2}


def test_staging_copies_dataset_json_and_the_listed_shards_only(s3_env, clips_dataset, tmp_path):
    bucket = s3_env.create_bucket("music-staging")
    for path in sorted(clips_dataset.iterdir()):
        s3_env.upload(str(path), f"{bucket}/windows/{path.name}")
    s3_env.client().put_object(Bucket="music-staging", Key="windows/stray.tfrecord", Body=b"not listed")
    storage.configure()
    local = trainer_storage.stage_dataset(f"{bucket}/windows", str(tmp_path / "staged"))
    description = contract.read_description(local)
    listed = {f for split in description.splits.values() for f in split.files}
    assert set(os.listdir(local)) == listed | {contract.DATASET_FILE}
    for name in listed:
        assert (tmp_path / "staged" / name).read_bytes() == (clips_dataset / name).read_bytes()


def test_a_mirror_pulls_the_store_and_pushes_only_what_changed_pointers_last(s3_env, tmp_path, monkeypatch):
    bucket = s3_env.create_bucket("music-mirror")
    s3_env.client().put_object(Bucket="music-mirror", Key="job/checkpoints/ckpt-1.index", Body=b"one")
    storage.configure()
    local = tmp_path / "local"
    mirror = trainer_storage.Mirror(f"{bucket}/job", str(local))
    assert mirror.pull() == 1 and (local / "checkpoints" / "ckpt-1.index").read_bytes() == b"one"
    assert mirror.push() == 0
    (local / "checkpoints" / "ckpt-2.index").write_bytes(b"two")
    (local / "checkpoints" / "ckpt-2.data-00000-of-00001").write_bytes(b"2")
    (local / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    (local / "export").mkdir()
    (local / "export" / "model.keras").write_bytes(b"model")
    (local / "export" / "config.json").write_text("{}")
    events = []
    copy = contract.fs.copy

    def observed_copy(source, destination):  # The real copy, its start and end recorded.
        events.append(("start", os.path.basename(destination)))
        copy(source, destination)
        events.append(("end", os.path.basename(destination)))

    monkeypatch.setattr(contract.fs, "copy", observed_copy)  # What `contract.copy_all` calls.
    assert mirror.push() == 5
    body = s3_env.client().get_object(Bucket="music-mirror", Key="job/checkpoints/ckpt-2.index")["Body"].read()
    assert body == b"two" and "job/export/config.json" in s3_env.keys(f"{bucket}/job/")
    # The pointers (TensorFlow's checkpoint state, the export's config.json) start only after every file they name
    # arrived: a push killed part-way leaves them at what they named before.
    pointers = trainer_storage.POINTER_FILES
    first_pointer = min(i for i, (what, name) in enumerate(events) if what == "start" and name in pointers)
    last_other = max(i for i, (what, name) in enumerate(events) if what == "end" and name not in pointers)
    assert last_other < first_pointer and len(events) == 10


def test_gcs_end_to_end_preprocess_verify_rerun_and_sample_from_the_store(
    gcs_env, trained_job, tmp_path, capsys, caplog
):
    bucket = gcs_env.create_bucket("music-e2e")
    _upload_inputs(gcs_env, bucket)
    with caplog.at_level(logging.WARNING):
        _preprocess_verify_and_rerun(bucket, capsys)
    # With an emulator, no process (this one or a worker) looked for Google credentials before going anonymous.
    assert "Unable to find default credentials" not in caplog.text
    job = f"{bucket}/runs/a"
    for name in (contract.MODEL_FILE, contract.MODEL_CONFIG_FILE):
        gcs_env.upload(str(trained_job / contract.EXPORT_DIR / name), f"{job}/{contract.EXPORT_DIR}/{name}")
    clip = tmp_path / "clip.wav"
    primer = f"{bucket}/raw/{os.path.basename(CLIPS['mp3_44k'])}"
    generate.run(["--model", job, "--primer", primer, "--seconds=0.1", f"--output={clip}"])
    with wave.open(str(clip)) as f:
        assert f.getnframes() == 800


def test_the_trainer_checks_gs_paths_against_the_store_before_tensorflow_reads_them(gcs_env, capsys):
    status, err = _one_line_error(capsys, task._main, ["--data=gs://no-such-bucket/windows", "--job_dir=/tmp/x"])
    assert status == 1 and err == (
        "error: gs://no-such-bucket/windows: bucket 'no-such-bucket' does not exist (or the object is missing); "
        "create it, or check the path"
    )


# ---------------------------------------------------------------------------------------------------------------
# Faults: one line naming the path and what to do, exit status 1, before any work.

S3_FAULTS = {
    "missing_bucket": ({}, "s3://no-such-bucket/windows", r"bucket 'no-such-bucket' does not exist at http://"),
    "wrong_secret": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, None, r"refused the credentials \(SignatureDoesNotMatch\)"),
    "unknown_key": ({"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN0000000000"}, None, r"refused the credentials"),
    "access_denied": ("denied", None, r"access denied by the S3 store at http://.*lack permission on bucket"),
    "unreachable": ("unreachable", None, r"cannot reach the S3 endpoint http://127\.0\.0\.1:\d+ .*AWS_ENDPOINT_URL"),
    "no_credentials": ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, None, r"no AWS credentials found"),
}


def _fault_env(s3_server, fault, monkeypatch):
    if fault == "denied":
        env = s3_server.denied_env()
    elif fault == "unreachable":
        from tests.stores import free_port

        env = s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    else:
        env = s3_server.env(**fault)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def fault_bucket(s3_server):
    return s3_server.create_bucket("music-faults")


@pytest.mark.parametrize("fault", list(S3_FAULTS), ids=list(S3_FAULTS))
def test_verify_reports_each_s3_fault_in_one_line(s3_server, fault_bucket, fault, monkeypatch, capsys):
    env, path, pattern = S3_FAULTS[fault]
    _fault_env(s3_server, env, monkeypatch)
    path = path or f"{fault_bucket}/windows"
    status, err = _one_line_error(capsys, verify.main, [path])
    assert status == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: ") and re.search(pattern, err), err


@pytest.mark.parametrize(
    ("program", "fault"),
    [("preprocess", "missing_bucket"), ("trainer", "wrong_secret"), ("evaluate", "access_denied"),
     ("sampler", "unreachable")],
)  # fmt: skip
def test_every_program_reports_a_store_fault_in_one_line(
    s3_server, fault_bucket, program, fault, tmp_path, monkeypatch, capsys
):
    env, path, pattern = S3_FAULTS[fault]
    _fault_env(s3_server, env, monkeypatch)
    path = path or f"{fault_bucket}/windows"
    main, argv = {
        "preprocess": (preprocess.run, [f"--output={path}", "--direct_running_mode=in_memory"]),
        "trainer": (task._main, [f"--data={path}", f"--job_dir={tmp_path / 'job'}"]),
        "evaluate": (evaluate.main, ["--model", path, "--data", path]),
        "sampler": (generate.run, ["--model", path, "--seconds=1", f"--output={tmp_path / 'clip.wav'}"]),
    }[program]
    status, err = _one_line_error(capsys, main, argv)
    assert status == 1 and len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not (tmp_path / "job").exists() and not (tmp_path / "clip.wav").exists()  # Checked before any work.


def test_gcs_faults_are_one_line_and_missing_credentials_are_not_one(gcs_server, monkeypatch, capsys):
    from tests.stores import free_port

    for name, value in gcs_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = gcs_server.create_bucket("music-gcs-faults")
    assert verify.main([f"{bucket}/windows"]) == 1  # Reached anonymously: no dataset there, not a credentials fault.
    assert "dataset.json not found" in capsys.readouterr().out
    status, err = _one_line_error(capsys, verify.main, ["gs://no-such-bucket/windows"])
    assert status == 1 and "bucket 'no-such-bucket' does not exist" in err
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    status, err = _one_line_error(capsys, verify.main, [f"{bucket}/windows"])
    assert status == 1 and len(err.splitlines()) == 1 and "cannot reach Cloud Storage at http://127.0.0.1" in err, err


def test_a_google_not_found_names_a_bucket_only_for_a_cloud_storage_path():
    from google.api_core import exceptions

    missing = exceptions.NotFound("Resource not found (resource=music-tracks).")
    subscription = "projects/p/subscriptions/music-tracks"
    assert storage.describe_fault(missing, subscription) == f"{subscription}: not found (404 {missing.message})"
    assert "bucket 'b' does not exist" in storage.describe_fault(missing, "gs://b/windows")


# ---------------------------------------------------------------------------------------------------------------
# The lease on a store: the store's own create-if-absent.


def test_two_runs_racing_for_an_s3_output_lease_get_one_winner(s3_env):
    bucket = s3_env.create_bucket("music-lease")
    output = f"{bucket}/windows"
    storage.configure()
    start, outcomes = threading.Barrier(2), []

    def take(run_id):
        start.wait()
        try:
            commit.acquire_lease(output, run_id, local=True)
            outcomes.append(("took", run_id))
        except commit.LeaseError as e:
            outcomes.append(("refused", str(e)))

    threads = [threading.Thread(target=take, args=(f"20261206T000000Z-0000000{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(kind for kind, _ in outcomes) == ["refused", "took"], outcomes
    winner = next(run_id for kind, run_id in outcomes if kind == "took")
    assert commit.read_lease(output).run_id == winner
    refusal = next(text for kind, text in outcomes if kind == "refused")
    assert f"is being written by run {winner}" in refusal
    commit.check_lease(output, winner)  # The winner commits; the loser never held it.
    commit.release_lease(output, winner)
    assert commit.read_lease(output) is None


def test_the_lease_on_gcs_is_an_upload_with_if_generation_match_0(gcs_env):
    # The emulator ignores ifGenerationMatch, so what is tested is the request up to the server.
    bucket = gcs_env.create_bucket("music-gcs-lease")
    storage.configure()
    lease, _ = commit.acquire_lease(f"{bucket}/windows", "20261206T000000Z-00000001", local=True)
    assert commit.read_lease(f"{bucket}/windows") == lease
    uploads = [line for line in gcs_env.requests().splitlines() if "/upload/storage/v1/b/music-gcs-lease/o" in line]
    assert any("ifGenerationMatch=0" in line for line in uploads), uploads


def test_beam_s3_filesystem_writes_an_empty_file(s3_env):
    bucket = s3_env.create_bucket("music-empty")
    storage.configure()
    contract.write_bytes(f"{bucket}/empty.jsonl", b"")
    assert contract.read_bytes(f"{bucket}/empty.jsonl") == b""
