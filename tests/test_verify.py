"""python -m pipelines.verify: what it reports (leftovers, corrupt shards, counts that disagree, records of another
length, a hostile dataset.json) and what --clean and --break_lease remove, and leave."""

import json
import os
import uuid

import pytest

from pipelines import commit, contract, preprocess, verify
from tests.helpers import CLIPS

LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory", "--sample_rate=8000", "--window_samples=4000"]


def test_verify_reports_leftovers_corruption_and_cleans(tmp_path, capsys):
    output = tmp_path / "out"
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL])
    assert verify.main([str(output)]) == 0
    dead = commit.new_run_id()
    temp = f"beam-temp-train-{dead}-{uuid.uuid1().hex}"  # As Beam's file sinks name their staging.
    (output / f"train-{dead}-00000-of-00001.tfrecord").write_bytes(b"partial")
    (output / temp).mkdir()
    (output / temp / "part").write_bytes(b"partial")
    (output / "notes.txt").write_text("the user's own file")
    report = verify.check(str(output))
    assert report.problems == [] and report.leftovers == sorted([f"train-{dead}-00000-of-00001.tfrecord", temp])
    assert verify.main([str(output), "--clean"]) == 0
    assert verify.check(str(output)).leftovers == [] and (output / "notes.txt").exists()

    # Label counts that do not add up to the windows are a problem.
    raw = json.loads((output / contract.DATASET_FILE).read_text())
    sound = json.dumps(raw)
    raw["labels"]["genre"]["unknown"]["windows"] += 1
    (output / contract.DATASET_FILE).write_text(json.dumps(raw))
    assert any("labels: genre values count" in p for p in verify.check(str(output)).problems)
    (output / contract.DATASET_FILE).write_text(sound)

    shard = contract.read_description(str(output)).splits[contract.TRAIN].files[0]
    data = bytearray((output / shard).read_bytes())
    data[40] ^= 0xFF  # One flipped bit inside a record.
    (output / shard).write_bytes(bytes(data))
    assert verify.main([str(output)]) == 1
    assert "corrupt" in capsys.readouterr().out


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw.update(window_samples=0),
        lambda raw: raw.update(window_samples=16000.5),
        lambda raw: raw.update(sample_rate=10**12),
        lambda raw: raw["splits"]["train"].update(files="train-x.tfrecord"),
        lambda raw: raw.update(splits=[]),
    ],
    ids=["window-zero", "window-fraction", "rate-huge", "files-a-string", "splits-a-list"],
)
def test_clean_removes_nothing_when_dataset_json_does_not_validate(edit, tmp_path, capsys):
    output = tmp_path / "out"
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL])
    (output / f"train-{commit.new_run_id()}-00000-of-00001.tfrecord").write_bytes(b"a dead run's shard")
    raw = json.loads((output / contract.DATASET_FILE).read_text())
    edit(raw)
    (output / contract.DATASET_FILE).write_text(json.dumps(raw))
    names = sorted(os.listdir(output))
    assert contract.run_command(verify.main, [str(output), "--clean"]) == 1
    assert "removes nothing while dataset.json cannot be read" in capsys.readouterr().err
    assert sorted(os.listdir(output)) == names
    # A run refuses too, and changes nothing.
    with pytest.raises(contract.ContractError, match="Nothing was changed"):
        preprocess.run([f"--output={output}", f"--input={CLIPS['ogg_48k']}", *LOCAL])
    assert sorted(os.listdir(output)) == names


@pytest.mark.parametrize(
    "content",
    [b"{" * 100000, b"\xff\xfe not text", b"[1, 2]"],
    ids=["nested-too-deeply", "not-utf8", "not-an-object"],
)
def test_a_hostile_dataset_json_is_one_line_from_verify(content, tmp_path, capsys):
    (tmp_path / contract.DATASET_FILE).write_bytes(content)
    assert contract.run_command(verify.main, [str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"problem: {tmp_path / contract.DATASET_FILE}" in out and "Traceback" not in out


@pytest.mark.parametrize("window_samples, message", [(2000, "records hold other than window_samples=2000"),
                                                     (10**12, "window_samples must be in 1..")])  # fmt: skip
def test_verify_checks_each_records_length_against_window_samples(window_samples, message, tmp_path, capsys):
    output = tmp_path / "out"
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL])
    raw = json.loads((output / contract.DATASET_FILE).read_text())
    raw["window_samples"] = raw["hop_samples"] = window_samples
    (output / contract.DATASET_FILE).write_text(json.dumps(raw))
    assert verify.main([str(output)]) == 1
    assert message in capsys.readouterr().out


def test_break_lease_frees_an_output_and_cleans_that_runs_files(tmp_path, capsys):
    holder, _ = commit.acquire_lease(str(tmp_path), commit.new_run_id(), local=True)  # Alive: this process.
    shard = tmp_path / f"train-{holder.run_id}-00000-of-00001.tfrecord"
    shard.write_bytes(b"being written")
    (tmp_path / "mine.txt").write_text("the user's")
    assert verify.check(str(tmp_path)).leftovers == []  # A live run's files are not leftovers.
    assert contract.run_command(verify.main, [str(tmp_path), "--break_lease"]) == 1  # No dataset.json: not sound.
    out = capsys.readouterr().out
    assert f"Broke the lease of run {holder.run_id}" in out and "Removed: 1" in out
    assert not shard.exists() and commit.read_lease(str(tmp_path)) is None and (tmp_path / "mine.txt").exists()
