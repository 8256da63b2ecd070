"""The three programs on a real one-node Slurm cluster (`tests/slurm.py`): allocations, steps, arrays, sbatch."""

import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipelines import contract
from sampler import generate
from tests import slurm
from tests.helpers import train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "templates", "slurm")
# What makes a GPU template fit this cluster: one node, no GPUs, one CPU per task (the node may have only 2).
FIT = ["--nodes=1", "--gres=none", "--cpus-per-task=1", "--time=10"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real one-node Slurm cluster for this session, stopped (its daemons, by process group) at the end."""
    reason = slurm.missing()
    if reason:
        pytest.skip(f"no Slurm cluster: {reason}")
    cluster = slurm.Cluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    # Tasks run this interpreter's environment (sbatch and srun pass the submitter's on).
    cluster.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + cluster.env.get("PATH", "")
    yield cluster
    cluster.stop()


def _python(*code):
    return ["python", "-c", "; ".join(code)]


def test_a_one_cpu_allocation_counts_one_cpu_for_every_one_per_core(cluster):
    """srun --cpus-per-task=1 on a node of several CPUs: the sampler's threads and Beam's local workers are 1."""
    if os.cpu_count() < 2:
        pytest.skip("a node of one CPU cannot tell its CPUs from the allocation's")
    probe = _python(
        "from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions",
        "from pipelines import contract, preprocess",
        "options = PipelineOptions([])",
        "preprocess.local_runner(options, [])",
        "print(contract.usable_cpus(), options.view_as(DirectOptions).direct_num_workers)",
    )
    one = cluster.run("srun", "--cpus-per-task=1", *probe, cwd=ROOT).stdout.split()
    two = cluster.run("srun", "--cpus-per-task=2", *probe, cwd=ROOT).stdout.split()
    assert (one, two) == (["1", "1"], ["2", "2"])


def _clips(directory):
    """{name: bytes} of the WAV files in a directory."""
    clips = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.wav"))):
        with open(path, "rb") as f:
            clips[os.path.basename(path)] = f.read()
    return clips


@pytest.fixture(scope="module")
def clips_of_one_process(trained_job, tmp_path_factory):
    """The four clips (seed 3) that one process generates from `trained_job`: {name: WAV bytes}."""
    directory = tmp_path_factory.mktemp("one-process")
    generate.run([f"--model={trained_job}", "--seconds=0.05", "--num_clips=4", "--seed=3", "--engine=cpu",
                  f"--output={directory / 'take.wav'}"])  # fmt: skip
    return _clips(directory)


def test_srun_tasks_each_generate_their_share_of_the_clips_of_one_process(cluster, trained_job, clips_of_one_process,
                                                                          tmp_path):  # fmt: skip
    result = cluster.run(
        "srun", "-n", "2", "python", "-m", "sampler.generate", f"--model={trained_job}", "--seconds=0.05",
        "--num_clips=4", "--seed=3", "--engine=cpu", f"--output={tmp_path / 'take.wav'}", cwd=ROOT,
    )  # fmt: skip
    assert _clips(tmp_path) == clips_of_one_process
    assert len(set(clips_of_one_process.values())) == 4
    for shard, clips in ((0, "0-1"), (1, "2-3")):
        assert f"(clips {clips} of 4: shard {shard}/2 from SLURM_PROCID)" in result.stdout
    assert result.stdout.count("cpu engine, 1 thread(s)") == 2  # Each task has one CPU of the node.


def test_a_job_array_generates_the_clips_of_one_process(cluster, trained_job, clips_of_one_process, tmp_path):
    env = {**cluster.env, "MODEL": str(trained_job), "OUTPUT": str(tmp_path / "take.wav"), "NUM_CLIPS": "4",
           "SEED": "3"}  # fmt: skip
    cluster.run(
        "sbatch", "--wait", "--array=0-1", *FIT, f"--output={tmp_path}/%A_%a.log",
        os.path.join(TEMPLATES, "generate-array.sbatch"), "--seconds=0.05", "--engine=cpu", env=env, cwd=ROOT,
    )  # fmt: skip
    assert _clips(tmp_path) == clips_of_one_process
    logs = "".join(path.read_text() for path in sorted(tmp_path.glob("*.log")))
    assert "shard 0/2 from SLURM_ARRAY_TASK_ID" in logs and "shard 1/2 from SLURM_ARRAY_TASK_ID" in logs


def _train_loss(output):
    return re.findall(r"Trained to step \d+: train loss ([\d.]+)", output)


def test_srun_tasks_train_one_model_as_tf_config_workers_do(cluster, clips_dataset, two_worker_job, tmp_path):
    """The multi-node template, on one node: two tasks are one MultiWorkerMirroredStrategy job, one export."""
    import keras

    job_dir, log = tmp_path / "job", tmp_path / "train.log"
    env = {**cluster.env, "DATA": str(clips_dataset), "JOB_DIR": str(job_dir)}
    state = cluster.run_job(
        *FIT, "--ntasks-per-node=2", f"--output={log}", script=os.path.join(TEMPLATES, "train-2nodes.sbatch"),
        args=train_args(clips_dataset, job_dir, "--steps=3")[2:], env=env, cwd=ROOT,
    )  # fmt: skip
    output = log.read_text()
    assert state == "COMPLETED", output
    # Both tasks end the one job: the same loss as TF_CONFIG's two workers, the chief's export named by both.
    assert _train_loss(output) == _train_loss(two_worker_job.output) and len(_train_loss(output)) == 2
    assert output.count(f"Exported to {job_dir / contract.EXPORT_DIR}\n") == 2
    assert sorted(os.listdir(job_dir)) == ["checkpoints", "export", "job.json", "logs"]  # No workers/ left.
    assert contract.read_model_config(str(job_dir / contract.EXPORT_DIR)).step == 3
    ours = keras.saving.load_model(job_dir / contract.EXPORT_DIR / contract.MODEL_FILE)
    theirs = keras.saving.load_model(two_worker_job.job_dir / contract.EXPORT_DIR / contract.MODEL_FILE)
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_srun_copies_of_a_one_device_training_are_refused_before_writing(cluster, clips_dataset, tmp_path):
    job_dir = tmp_path / "job"
    result = cluster.run(
        "srun", "-n", "2", "python", "-m", "trainer.task", *train_args(clips_dataset, job_dir, "--strategy=one_device"),
        check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all(
        "2 copies of this command run as the tasks of Slurm step" in line
        and "--strategy one_device would train 2 separate models into one --job_dir: use --strategy auto" in line
        for line in errors
    ), result.stderr
    assert not job_dir.exists()


@pytest.mark.parametrize("template", sorted(os.listdir(TEMPLATES)))
def test_every_template_is_a_job_this_slurm_accepts(cluster, template, tmp_path):
    """sbatch --test-only: each template's directives parse and fit (its GPUs and nodes set to this cluster's)."""
    env = {**cluster.env, **dict.fromkeys(["INPUT", "OUTPUT", "DATA", "JOB_DIR", "MODEL", "NUM_CLIPS"], "x")}
    result = cluster.run("sbatch", "--test-only", *FIT, "--ntasks-per-node=1", os.path.join(TEMPLATES, template),
                         env=env, cwd=tmp_path)  # fmt: skip
    assert "to start at" in result.stderr
    assert subprocess.run(["bash", "-n", os.path.join(TEMPLATES, template)]).returncode == 0


@pytest.mark.parametrize(
    "strategy, tpu, environ, message",
    [
        ("one_device", None, {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}, "--strategy one_device would train 2"),
        ("mirrored", None, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"}, "--strategy mirrored would train 4"),
        ("auto", "grpc://10.0.0.2:8470", {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"},
         "--strategy auto with --tpu would train 2"),
        ("auto", None, {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0",
                        "TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "but TF_CONFIG names 1 worker"),
    ],
    ids=["one-device", "mirrored", "auto-with-tpu", "tf-config-of-another-size"],
)  # fmt: skip
def test_copies_that_would_train_separate_models_are_refused(strategy, tpu, environ, message):
    from trainer import distribute

    with pytest.raises(ValueError, match=re.escape(message)):
        distribute.check_single_copy(strategy, tpu, environ)
    distribute.check_single_copy(strategy, tpu, {"SLURM_NTASKS": "2", "SLURM_PROCID": "0"})  # A batch script: once.
    distribute.check_single_copy("auto", None, {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"})  # One job of 2.


# ---------------------------------------------------------------------------------------------------------------
# The CPUs a process may use (`contract.usable_cpus`), without the cluster: affinity, cgroup quotas, Slurm's count.


def test_usable_cpus_follow_the_affinity_mask():
    if shutil.which("taskset") is None or os.cpu_count() < 2:
        pytest.skip("needs taskset (util-linux) and two CPUs")
    probe = _python("from pipelines import contract", "print(contract.usable_cpus())")
    assert subprocess.run(["taskset", "-c", "0", sys.executable, *probe[1:]], capture_output=True, text=True,
                          cwd=ROOT).stdout.split() == ["1"]  # fmt: skip
    assert contract.usable_cpus({}) == len(os.sched_getaffinity(0))


def test_slurm_cpus_per_task_counts_inside_a_job_step_only():
    assert contract.usable_cpus({"SLURM_STEP_ID": "0", "SLURM_CPUS_PER_TASK": "1"}) == 1
    # The batch script of sbatch -n 2 -c 1 may use both CPUs of its allocation: it is not one task's step.
    assert contract.usable_cpus({"SLURM_CPUS_PER_TASK": "1"}) == len(os.sched_getaffinity(0))
    assert contract.usable_cpus({"SLURM_STEP_ID": "0", "SLURM_CPUS_PER_TASK": "999"}) == len(os.sched_getaffinity(0))


def test_a_cgroup_v1_cpu_quota_limits_the_count(tmp_path):
    """A real cgroup of the v1 cpu controller with a quota of half a CPU: a process inside may use 1 (rounded up)."""
    if os.geteuid() != 0 or not os.access("/sys/fs/cgroup/cpu/cgroup.procs", os.W_OK) or os.cpu_count() < 2:
        pytest.skip("needs root, a writable cgroup v1 cpu controller at /sys/fs/cgroup/cpu and two CPUs")
    group = f"/sys/fs/cgroup/cpu/wavenet-test-{os.getpid()}"
    os.mkdir(group)
    try:
        with open(f"{group}/cpu.cfs_period_us", "w") as f:
            f.write("100000")
        with open(f"{group}/cpu.cfs_quota_us", "w") as f:
            f.write("50000")
        script = f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -c " + "'{}'".format(
            "; ".join(_python("from pipelines import contract", "print(contract.usable_cpus())")[2:])
        )
        assert subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=ROOT).stdout.split() == ["1"]
    finally:
        os.rmdir(group)


def test_a_cgroup_v2_cpu_max_of_an_ancestor_limits_the_count(tmp_path):
    """cgroup v2 as /proc/self/cgroup and mountinfo describe it: the tightest cpu.max on the way up counts."""
    mount = tmp_path / "unified"
    (mount / "job" / "step").mkdir(parents=True)
    (mount / "job" / "cpu.max").write_text("150000 100000\n")
    (mount / "job" / "step" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("0::/job/step\n")
    (proc / "mountinfo").write_text(
        "22 1 0:20 / /proc rw,nosuid - proc proc rw\n"
        f"35 22 0:30 / {mount} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    assert contract.cgroup_cpu_limit(str(proc)) == 2
    assert contract.usable_cpus({}, str(proc)) == min(2, len(os.sched_getaffinity(0)))
    (mount / "job" / "cpu.max").write_text("max 100000\n")
    assert contract.cgroup_cpu_limit(str(proc)) is None


def test_the_trainer_input_threads_are_the_usable_cpus(clips_dataset):
    from trainer import data

    paths = data.split_paths(str(clips_dataset), contract.read_description(str(clips_dataset)), contract.TRAIN)
    dataset = data.make_dataset(paths, 400, 4)
    assert dataset.options().threading.private_threadpool_size == contract.usable_cpus()


# ---------------------------------------------------------------------------------------------------------------
# The cluster TensorFlow's SlurmClusterResolver forms from a step's variables, and the GPUs each task gets.

TWO_TASKS = {"SLURM_JOB_ID": "41", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2",
             "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NODEID": "0",
             "SLURM_STEP_RESV_PORTS": "12000-12002"}  # fmt: skip


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, "2,3"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}, "6,7"),
        ({**TWO_TASKS, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "GPU-8f2a,GPU-c41e"},
         "GPU-8f2a"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1",
          "SLURM_GPUS_PER_TASK": "2"}, "0,1"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1",
          "SLURM_GPU_BIND": "closest"}, "0,1"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1",
          "SLURM_GPU_BIND": "verbose,none"}, "1"),
        ({**TWO_TASKS, "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_TASKS_PER_NODE": "3", "SLURM_PROCID": "2",
          "SLURM_LOCALID": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, "0"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": ""}, ""),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "0,1"),
    ],
    ids=["half-of-four", "an-allocation-not-from-0", "uuids", "gpus-per-task", "gpu-bind", "gpu-bind-none",
         "fewer-gpus-than-tasks-shared", "no-gpus", "not-under-slurm"],
)  # fmt: skip
def test_each_task_of_a_node_gets_its_share_of_the_gpus_it_sees(environ, expected):
    """The one rule of the trainer and the sampler (`contract.bind_task_gpus`), from the variables alone."""
    environ = dict(environ)
    assert contract.bind_task_gpus(environ) == [d for d in expected.split(",") if d]
    assert environ["CUDA_VISIBLE_DEVICES"] == expected


@pytest.mark.parametrize(
    "environ, workers, task, gpus, visible",
    [
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": ""},
         ["localhost:12000", "localhost:12001"], 1, 0, ""),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
         ["localhost:12000", "localhost:12001"], 1, 2, "2,3"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "1",
          "SLURM_GPUS_PER_TASK": "1"}, ["localhost:12000", "localhost:12001"], 1, 1, "1"),
        ({**TWO_TASKS, "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_NODEID": "1",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
         ["gpu07:12000", "gpu08:12000"], 1, 4, "0,1,2,3"),
        ({**TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"},
         ["localhost:12000", "localhost:12001"], 1, 2, "6,7"),  # Slurm's names kept, not renumbered from 0.
        ({**TWO_TASKS, "SLURM_STEP_RESV_PORTS": "", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
          "CUDA_VISIBLE_DEVICES": ""}, ["localhost:40992", "localhost:40993"], 0, 0, ""),  # 20000 + 32 (16 x 41)
    ],
    ids=["cpu-only", "four-gpus-shared-by-two-tasks", "slurm-bound-gpus", "two-nodes", "an-allocation-not-from-0",
         "ports-from-the-job-id"],
)  # fmt: skip
def test_slurm_cluster_from_the_step_with_each_tasks_gpus(environ, workers, task, gpus, visible, monkeypatch):
    from trainer import distribute

    for name in [n for n in os.environ if n.startswith("SLURM_") or n in ("CUDA_VISIBLE_DEVICES", "TF_CONFIG")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    resolver = distribute.slurm_cluster_resolver()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == visible
    assert resolver.cluster_spec().as_dict() == {"worker": workers}  # Asked again, as the strategy does: ...
    assert os.environ["CUDA_VISIBLE_DEVICES"] == visible  # ... the GPUs stay as they were set.
    assert (resolver.task_type, resolver.task_id) == ("worker", task)
    assert resolver.num_accelerators().get("GPU", 0) == gpus


def test_fewer_gpus_than_tasks_on_a_node_is_refused(monkeypatch):
    from trainer import distribute

    for name, value in {**TWO_TASKS, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"2 tasks of Slurm step 41\.0 share 1 GPU\(s\) on a node"):
        distribute.slurm_cluster_resolver()
