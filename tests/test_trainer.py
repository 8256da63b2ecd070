"""The WaveNet trainer on CPU: real strategies, real preprocessed clips, a few steps."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines import audio, contract
from tests.helpers import CLIPS
from trainer import compat, data, distribute, model, optimization, options, presets, task

TINY = model.PRESETS["tiny"]


def _args(dataset, job_dir, *extra):
    return [
        f"--data={dataset}", f"--job_dir={job_dir}", "--preset=tiny", "--batch_size=4",
        "--summary_audio_secs=0.005", "--eval_batches=2", *extra,
    ]  # fmt: skip


def test_receptive_field_is_computed_from_the_dilations():
    assert model.PRESETS["default"].receptive_field == 2048
    assert model.PRESETS["large"].receptive_field == 4094
    assert TINY.receptive_field == 1 + 63 + 1
    assert model.WaveNetConfig(filter_width=3, dilations=(1, 2, 4)).receptive_field == 2 * 7 + 3


@pytest.mark.parametrize("filter_width", [2, 3])
def test_model_is_causal_and_sees_exactly_its_receptive_field(filter_width):
    import keras

    config = model.WaveNetConfig(
        quantization_channels=32, residual_channels=8, dilation_channels=8, skip_channels=8,
        filter_width=filter_width, dilations=(1, 2, 4, 8),
    )  # fmt: skip
    keras.utils.set_random_seed(1)
    wavenet = model.build_wavenet(config)
    for weight in wavenet.weights:  # Non-zero biases too, so nothing hides behind a zero.
        weight.assign(np.random.default_rng(2).normal(0, 0.3, weight.shape).astype("float32"))
    codes = np.random.default_rng(0).integers(0, 32, (1, 200)).astype("int32")
    changed = codes.copy()
    changed[0, 100] = (codes[0, 100] + 7) % 32
    a, b = np.asarray(wavenet(codes)), np.asarray(wavenet(changed))
    differs = np.abs(a - b).max(axis=-1)[0] > 1e-6
    rf = config.receptive_field
    assert not differs[:100].any()  # Nothing before the change moves.
    assert differs[100] and differs[100 + rf - 1]  # The change is seen up to rf - 1 samples later...
    assert not differs[100 + rf :].any()  # ...and no further.


@pytest.mark.parametrize(
    "filter_width, condition_values, policy",
    [(2, 0, "float32"), (3, 0, "float32"), (2, 3, "float32"), (2, 0, "mixed_float16")],
)
def test_scored_logits_and_their_gradients_equal_the_keras_models(filter_width, condition_values, policy):
    """The training formulation (shifted products, pruned positions) computes the exported model's function."""
    import keras
    import tensorflow as tf

    config = model.WaveNetConfig(
        quantization_channels=32, residual_channels=8, dilation_channels=6, skip_channels=12,
        filter_width=filter_width, dilations=(1, 2, 4, 8, 1, 2), condition_values=condition_values,
    )  # fmt: skip
    keras.mixed_precision.set_global_policy(policy)
    try:
        wavenet = model.build_wavenet(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(2)
    for weight in wavenet.weights:  # Non-zero biases too, so a missed bias shows.
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    rf = config.receptive_field
    codes = tf.constant(rng.integers(0, 32, (3, rf + 40)), tf.int32)
    condition = tf.constant([2, 0, 1], tf.int32) if condition_values else None
    inputs = [codes, condition] if condition_values else codes

    with tf.GradientTape(persistent=True) as tape:
        keras_logits = tf.cast(wavenet(inputs)[:, rf - 1 :], tf.float32)
        scored = model.scored_logits(wavenet, config, codes, condition)
        keras_loss, scored_loss = tf.reduce_sum(keras_logits**2), tf.reduce_sum(scored**2)
    assert scored.dtype == tf.float32 and scored.shape == (3, 41, 32)
    # float16 rounding: the Keras model's own float16 gradients differ from its float32 ones by several 1e-3
    # of their largest value here, and two float16 computations in different orders by up to ~3e-2.
    tolerance = 1e-5 if policy == "float32" else 5e-2
    np.testing.assert_allclose(scored.numpy(), keras_logits.numpy(), rtol=tolerance, atol=tolerance)
    expected = tape.gradient(keras_loss, wavenet.trainable_variables)
    got = tape.gradient(scored_loss, wavenet.trainable_variables)
    for variable, want, have in zip(wavenet.trainable_variables, expected, got, strict=True):
        want, have = tf.convert_to_tensor(want), tf.convert_to_tensor(have)  # Embeddings' are IndexedSlices.
        scale = float(tf.reduce_max(tf.abs(want))) or 1.0
        np.testing.assert_allclose(have.numpy() / scale, want.numpy() / scale, atol=tolerance, err_msg=variable.path)
    with pytest.raises(ValueError, match="receptive field|>= "):
        model.scored_logits(wavenet, config, codes[:, : rf - 1], condition)


def test_one_device_on_a_cpu_is_the_default_strategy():
    """OneDeviceStrategy("/cpu:0") ran the trainer at 0.4x the default strategy's samples/s (BENCHMARKS.md)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is present: one device is OneDeviceStrategy on it")
    for name in ("auto", "one_device"):
        strategy = distribute.get_strategy(name)
        assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1
        assert distribute.is_chief(strategy) and distribute.device_kind(strategy) == "CPU"


def test_mirrored_strategies_made_one_after_another_in_one_process_each_reduce_their_own_shapes():
    """A plain MirroredStrategy made after another reuses its collective keys (tensorflow#62790)."""
    import tensorflow as tf

    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    for size in (3, 5):
        strategy = compat.mirrored_strategy(cpus)

        @tf.function
        def all_reduce(strategy=strategy, size=size):
            return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.ones([size])))

        assert [r.numpy().tolist() for r in strategy.experimental_local_results(all_reduce())] == [[2.0] * size] * 2


def test_mirrored_on_two_devices_matches_one_device_for_the_same_global_batch(clips_dataset, tmp_path):
    import tensorflow as tf

    batch = np.random.default_rng(0).integers(0, 256, (4, 200)).astype("int32")

    def fixed(ctx):
        # One input pipeline: successive per-replica batches go to successive replicas,
        # so both strategies see the same 4 windows in every step.
        return tf.data.Dataset.from_tensor_slices(batch).batch(ctx.get_per_replica_batch_size(4)).repeat()

    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(cpus) == 2
    results = {}
    for name, strategy in {
        "one": tf.distribute.OneDeviceStrategy(cpus[0]),
        "mirrored": compat.mirrored_strategy(cpus),
    }.items():
        results[name] = task.run(
            _args(clips_dataset, tmp_path / name, "--steps=3", "--summary_audio_secs=0"),
            dataset_override=fixed,
            strategy_override=strategy,
        )
    one = [loss for _, loss in results["one"].losses]
    mirrored = [loss for _, loss in results["mirrored"].losses]
    assert len(one) == 3 and one[0] != one[2]  # Three steps that changed the weights...
    assert mirrored == pytest.approx(one, rel=1e-5)  # ...identically on one device and two replicas.


def test_resumed_run_continues_at_the_same_step_and_joins_the_loss_curve(clips_dataset, tmp_path):
    steps = ["--steps=8", "--checkpoint_every=2", "--eval_every=100"]
    whole = task.run(_args(clips_dataset, tmp_path / "whole", *steps))
    first = task.run(_args(clips_dataset, tmp_path / "resumed", *steps), stop_after_steps=4)
    assert first.step == 4 and first.export_dir is None
    second = task.run(_args(clips_dataset, tmp_path / "resumed", *steps))
    assert [s for s, _ in second.losses] == [5, 6, 7, 8]
    assert [loss for _, loss in first.losses + second.losses] == pytest.approx(
        [loss for _, loss in whole.losses], rel=1e-4
    )


@pytest.mark.slow
def test_validation_loss_falls_below_the_code_histogram_entropy(clips_dataset, tmp_path):
    description = contract.read_description(str(clips_dataset))
    train_paths = data.split_paths(str(clips_dataset), description, contract.TRAIN)
    entropy_nats = data.code_entropy_bits(train_paths, description.window_samples, 256) * np.log(2)
    result = task.run(
        _args(clips_dataset, tmp_path, "--steps=300", "--eval_every=300", "--batch_size=16", "--learning_rate=3e-3")
    )
    assert description.splits["validation"].tracks == 1 and description.splits["train"].tracks == 3
    # A held-out song, predicted a nat per sample better than the code histogram of the training songs.
    assert result.validation_loss_nats < entropy_nats - 1.0
    exported = contract.read_model_config(str(tmp_path / "export"))
    assert exported.sample_rate == 8000 and exported.receptive_field == TINY.receptive_field
    assert os.path.exists(tmp_path / "logs" / "validation")


def test_windows_shorter_than_the_receptive_field_are_refused(clips_dataset, tmp_path):
    with pytest.raises(contract.DatasetMismatchError, match=r"window_samples=400, shorter than the model needs"):
        task.run([f"--data={clips_dataset}", f"--job_dir={tmp_path}", "--model=default"])


def test_sample_rate_differing_from_the_trained_model_is_refused(clips_dataset, tmp_path):
    contract.write_model_config(str(tmp_path / "export"), contract.ModelConfig(wavenet=TINY, sample_rate=16000))
    with pytest.raises(contract.DatasetMismatchError, match=r"sample_rate=8000 Hz, the model has sample_rate=16000 Hz"):
        task.run(_args(clips_dataset, tmp_path))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(clips_dataset, tmp_path):
    with pytest.raises(task.TrainingError, match=r"the loss became nan at step \d+.*last good checkpoint"):
        task.run(_args(clips_dataset, tmp_path, "--steps=50", "--checkpoint_every=1", "--learning_rate=1e30"))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_training_is_one_job_with_one_export(two_worker_job):
    """Two TF_CONFIG workers train in step: one loss, the chief's export named by both, the other's files removed."""
    job_dir, output = two_worker_job.job_dir, two_worker_job.output
    losses = re.findall(r"Trained to step 3: train loss ([\d.]+)", output)
    assert len(losses) == 2 and losses[0] == losses[1], output
    assert output.count(f"Exported to {job_dir / contract.EXPORT_DIR}\n") == 2
    assert contract.read_model_config(str(job_dir / contract.EXPORT_DIR)).step == 3
    assert sorted(os.listdir(job_dir)) == ["checkpoints", "export", "job.json", "logs"]  # No workers/ left.


def test_sagemaker_train_argument_becomes_flags(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"data": '"s3://b/windows"', "steps": "200", "mixed_precision": "true",
                                "sagemaker_region": '"us-east-1"'}))  # fmt: skip
    assert task.sagemaker_argv(["train"], str(path)) == ["--data=s3://b/windows", "--steps=200", "--mixed_precision"]
    assert task.sagemaker_argv(["--steps=3"], str(path)) == ["--steps=3"]


def test_a_sagemaker_spot_job_takes_its_paths_from_the_service_and_resumes(clips_dataset, tmp_path, monkeypatch):
    # SageMaker's layout under /opt/ml, rooted in tmp_path: the input channel, the model dir it uploads when the job
    # ends, the checkpoint dir it syncs to checkpoint_s3_uri (and restores after a spot interruption), the output dir.
    ml = tmp_path / "opt" / "ml"
    shutil.copytree(clips_dataset, ml / "input" / "data" / "training")
    (ml / "input" / "config").mkdir(parents=True)
    (ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {"preset": '"tiny"', "batch_size": "4", "steps": "4", "checkpoint_every": "2", "summary_audio_secs": "0",
         "eval_batches": "1"}))  # fmt: skip
    for name, value in {"SM_CHANNEL_TRAINING": ml / "input" / "data" / "training", "SM_MODEL_DIR": ml / "model",
                        "SM_OUTPUT_DIR": ml / "output", "SM_CHANNELS": '["training"]'}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    argv = task.sagemaker_argv(["train"], str(ml / "input" / "config" / "hyperparameters.json"))
    first = task.run(argv, stop_after_steps=2)  # Interrupted, as a spot instance is.
    assert first.step == 2 and (ml / "checkpoints" / "checkpoints" / "ckpt-2.index").exists()
    second = task.run(argv)
    assert [step for step, _ in second.losses] == [3, 4]
    assert second.export_dir == str(ml / "model")
    assert sorted(os.listdir(ml / "model")) == [contract.MODEL_CONFIG_FILE, contract.MODEL_FILE]
    assert os.listdir(ml / "output" / "tensorboard" / "train")


def test_vertex_ai_directories_are_the_defaults_the_user_did_not_override(tmp_path):
    environ = {"AIP_CHECKPOINT_DIR": "gs://b/ckpt", "AIP_MODEL_DIR": "gs://b/model", "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb"}
    args = options.parse_args(["--data=gs://b/windows"], environ)
    assert (args.job_dir, args.export_dir, args.tensorboard_dir) == ("gs://b/ckpt", "gs://b/model", "gs://b/tb")
    args = options.parse_args(["--data=d", "--job_dir=j", "--tensorboard_dir=t"], environ)
    assert (args.job_dir, args.export_dir, args.tensorboard_dir) == ("j", "gs://b/model", "t")
    plain = options.parse_args(["--data=d", "--job_dir=j"], {})
    assert (plain.export_dir, plain.tensorboard_dir) == (os.path.join("j", "export"), os.path.join("j", "logs"))
    with pytest.raises(SystemExit):
        options.parse_args(["--job_dir=j"], {})  # Outside SageMaker, --data is required.


@pytest.mark.parametrize("flag", ["--mixed_precision", "--jit_compile"])
def test_mixed_precision_and_xla_train_and_export(clips_dataset, tmp_path, flag):
    import keras

    result = task.run(_args(clips_dataset, tmp_path, "--steps=3", "--eval_every=3", flag))
    assert keras.mixed_precision.global_policy().name == "float32"  # Global state left as found.
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[2] < losses[0]
    exported = keras.saving.load_model(tmp_path / "export" / "model.keras")
    expected_policy = "mixed_float16" if flag == "--mixed_precision" else "float32"
    assert exported.get_layer("gate_0").dtype_policy.name == expected_policy


def test_steps_per_loop_keeps_every_step_and_resumes_exactly(clips_dataset, tmp_path):
    steps = ["--steps=9", "--checkpoint_every=4", "--eval_every=100"]
    one = task.run(_args(clips_dataset, tmp_path / "one", *steps, "--steps_per_loop=1", "--summary_audio_secs=0"))
    first = task.run(_args(clips_dataset, tmp_path / "loops", *steps, "--steps_per_loop=3", "--summary_audio_secs=0"),
                     stop_after_steps=5)  # fmt: skip
    assert first.step == 5  # Loops end at checkpoints (4) and at the preemption (5), not only every 3 steps.
    second = task.run(_args(clips_dataset, tmp_path / "loops", *steps, "--steps_per_loop=3", "--summary_audio_secs=0"))
    # Resumed from the checkpoint at step 4: steps 5..9 again, on exactly the batches of the uninterrupted run.
    assert [s for s, _ in second.losses] == [5, 6, 7, 8, 9]
    joined = dict(first.losses[:4] + second.losses)
    assert [joined[s] for s in range(1, 10)] == pytest.approx([loss for _, loss in one.losses], rel=1e-4)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_continues_as_if_uninterrupted(clips_dataset, tmp_path):
    # What a spot VM, GKE, Vertex AI, SageMaker spot or Slurm sends before taking the machine.
    job = tmp_path / "job"
    args = _args(clips_dataset, job, "--checkpoint_every=100000", "--eval_every=100000", "--steps_per_loop=1",
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
    whole = task.run(_args(clips_dataset, tmp_path / "whole", f"--steps={saved + 3}", "--checkpoint_every=100000",
                           "--eval_every=100000", "--steps_per_loop=1", "--summary_audio_secs=0"))  # fmt: skip
    assert [loss for _, loss in resumed.losses] == pytest.approx([loss for _, loss in whole.losses[-3:]], rel=1e-4)


def test_the_schedule_warms_up_linearly_then_decays_to_zero():
    cosine = optimization.learning_rate_schedule("cosine", 1e-3, 10, 110)
    values = [float(cosine(s)) for s in (0, 5, 10, 60, 110)]
    assert values == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9)
    constant = optimization.learning_rate_schedule("constant", 1e-3, 10, 110)
    assert [float(constant(s)) for s in (0, 5, 10, 60, 110)] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 1e-3])
    assert optimization.learning_rate_schedule("constant", 1e-3, 0, 110) == 1e-3


def test_clip_norm_clips_the_global_gradient_norm_before_adam_and_adam_beta2_is_passed_on(clips_dataset, tmp_path):
    import keras
    import tensorflow as tf

    def first_update(clip_norm):
        weights = tf.Variable([0.0, 0.0])
        optimizer = keras.optimizers.Adam(1.0, epsilon=1e-7, global_clipnorm=clip_norm)
        optimizer.apply([tf.constant([3.0, 4.0])], [weights])  # Global norm 5.
        return -weights.numpy()

    # Keras' Adam moves each weight on its first step by lr * g / (|g| + epsilon / sqrt(1 - beta_2)),
    # about lr for any g well above that epsilon...
    epsilon = 1e-7 / np.sqrt(1 - 0.999)
    assert first_update(None) == pytest.approx(np.array([3.0, 4.0]) / (np.array([3.0, 4.0]) + epsilon), rel=1e-5)
    # ...so clipping shows where the clipped gradient meets epsilon: g = [3, 4] * 5e-6 / 5.
    clipped = np.array([3e-6, 4e-6])
    assert first_update(5e-6) == pytest.approx(clipped / (clipped + epsilon), rel=1e-3)
    # And task wires --clip_norm and --adam_beta2 into the optimizer it trains with.
    default = optimization.make_optimizer(task.parse_args(["--data=d", "--job_dir=j"]))
    assert default.global_clipnorm is None and default.beta_2 == 0.999 and options.DEFAULT_CLIP_NORM == 0
    chosen = optimization.make_optimizer(
        task.parse_args(["--data=d", "--job_dir=j", "--clip_norm=0.5", "--adam_beta2=0.99"])
    )
    assert chosen.global_clipnorm == 0.5 and chosen.beta_2 == 0.99
    scaled = optimization.make_optimizer(
        task.parse_args(["--data=d", "--job_dir=j", "--mixed_precision", "--adam_beta2=0.9"])
    )
    assert scaled.inner_optimizer.beta_2 == 0.9
    with pytest.raises(ValueError, match="adam_beta2"):
        task.run(_args(clips_dataset, tmp_path / "job", "--adam_beta2=1"))


def test_evaluate_scores_an_export_as_the_training_loop_does(clips_dataset, tmp_path, capsys):
    from trainer import evaluate

    description = contract.read_description(str(clips_dataset))
    windows = description.splits[contract.VALIDATION].windows
    batch = next(b for b in range(7, 1, -1) if windows % b == 0)  # Whole batches: the loop drops a remainder.
    result = task.run(_args(clips_dataset, tmp_path, "--steps=4", "--eval_every=4", f"--batch_size={batch}",
                            f"--eval_batches={windows // batch}", "--summary_audio_secs=0"))  # fmt: skip
    scored = evaluate.evaluate(str(tmp_path), str(clips_dataset), batch_size=5, progress=False)
    assert scored.windows == windows and scored.model_step == 4
    assert scored.loss_nats == pytest.approx(result.validation_loss_nats, rel=1e-5)
    assert scored.loss_bits == pytest.approx(scored.loss_nats / np.log(2))
    assert 0 < scored.entropy_bits <= 8
    assert evaluate.main(["--model", str(tmp_path / "export"), "--data", str(clips_dataset), "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert f"over {windows} windows" in out and json.loads(out[out.index("{") :])["windows"] == windows


def test_evaluate_refuses_data_at_another_sample_rate(trained_job, tmp_path):
    from pipelines import preprocess
    from trainer import evaluate

    other = tmp_path / "data16k"
    preprocess.run([f"--output={other}", "--window_samples=400", "--direct_num_workers=1",
                    "--direct_running_mode=in_memory"])  # fmt: skip
    with pytest.raises(contract.DatasetMismatchError, match="sample_rate=16000 Hz, the model has sample_rate=8000"):
        evaluate.evaluate(str(trained_job), str(other), progress=False)


def test_tensorboard_gets_audio_from_the_fast_sampler_and_its_spectrogram(clips_dataset, tmp_path):
    import tensorflow as tf

    task.run(_args(clips_dataset, tmp_path, "--steps=2", "--eval_every=2", "--summary_audio_secs=0.25"))
    tags = {}
    for path in (tmp_path / "logs" / "validation").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = value
    assert {"generated", "generated_spectrogram", "loss_nats"} <= set(tags)
    wav = tf.audio.decode_wav(tf.make_ndarray(tags["generated"].tensor)[0][0])
    assert wav.sample_rate.numpy() == 8000 and wav.audio.shape == (2000, 1)  # 0.25 s at the data's rate.
    image = tf.image.decode_png(tf.make_ndarray(tags["generated_spectrogram"].tensor)[2])
    assert image.shape[0] > 200 and image.shape[1] > 600


def _real_codes(samples=16000):
    """The mu-law codes of `samples` samples of a real clip (Awakening, mono, at its own rate), from its second."""
    with open(CLIPS["mp3_44k"], "rb") as f:
        blocks = [audio.downmix(block) for _, block in audio.decode_pyav(f)]
    return contract.mu_law_encode(np.concatenate(blocks)[samples : 2 * samples]).astype(np.int32)


def _level_db(codes):
    return 10 * np.log10(np.mean(contract.mu_law_decode(codes) ** 2))


def test_random_gain_changes_the_level_within_its_range_without_gaps_or_clipping():
    import tensorflow as tf

    codes = _real_codes()
    seed = tf.constant([0, 7], tf.int64)
    # A gain of ~0 dB gives back the codes: each is re-drawn within its own quantization interval.
    np.testing.assert_array_equal(data.random_gain(tf.constant(codes), 1e-6, seed).numpy(), codes)
    changes = []
    for s in range(8):
        out = data.random_gain(tf.constant(codes), 6.0, tf.constant([s, 7], tf.int64)).numpy()
        changes.append(_level_db(out) - _level_db(codes))
        # Louder codes leave no gaps: every code between the extremes used is used.
        used = np.unique(out)
        assert len(used) == used[-1] - used[0] + 1
    assert all(-6.1 < change < 6.1 for change in changes) and max(changes) - min(changes) > 2.0
    # Audio at full scale is made at most as loud as its peak allows (+0.19 dB, code 255's interval), never clipped:
    # +6 dB would clip every sample above half scale.
    amplitudes = contract.mu_law_decode(codes)
    full_scale = contract.mu_law_encode(amplitudes / np.abs(amplitudes).max()).astype(np.int32)
    assert np.sum(np.abs(contract.mu_law_decode(full_scale)) > 0.5) > 100
    for s in range(8):
        out = data.random_gain(tf.constant(full_scale), 6.0, tf.constant([s, 7], tf.int64)).numpy()
        assert _level_db(out) <= _level_db(full_scale) + 0.25
        # Only samples within a code of the extremes reach them (the peak may rise by those 0.19 dB).
        assert np.sum((out == 0) | (out == 255)) <= np.sum((full_scale <= 1) | (full_scale >= 254))


def test_random_polarity_inverts_the_waveform_of_about_half_the_crops():
    import tensorflow as tf

    codes = _real_codes(4000)
    inverted = 0
    for s in range(40):
        out = data.random_polarity_inversion(tf.constant(codes), tf.constant([s, 7], tf.int64)).numpy()
        if not np.array_equal(out, codes):
            np.testing.assert_array_equal(out, 255 - codes)
            np.testing.assert_allclose(contract.mu_law_decode(out), -contract.mu_law_decode(codes), rtol=1e-4)
            inverted += 1
    assert 10 <= inverted <= 30


def test_the_shuffle_buffer_mixes_the_tracks_that_the_pipeline_wrote_one_after_another(clips_dataset, tmp_path):
    import tensorflow as tf

    description = contract.read_description(str(clips_dataset))
    paths = data.split_paths(str(clips_dataset), description, contract.TRAIN)
    spec = {key: tf.io.FixedLenFeature([], tf.string) for key in (contract.AUDIO_FEATURE, contract.TRACK_ID_FEATURE)}
    track_of, file_order = {}, []
    for path in sorted(paths):
        for record in tf.data.TFRecordDataset(path):
            example = tf.io.parse_single_example(record, spec)
            track_of[example[contract.AUDIO_FEATURE].numpy()] = example[contract.TRACK_ID_FEATURE].numpy()
            file_order.append(example[contract.TRACK_ID_FEATURE].numpy())
    tracks = len(set(file_order))
    # What the buffer is for: each shard holds its tracks' windows one track after another.
    runs = 1 + sum(a != b for a, b in zip(file_order[:-1], file_order[1:], strict=True))
    assert tracks == 3 and runs <= tracks + len(paths) - 1

    def first_batch_tracks(buffer_windows):
        dataset = data.make_dataset(paths, description.window_samples, 32, seed=3,
                                    shuffle_buffer_windows=buffer_windows)  # fmt: skip
        return [track_of[codes.astype(np.uint8).tobytes()] for codes in next(iter(dataset)).numpy()]

    assert data.default_shuffle_buffer_windows(description.window_samples) >= len(file_order)
    mixed = first_batch_tracks(None)
    assert len(set(mixed)) == tracks and max(mixed.count(t) for t in set(mixed)) < 24
    assert len(set(first_batch_tracks(8))) < tracks  # A small buffer: a batch of the first track(s) read.
    with pytest.raises(ValueError, match="shuffle_buffer_windows"):
        task.run(_args(clips_dataset, tmp_path / "job", "--shuffle_buffer_windows=0"))


def test_gain_and_polarity_augmentation_are_part_of_the_deterministic_input_stream(clips_dataset, tmp_path):
    description = contract.read_description(str(clips_dataset))
    paths = data.split_paths(str(clips_dataset), description, contract.TRAIN)

    def batches(gain_db, polarity=False, skip=0):
        dataset = data.make_dataset(paths, description.window_samples, 4, seed=3, gain_db=gain_db,
                                    random_polarity=polarity, skip_windows=skip)  # fmt: skip
        return [batch.numpy() for batch in dataset.take(3)]

    plain, augmented, both = batches(0.0), batches(6.0), batches(6.0, polarity=True)
    assert not np.array_equal(np.stack(plain), np.stack(augmented))
    assert not np.array_equal(np.stack(augmented), np.stack(both))
    np.testing.assert_array_equal(np.stack(batches(6.0, True)), np.stack(both))  # Resumes see the same draws.
    np.testing.assert_array_equal(batches(6.0, True, skip=4)[0], both[1])
    with pytest.raises(ValueError, match="gain_augmentation_db"):
        task.run(_args(clips_dataset, tmp_path / "job", "--gain_augmentation_db=-1"))


# ---------------------------------------------------------------------------------------------------------------
# Faults: a kill during the export, a finished job run again, damaged shards.


@pytest.mark.slow
def test_a_job_killed_during_its_export_then_run_again_exports_and_exits_0(clips_dataset, tmp_path, capsys):
    import signal
    import time

    from sampler import loading

    job_dir = tmp_path / "job"
    argv = _args(clips_dataset, job_dir, "--steps=2", "--checkpoint_every=2", "--summary_audio_secs=0")
    job = subprocess.Popen([sys.executable, "-m", "trainer.task", *argv], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    export_dir = job_dir / contract.EXPORT_DIR
    deadline = time.monotonic() + 300
    while job.poll() is None and not export_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job ended before its export began"
    assert not (export_dir / contract.MODEL_CONFIG_FILE).exists()  # Killed before the export was whole.
    (job_dir / "checkpoints" / "ckpt-3_temp").mkdir()  # What TensorFlow leaves when a checkpoint write is killed.

    assert contract.run_command(task._main, argv) == 0  # The finished job, run again: no step runs.
    out = capsys.readouterr().out
    assert "already at step 2 of --steps 2: no step ran" in out and f"Exported to {export_dir}" in out
    assert loading.load(str(job_dir)).config.step == 2
    assert not (job_dir / "checkpoints" / "ckpt-3_temp").exists()
    assert not [name for name in os.listdir(export_dir) if name.endswith(".tmp")]


def _damaged_copy(dataset, tmp_path, damage):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    shard = copy / contract.read_description(str(copy)).splits[contract.TRAIN].files[0]
    damage(shard)
    return copy, shard


def _flip_a_byte(shard):
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_a_byte, "corrupt after"),
        (lambda shard: shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2 + 7]), "corrupt after"),
        (lambda shard: shard.unlink(), "listed in dataset.json but missing"),
        (lambda shard: (shard.unlink(), shard.mkdir()), "is a directory, not a shard"),
    ],
    ids=["bytes-flipped", "truncated-mid-record", "deleted", "a-directory"],
)
def test_a_damaged_shard_is_named_with_the_check_to_run(damage, message, clips_dataset, tmp_path):
    data_dir, shard = _damaged_copy(clips_dataset, tmp_path, damage)
    with pytest.raises(contract.CommandError if "corrupt" in message else contract.DatasetMismatchError) as raised:
        task.run(_args(data_dir, tmp_path / "job", "--steps=200", "--summary_audio_secs=0", "--eval_every=1000"))
    text = str(raised.value)
    assert str(shard) in text and message in text and f"python -m pipelines.verify {data_dir}" in text


def test_an_empty_shard_and_counts_that_disagree_are_warned_of(clips_dataset, tmp_path):
    data_dir, shard = _damaged_copy(clips_dataset, tmp_path, lambda shard: shard.write_bytes(b""))
    warnings = data.check_shard_files(str(data_dir), contract.read_description(str(data_dir)))
    assert any(f"{shard} is empty" in w for w in warnings)
    assert any("fewer than the" in w and "windows dataset.json lists need" in w for w in warnings)
    assert data.check_shard_files(str(clips_dataset), contract.read_description(str(clips_dataset))) == []


def test_resuming_with_another_preset_names_both_and_what_to_do(trained_job, clips_dataset, tmp_path, caplog):
    job_dir = tmp_path / "job"
    shutil.copytree(trained_job, job_dir)
    argv = [f"--data={clips_dataset}", f"--job_dir={job_dir}", "--steps=41", "--summary_audio_secs=0"]
    with pytest.raises(contract.DatasetMismatchError, match="trains the tiny: 16 residual.*--preset asks for the "
                       "default: 32 residual.*Pass --preset tiny to resume it, or use another --job_dir"):  # fmt: skip
        task.run([*argv, "--preset=default"])
    os.remove(job_dir / "job.json")  # A job dir from before job.json: its checkpoints tell.
    from pipelines import preprocess

    long_windows = tmp_path / "long-windows"  # Long enough for the default preset's receptive field.
    preprocess.run([f"--output={long_windows}", f"--input={CLIPS['mp3_22k_mono']}", "--sample_rate=8000",
                    "--window_samples=4000", "--validation_fraction=0", "--direct_num_workers=1",
                    "--direct_running_mode=in_memory"])  # fmt: skip
    with pytest.raises(contract.DatasetMismatchError, match="checkpoints hold another model than the default"):
        task.run([f"--data={long_windows}", f"--job_dir={job_dir}", "--steps=41", "--preset=default"])
    # --model still names a preset, with a word that it is now --preset.
    assert options.parse_args([*argv, "--model=tiny"]).preset == "tiny"
    assert "--model is deprecated in trainer.task" in caplog.text


def test_the_readmes_cpu_recipe_is_the_benchmarks_best_configuration():
    import importlib.util
    import re
    import shlex

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    block = re.search(r"<!-- cpu-recipe -->\s*```bash\n(.*?)```\s*<!-- /cpu-recipe -->", readme, re.S).group(1)
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:3] == ["python", "-m", "trainer.task"]
    spec = importlib.util.spec_from_file_location("heldout", os.path.join(root, "benchmarks", "heldout_benchmark.py"))
    heldout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heldout)
    benchmark = options.parse_args(
        heldout.training_flags(heldout.CPU_RECIPE, heldout.CPU_RECIPE_STEPS, 0, "data/", "runs/cpu")
    )
    recipe = options.parse_args(words[3:])
    recipe.preset = recipe.preset or presets.DEFAULT_PRESET  # What a new job dir trains without --preset.
    # Bookkeeping, not training: where things go, how often to stop for them. The benchmark's shuffle
    # buffer (4,096 windows) holds its whole dataset (3,819), as the default buffer does for datasets
    # up to 16,777 windows; a user's larger dataset is better mixed by the default.
    ignored = {"data", "job_dir", "eval_every", "checkpoint_every", "summary_audio_secs", "seed",
               "shuffle_buffer_windows", "model"}  # fmt: skip
    differing = {
        k: (v, getattr(benchmark, k))
        for k, v in vars(recipe).items()
        if k not in ignored and v != getattr(benchmark, k)
    }
    assert differing == {}
    assert heldout.CONFIGS[heldout.CPU_RECIPE].count("--shuffle_buffer_windows=4096") == 1


def test_the_export_carries_a_model_card_with_the_terms_of_its_training_data(trained_job, clips_dataset):
    from trainer import card

    export_dir = trained_job / contract.EXPORT_DIR
    text = (export_dir / card.MODEL_CARD_FILE).read_text()
    assert text.startswith("---\nlibrary_name: keras\n")
    # The bundled clips: four tracks under CC BY-SA 3.0 (their tags say so), one held out.
    assert "| CC-BY-SA-3.0 | 4 |" in text and "Of the 4 tracks" in text
    assert "- 4 tracks (0.009 h) ask for share-alike" in text and "- 0 tracks (0.000 h) ask for non-commercial" in text
    assert "Steps: 40." in text and "Held-out loss (the validation split" in text and "nats (" in text
    assert "receptive field" in text.lower() and "Preset `tiny`" in text
    assert "claims no licence for the model's outputs" in text and "for you to judge" in text
    # The attribution the licences ask for travels with the model.
    assert contract.read_attribution(str(export_dir)) == contract.read_attribution(str(clips_dataset))
