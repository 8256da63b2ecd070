"""Nothing lost: crashes at each boundary, concurrent runs, one identity per track.

The verifier, which these tests use to check outputs, has its own tests in tests/test_verify.py.
"""

import dataclasses
import errno
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from pipelines import commit, contract, preprocess, sources, verify
from tests.helpers import CLIPS, committed_tracks

LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory", "--sample_rate=8000", "--window_samples=4000"]
INPUTS = [CLIPS["mp3_22k_mono"], CLIPS["ogg_48k"], CLIPS["flac_44k"]]


def _command(output, inputs):
    return [sys.executable, "-m", "pipelines.preprocess", f"--output={output}", "--validation_fraction=0.5",
            *LOCAL, *(f"--input={path}" for path in inputs)]  # fmt: skip


def _what_is_committed(output):
    """(track id -> (split, windows), per-split (windows, tracks)) of what dataset.json lists."""
    description = contract.read_description(str(output))
    tracks = {t["track_id"]: (t["split"], t["windows"]) for t in committed_tracks(output)}
    return tracks, {name: (s.windows, s.tracks) for name, s in description.splits.items()}


def _this_run(output, pattern):
    names = os.listdir(output) if os.path.isdir(output) else []
    return any(pattern(name) for name in names)


def _beam_temp_has_a_file(output):
    return any(
        files for name in os.listdir(output) if name.startswith("beam-temp-")
        for _, _, files in os.walk(os.path.join(output, name))
    )  # fmt: skip


BOUNDARIES = {
    "shard-being-written": _beam_temp_has_a_file,
    "first-shard-final": lambda out: _this_run(out, lambda n: n.endswith(".tfrecord")),
    "track-index-written": lambda out: _this_run(out, lambda n: n.startswith("tracks-")),
    "commit-written": lambda out: _this_run(out, lambda n: n == contract.DATASET_FILE),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job, uninterrupted."""
    output = tmp_path_factory.mktemp("reference")
    subprocess.run(_command(output, INPUTS), check=True, capture_output=True, timeout=300)
    return _what_is_committed(output)


@pytest.mark.slow
@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_a_run_killed_at_any_boundary_then_run_again_equals_an_uninterrupted_run(boundary, reference, tmp_path):
    output = tmp_path / "out"
    os.makedirs(output)
    job = subprocess.Popen(
        _command(output, INPUTS), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while job.poll() is None and not BOUNDARIES[boundary](str(output)) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.killpg(job.pid, signal.SIGKILL)  # The job's whole process group: the driver and any worker it started.
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job ended before the boundary was seen"

    if boundary != "commit-written":  # Until its commit, a killed run changed nothing a reader sees.
        assert commit.current_description(str(output)) is None
    again = subprocess.run(_command(output, INPUTS), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _what_is_committed(output) == reference
    report = verify.check(str(output))
    assert report.problems == [] and report.leftovers == []  # The second run cleaned up after the first.
    assert not os.path.exists(output / commit.LEASE_FILE)
    assert not [name for name in os.listdir(output) if name.startswith("beam-temp-")]


@pytest.mark.slow
def test_two_runs_started_together_on_one_output_lose_nothing(tmp_path):
    output = tmp_path / "out"
    inputs = {"first": [CLIPS["mp3_22k_mono"]], "second": [CLIPS["ogg_48k"]]}
    jobs = {name: subprocess.Popen(_command(output, paths), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for name, paths in inputs.items()}  # fmt: skip
    results = {name: (job.wait(timeout=300), job.communicate()[1]) for name, job in jobs.items()}
    refused = [name for name, (code, _) in results.items() if code != 0]
    assert len(refused) <= 1, results  # At most one is turned away...
    for name in refused:
        assert "is being written by run" in results[name][1] and "started" in results[name][1]
        subprocess.run(_command(output, inputs[name]), check=True, capture_output=True, timeout=300)
    # ...and once it runs again, both runs' tracks are committed, each once.
    expected = {sources.track_id_for(path) for paths in inputs.values() for path in paths}
    assert {t["track_id"] for t in committed_tracks(output)} == expected
    assert verify.check(str(output)).problems == []


def test_a_live_lease_refuses_a_second_run_and_names_the_holder(tmp_path):
    holder, _ = commit.acquire_lease(str(tmp_path), commit.new_run_id(), local=True)
    with pytest.raises(commit.LeaseError, match=f"being written by run {holder.run_id} \\(host .*pid {os.getpid()}"):
        preprocess.run([f"--output={tmp_path}", f"--input={CLIPS['mp3_22k_mono']}", *LOCAL])
    assert commit.read_lease(str(tmp_path)) == holder  # The refused run took nothing.


def test_a_dead_runs_lease_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = commit.Lease(run_id=commit.new_run_id(), host=os.uname().nodename, pid=dead.pid, started=time.time(),
                         local=True)  # fmt: skip
    (tmp_path / commit.LEASE_FILE).write_text(__import__("json").dumps(stale.__dict__))
    description = preprocess.run([f"--output={tmp_path}", f"--input={CLIPS['mp3_22k_mono']}", *LOCAL])
    assert description.accounting.tracks_ok == 1 and commit.read_lease(str(tmp_path)) is None


def test_run_ids_are_unique_within_a_second():
    now = time.time()
    ids = {commit.new_run_id(now) for _ in range(1000)}
    assert len(ids) == 1000 and all(commit.RUN_ID.fullmatch(i) for i in ids)


def test_one_file_by_any_spelling_is_one_track(tmp_path, monkeypatch):
    shutil.copy(CLIPS["mp3_22k_mono"], tmp_path / "clip.mp3")
    os.symlink(tmp_path / "clip.mp3", tmp_path / "link.mp3")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    spellings = ["../clip.mp3", str(tmp_path / "clip.mp3"), str(tmp_path / "link.mp3"), f"{tmp_path}/./sub/../clip.mp3"]
    assert len({sources.track_id_for(s) for s in spellings}) == 1
    description = preprocess.run([f"--output={tmp_path / 'out'}", "--validation_fraction=0.5", *LOCAL,
                                  *(f"--input={s}" for s in spellings)])  # fmt: skip
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (1, 1, 0)
    assert sum(split.tracks for split in description.splits.values()) == 1  # Not in both splits.


def test_a_literal_name_with_glob_characters_is_taken_literally(tmp_path):
    literal = tmp_path / "[live] take*2?.mp3"
    shutil.copy(CLIPS["mp3_22k_mono"], literal)
    assert sources.match_pattern(str(literal)) == [str(literal)]
    description = preprocess.run([f"--output={tmp_path / 'out'}", f"--input={literal}", f"--input={tmp_path}",
                                  *LOCAL])  # fmt: skip
    accounting = description.accounting
    assert (accounting.tracks_input, accounting.tracks_ok, accounting.tracks_failed) == (1, 1, 0)


@pytest.mark.parametrize(
    "spelling",
    ["HTTP://Example.COM:80/a%2db.mp3", "http://example.com/a-b.mp3#intro", "http://example.com:80/a%2Db.mp3"],
    ids=["case-and-port", "fragment", "percent-encoded-unreserved"],
)
def test_urls_however_written_are_one_track(spelling):
    assert sources.canonical_uri(spelling) == "http://example.com/a-b.mp3"
    assert sources.track_id_for(spelling) == sources.track_id_for("http://example.com/a-b.mp3")
    assert sources.track_id_for("http://example.com/a%2Fb.mp3") != sources.track_id_for("http://example.com/a/b.mp3")


def test_bundled_clips_have_ids_independent_of_the_install_location(tmp_path):
    copy = tmp_path / "elsewhere" / "Awakening.mp3"
    copy.parent.mkdir()
    shutil.copy(CLIPS["mp3_44k"], copy)
    assert sources.identity_for(CLIPS["mp3_44k"]) == "package:pipelines/data/Awakening.mp3"
    assert sources.track_id_for(CLIPS["mp3_44k"]) != sources.track_id_for(str(copy))


# ---------------------------------------------------------------------------------------------------------------
# The commit itself: a full disk, a kill during its write, hand-edited descriptions, the user's own files.


@pytest.fixture()
def small_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs), unmounted afterwards; skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _fill(disk, leave_bytes=0):
    """Fills a filesystem with one file until at most `leave_bytes` are free; returns the file."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while shutil.disk_usage(disk).free > leave_bytes:
                f.write(b"\0" * min(1 << 16, max(4096, shutil.disk_usage(disk).free - leave_bytes)))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_during_the_commit_leaves_the_previous_commit_whole(small_disk):
    output = small_disk / "out"
    first = preprocess.run(
        [f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL]
    )
    before = (output / contract.DATASET_FILE).read_bytes()
    _fill(small_disk)
    grown = dataclasses.replace(first, runs=(*first.runs, dataclasses.replace(first.runs[0], run_id="x" * 400)))
    with pytest.raises(OSError) as raised:
        contract.write_description(str(output), grown)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(output / contract.DATASET_FILE)
    assert (output / contract.DATASET_FILE).read_bytes() == before
    assert not [name for name in os.listdir(output) if name.endswith(".tmp")]  # The temporary is gone too.


@pytest.mark.slow
# Beam's file sink leaves its temporary file open when a write fails (not our code); collected at the end.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")
def test_a_run_on_a_full_disk_fails_in_one_line_and_the_next_run_equals_an_uninterrupted_one(small_disk, tmp_path):
    inputs = [CLIPS["mp3_22k_mono"], CLIPS["ogg_48k"]]
    reference = tmp_path / "reference"
    preprocess.run([f"--output={reference}", *(f"--input={p}" for p in inputs), "--validation_fraction=0.5", *LOCAL])

    output = small_disk / "out"
    common = [f"--output={output}", "--validation_fraction=0.5", *LOCAL]
    preprocess.run([*common, f"--input={inputs[0]}"])
    before = (output / contract.DATASET_FILE).read_bytes()
    filler = _fill(small_disk, leave_bytes=16 << 10)  # Room for the lease, not for the second track's shard.
    with pytest.raises(preprocess.PreprocessError) as raised:
        preprocess.run([*common, *(f"--input={p}" for p in inputs)])
    message = contract.fault_message(raised.value)
    assert "no space left on device" in message and "is as before (15 windows of 1 run(s)) and readable" in message
    assert "\n" not in message
    del raised  # Its traceback holds Beam's leaked file object: collected now, while this test's filter applies.
    gc.collect()
    assert (output / contract.DATASET_FILE).read_bytes() == before and verify.check(str(output)).problems == []
    assert not (output / commit.LEASE_FILE).exists()

    filler.unlink()
    preprocess.run([*common, *(f"--input={p}" for p in inputs)])
    assert _what_is_committed(output) == _what_is_committed(reference)
    assert verify.check(str(output)).leftovers == []


_KILLED_DURING_COMMIT = """
import os, signal, sys
from pipelines import contract
description = contract.read_description(sys.argv[1])
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # Killed with the new text written, before the rename.
contract.write_description(sys.argv[1], description.with_run(
    {name: contract.SplitSummary() for name in contract.SPLITS},
    contract.RunRecord("20990101T000000Z-00000000", "tracks-x.jsonl", "failures-x.jsonl",
                       contract.Accounting()),
))
"""


def test_a_kill_during_the_commit_leaves_the_previous_commit_and_the_next_run_cleans_up(tmp_path):
    output = tmp_path / "out"
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL])
    before = (output / contract.DATASET_FILE).read_bytes()
    killed = subprocess.run([sys.executable, "-c", _KILLED_DURING_COMMIT, str(output)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (output / contract.DATASET_FILE).read_bytes() == before
    (temporary,) = [name for name in os.listdir(output) if contract.is_commit_temporary(name)]
    assert verify.check(str(output)).leftovers == [temporary]
    preprocess.run([f"--output={output}", f"--input={CLIPS['ogg_48k']}", "--validation_fraction=0", *LOCAL])
    assert not (output / temporary).exists() and verify.check(str(output)).problems == []


def test_the_temporaries_of_every_file_a_commit_writes_are_a_killed_commits_leftovers(tmp_path):
    from pipelines import cards

    assert set(contract.COMMIT_WRITTEN_FILES) == {
        contract.DATASET_FILE, cards.CARD_FILE, cards.CARD_FALLBACK_FILE, contract.ATTRIBUTION_FILE,
        commit.LEASE_FILE, commit.COMMIT_LOCK_FILE,
    }  # fmt: skip
    output = tmp_path / "out"
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL])
    left = sorted(contract.temporary_name(name, uuid.uuid4().hex[:16]) for name in contract.COMMIT_WRITTEN_FILES)
    for name in left:
        (output / name).write_text("killed part-way")
    (output / ".notes.txt.0123456789abcdef.tmp").write_text("the user's")  # Not a name a commit writes.
    assert verify.check(str(output)).leftovers == left
    assert verify.main([str(output), "--clean"]) == 0
    assert not any((output / name).exists() for name in left) and (output / ".notes.txt.0123456789abcdef.tmp").exists()


def test_a_dataset_json_that_is_a_directory_is_a_contract_error(tmp_path):
    (tmp_path / contract.DATASET_FILE).mkdir()
    with pytest.raises(contract.ContractError, match="is a directory, not a file"):
        contract.read_description(str(tmp_path))


def test_a_run_leaves_the_users_own_files_in_the_output(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    dead = commit.new_run_id()
    own = {
        "train-notes.txt": "notes",
        "tracks-notes.jsonl": "{}",
        "failures-2023.jsonl": "{}",
        f"train-{dead}-00000-of-00001.tfrecord.bak": "a backup",
        f"train-{dead}.tfrecord": "not a shard name",
    }
    for name, text in own.items():
        (output / name).write_text(text)
    (output / "validation-set-2023").mkdir()
    (output / "validation-set-2023" / "a.wav").write_text("audio")
    (output / f"beam-temp-train-{dead}-{uuid.uuid1().hex}").write_text("a file, not Beam's directory")
    (tmp_path / "elsewhere").mkdir()
    (output / f"beam-temp-train-{dead}-{uuid.uuid1().hex}x").symlink_to(tmp_path / "elsewhere")
    left = f"train-{dead}-00000-of-00001.tfrecord"  # Of a dead run's exact shape: the one leftover.
    (output / left).write_bytes(b"partial")
    before = set(os.listdir(output))
    preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--validation_fraction=0", *LOCAL])
    after = set(os.listdir(output))
    assert before - after == {left}
    assert (output / "validation-set-2023" / "a.wav").exists() and (tmp_path / "elsewhere").exists()


def test_a_lease_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    started = commit._process_start_ticks(os.getpid())
    if started is None:
        pytest.skip("no /proc here to tell processes apart")
    mine = dict(host=os.uname().nodename, pid=os.getpid(), started=time.time(), local=True, boot_id=commit._boot_id())
    # A restarted container's process got the dead holder's pid (1 there; ours here): it started later.
    reused = commit.Lease(run_id=commit.new_run_id(), process_started=started - 1, **mine)
    assert reused.is_stale(3600)
    alive = commit.Lease(run_id=commit.new_run_id(), process_started=started, **mine)
    assert not alive.is_stale(3600)
    rebooted = commit.Lease(run_id=commit.new_run_id(), process_started=started, **{**mine, "boot_id": "another"})
    assert rebooted.is_stale(3600)
    (tmp_path / commit.LEASE_FILE).write_text(json.dumps(dataclasses.asdict(reused)))
    lease, stale = commit.acquire_lease(str(tmp_path), commit.new_run_id(), local=True)
    assert stale == reused and commit.read_lease(str(tmp_path)) == lease


def test_outputs_that_cannot_be_written_are_one_line_errors(tmp_path, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)], capture_output=True)
    (tmp_path / "a-file").write_text("not a directory")
    cases = [(tmp_path / "a-file", "error: not a directory: ")]
    if mounted.returncode == 0:
        cases.append((read_only / "out", "error: read-only file system: "))
    try:
        for output, message in cases:
            argv = [f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", *LOCAL]
            assert contract.run_command(preprocess.run, argv) == 1
            assert capsys.readouterr().err == f"{message}{output}\n"
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(read_only)], check=True)


# ---------------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM: one line, nothing committed, the output as before, no worker left behind.


@pytest.fixture()
def trickling_server():
    """A loopback server that sends an mp3 a few bytes a second: a job reading it is busy until interrupted."""
    import http.server
    import threading

    with open(CLIPS["mp3_22k_mono"], "rb") as f:
        body = f.read()
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for offset in range(0, len(body), 2048):
                if stop.wait(0.5):
                    return
                try:
                    self.wfile.write(body[offset : offset + 2048])
                except ConnectionError:
                    return

    from tests.conftest import QuietServer

    server = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow.mp3"
    stop.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("signum", "to_group", "status"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-job"],
)
def test_an_interrupted_run_says_so_in_one_line_and_leaves_the_output_as_it_was(
    trickling_server, signum, to_group, status, tmp_path
):
    output = tmp_path / "out"
    committed = preprocess.run([f"--output={output}", f"--input={CLIPS['ogg_48k']}", *LOCAL])
    before = (output / contract.DATASET_FILE).read_bytes()
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.preprocess", f"--output={output}", f"--input={trickling_server}",
         f"--input={CLIPS['flac_44k']}", "--sample_rate=8000", "--window_samples=4000", "--direct_num_workers=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while commit.read_lease(str(output)) is None:  # The job holds the lease: its signal handlers are in place.
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.1)
        time.sleep(3.0)  # Its workers are busy now (one fetching, a few bytes a second).
        (os.killpg if to_group else os.kill)(job.pid, signum)
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if not line.startswith("Progress:")]
    assert job.returncode == status and lines == [
        f"interrupted ({signal.Signals(signum).name}): Nothing of this run was committed: "
        f"{output / contract.DATASET_FILE} is as before ({committed.windows} windows of 1 run(s)) and readable."
    ], err
    assert (output / contract.DATASET_FILE).read_bytes() == before
    assert commit.read_lease(str(output)) is None
    assert _live_processes_of_group(job.pid) == []  # No worker of the job outlived it.


def _live_processes_of_group(pgid):
    """(pid, state, command) of the processes of a process group that are not zombies (exited, not yet reaped)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":  # Fields 3 (state) and 5 (process group).
            found.append((int(entry), fields[0], stat[stat.index("(") + 1 : stat.rindex(")")]))
    return found
