"""The training loop (trainer/loop.py, trainer/summaries.py): loops of steps, the NaN stop, checkpoints and
resumption, SIGTERM, and what TensorBoard gets."""

import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pipelines import contract
from tests.helpers import train_args
from trainer import task


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(clips_dataset, tmp_path):
    with pytest.raises(task.TrainingError, match=r"the loss became nan at step \d+.*last good checkpoint"):
        task.run(train_args(clips_dataset, tmp_path, "--steps=50", "--checkpoint_every=1", "--learning_rate=1e30"))


def test_steps_per_loop_keeps_every_step_and_resumes_exactly(clips_dataset, tmp_path):
    steps = ["--steps=9", "--checkpoint_every=4", "--eval_every=100", "--summary_audio_secs=0"]
    one = task.run(train_args(clips_dataset, tmp_path / "one", *steps, "--steps_per_loop=1"))
    first = task.run(train_args(clips_dataset, tmp_path / "loops", *steps, "--steps_per_loop=3"), stop_after_steps=5)
    # Loops end at checkpoints (4) and at the preemption (5), not only every 3 steps; a stopped run exports nothing.
    assert first.step == 5 and first.export_dir is None
    second = task.run(train_args(clips_dataset, tmp_path / "loops", *steps, "--steps_per_loop=3"))
    # Resumed from the checkpoint at step 4: steps 5..9 again, on exactly the batches of the uninterrupted run.
    assert [s for s, _ in second.losses] == [5, 6, 7, 8, 9]
    joined = dict(first.losses[:4] + second.losses)
    assert [joined[s] for s in range(1, 10)] == pytest.approx([loss for _, loss in one.losses], rel=1e-4)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_continues_as_if_uninterrupted(clips_dataset, tmp_path):
    # What a spot VM, GKE, Vertex AI, SageMaker spot or Slurm sends before taking the machine.
    job = tmp_path / "job"
    args = train_args(clips_dataset, job, "--checkpoint_every=100000", "--eval_every=100000", "--steps_per_loop=1",
                      "--summary_audio_secs=0")  # fmt: skip
    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer.task", *args, "--steps=100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        events = job / "logs" / "train"
        deadline = time.monotonic() + 180
        while not (events.is_dir() and sum(f.stat().st_size for f in events.iterdir()) > 4000):  # Some steps ran.
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.communicate()
            time.sleep(0.2)
        trainer.send_signal(signal.SIGTERM)
        _, err = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip()]
    assert trainer.returncode == 143 and not any("Traceback" in line or "WARNING" in line for line in lines), err
    saved = int(re.fullmatch(r"interrupted \(SIGTERM\): saved a checkpoint at step (\d+) \(.*ckpt-\1\); run the same "
                             r"command to resume from it", lines[-1]).group(1))  # fmt: skip
    assert saved >= 1 and not (job / contract.EXPORT_DIR).exists()
    resumed = task.run([*args, f"--steps={saved + 3}"])
    assert [s for s, _ in resumed.losses] == [saved + 1, saved + 2, saved + 3]
    whole = task.run(train_args(clips_dataset, tmp_path / "whole", f"--steps={saved + 3}",
                                "--checkpoint_every=100000", "--eval_every=100000", "--steps_per_loop=1",
                                "--summary_audio_secs=0"))  # fmt: skip
    assert [loss for _, loss in resumed.losses] == pytest.approx([loss for _, loss in whole.losses[-3:]], rel=1e-4)


def _summaries(directory):
    """{tag: {step: summary value}} of the TensorBoard event files in a directory."""
    import tensorflow as tf

    found = {}
    for path in directory.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value
    return found


def test_tensorboard_gets_audio_from_the_fast_sampler_and_its_spectrogram(clips_dataset, tmp_path):
    import tensorflow as tf

    # Loops of one step: samples/s is measured from the end of the first loop.
    result = task.run(train_args(clips_dataset, tmp_path, "--steps=2", "--eval_every=2", "--steps_per_loop=1",
                                 "--summary_audio_secs=0.25"))  # fmt: skip
    tags = _summaries(tmp_path / "logs" / "validation")
    assert {"generated", "generated_spectrogram", "loss_nats"} <= set(tags)
    wav = tf.audio.decode_wav(tf.make_ndarray(tags["generated"][2].tensor)[0][0])
    assert wav.sample_rate.numpy() == 8000 and wav.audio.shape == (2000, 1)  # 0.25 s at the data's rate.
    image = tf.image.decode_png(tf.make_ndarray(tags["generated_spectrogram"][2].tensor)[2])
    assert image.shape[0] > 200 and image.shape[1] > 600

    def scalars(tags, tag):
        return {step: float(tf.make_ndarray(value.tensor)) for step, value in tags[tag].items()}

    # The losses in nats and bits: every training step's, and the validation loss at the evaluation.
    validation = scalars(tags, "loss_nats")
    assert validation == {2: pytest.approx(result.validation_loss_nats)}
    assert scalars(tags, "loss_bits") == {2: pytest.approx(validation[2] / math.log(2))}
    train = _summaries(tmp_path / "logs" / "train")
    assert scalars(train, "loss_nats") == pytest.approx(dict(result.losses))
    assert scalars(train, "loss_bits") == pytest.approx({step: loss / math.log(2) for step, loss in result.losses})
    assert scalars(train, "learning_rate") == {1: pytest.approx(3e-3), 2: pytest.approx(3e-3)}  # The default.
    assert set(scalars(train, "samples_per_sec")) == {2} and scalars(train, "samples_per_sec")[2] > 0
