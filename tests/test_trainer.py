"""The WaveNet trainer on CPU: real strategies, real preprocessed clips, a few steps.

Its input is tested in tests/test_data.py, its loop (checkpoints, resumption, SIGTERM, summaries) in
tests/test_loop.py.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines import contract
from tests.helpers import CLIPS, run_tf_config_workers, train_args
from trainer import compat, data, distribute, optimization, options, presets, statistics, task
from trainer.model import PRESETS, WaveNetConfig, build_wavenet, scored_logits

TINY = PRESETS["tiny"]


def test_receptive_field_is_computed_from_the_dilations():
    assert PRESETS["default"].receptive_field == 2048
    assert PRESETS["large"].receptive_field == 4094
    assert TINY.receptive_field == 1 + 63 + 1
    assert WaveNetConfig(filter_width=3, dilations=(1, 2, 4)).receptive_field == 2 * 7 + 3


@pytest.mark.parametrize("filter_width", [2, 3])
def test_model_is_causal_and_sees_exactly_its_receptive_field(filter_width):
    import keras

    wavenet_config = WaveNetConfig(
        quantization_channels=32, residual_channels=8, dilation_channels=8, skip_channels=8,
        filter_width=filter_width, dilations=(1, 2, 4, 8),
    )  # fmt: skip
    keras.utils.set_random_seed(1)
    model = build_wavenet(wavenet_config)
    for weight in model.weights:  # Non-zero biases too, so nothing hides behind a zero.
        weight.assign(np.random.default_rng(2).normal(0, 0.3, weight.shape).astype("float32"))
    codes = np.random.default_rng(0).integers(0, 32, (1, 200)).astype("int32")
    changed = codes.copy()
    changed[0, 100] = (codes[0, 100] + 7) % 32
    a, b = np.asarray(model(codes)), np.asarray(model(changed))
    differs = np.abs(a - b).max(axis=-1)[0] > 1e-6
    rf = wavenet_config.receptive_field
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

    wavenet_config = WaveNetConfig(
        quantization_channels=32, residual_channels=8, dilation_channels=6, skip_channels=12,
        filter_width=filter_width, dilations=(1, 2, 4, 8, 1, 2), condition_values=condition_values,
    )  # fmt: skip
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_wavenet(wavenet_config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(2)
    for weight in model.weights:  # Non-zero biases too, so a missed bias shows.
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    rf = wavenet_config.receptive_field
    codes = tf.constant(rng.integers(0, 32, (3, rf + 40)), tf.int32)
    condition = tf.constant([2, 0, 1], tf.int32) if condition_values else None
    inputs = [codes, condition] if condition_values else codes

    with tf.GradientTape(persistent=True) as tape:
        keras_logits = tf.cast(model(inputs)[:, rf - 1 :], tf.float32)
        scored = scored_logits(model, wavenet_config, codes, condition)
        keras_loss, scored_loss = tf.reduce_sum(keras_logits**2), tf.reduce_sum(scored**2)
    assert scored.dtype == tf.float32 and scored.shape == (3, 41, 32)
    # float16 rounding: the Keras model's own float16 gradients differ from its float32 ones by several 1e-3
    # of their largest value here, and two float16 computations in different orders by up to ~3e-2.
    tolerance = 1e-5 if policy == "float32" else 5e-2
    np.testing.assert_allclose(scored.numpy(), keras_logits.numpy(), rtol=tolerance, atol=tolerance)
    expected = tape.gradient(keras_loss, model.trainable_variables)
    got = tape.gradient(scored_loss, model.trainable_variables)
    for variable, want, have in zip(model.trainable_variables, expected, got, strict=True):
        want, have = tf.convert_to_tensor(want), tf.convert_to_tensor(have)  # Embeddings' are IndexedSlices.
        scale = float(tf.reduce_max(tf.abs(want))) or 1.0
        np.testing.assert_allclose(have.numpy() / scale, want.numpy() / scale, atol=tolerance, err_msg=variable.path)
    with pytest.raises(ValueError, match="receptive field|>= "):
        scored_logits(model, wavenet_config, codes[:, : rf - 1], condition)


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
            train_args(clips_dataset, tmp_path / name, "--steps=3", "--summary_audio_secs=0"),
            dataset_override=fixed,
            strategy_override=strategy,
        )
    one = [loss for _, loss in results["one"].losses]
    mirrored = [loss for _, loss in results["mirrored"].losses]
    assert len(one) == 3 and one[0] != one[2]  # Three steps that changed the weights...
    assert mirrored == pytest.approx(one, rel=1e-5)  # ...identically on one device and two replicas.


@pytest.mark.slow
def test_validation_loss_falls_below_the_code_histogram_entropy(clips_dataset, tmp_path):
    description = contract.read_description(str(clips_dataset))
    train_paths = data.split_paths(str(clips_dataset), description, contract.TRAIN)
    entropy_nats = statistics.code_entropy_bits(train_paths, description.window_samples, 256) * np.log(2)
    result = task.run(
        train_args(
            clips_dataset, tmp_path, "--steps=300", "--eval_every=300", "--batch_size=16", "--learning_rate=3e-3"
        )
    )
    assert description.splits["validation"].tracks == 1 and description.splits["train"].tracks == 3
    # A held-out song, predicted a nat per sample better than the code histogram of the training songs.
    assert result.validation_loss_nats < entropy_nats - 1.0
    model_config = contract.read_model_config(str(tmp_path / "export"))
    assert model_config.sample_rate == 8000 and model_config.receptive_field == TINY.receptive_field
    assert os.path.exists(tmp_path / "logs" / "validation")


def test_windows_shorter_than_the_receptive_field_are_refused(clips_dataset, tmp_path):
    with pytest.raises(contract.DatasetMismatchError, match=r"window_samples=400, shorter than the model needs"):
        task.run([f"--data={clips_dataset}", f"--job_dir={tmp_path}", "--model=default"])


def test_sample_rate_differing_from_the_trained_model_is_refused(clips_dataset, tmp_path):
    contract.write_model_config(str(tmp_path / "export"), contract.ModelConfig(wavenet_config=TINY, sample_rate=16000))
    with pytest.raises(contract.DatasetMismatchError, match=r"sample_rate=8000 Hz, the model has sample_rate=16000 Hz"):
        task.run(train_args(clips_dataset, tmp_path))


@pytest.mark.slow
def test_multi_worker_training_is_one_job_with_one_export(two_worker_job):
    """Two TF_CONFIG workers train in step: one loss, the chief's export named by both, the other's files removed."""
    job_dir, output = two_worker_job.job_dir, two_worker_job.output
    losses = re.findall(r"Trained to step 3: train loss ([\d.]+)", output)
    assert len(losses) == 2 and losses[0] == losses[1], output
    assert output.count(f"Exported to {job_dir / contract.EXPORT_DIR}\n") == 2
    assert contract.read_model_config(str(job_dir / contract.EXPORT_DIR)).step == 3
    assert sorted(os.listdir(job_dir)) == ["checkpoints", "export", "job.json", "logs"]  # No workers/ left.


@pytest.mark.slow
def test_a_worker_resumes_from_the_chiefs_checkpoint_never_from_its_scratch_of_an_earlier_run(
    two_worker_job, clips_dataset, tmp_path
):
    """TensorFlow's preemption handler restores the latest checkpoint in its manager's directory, a worker's
    scratch (JOB_DIR/workers/worker_K/): what a killed run left there is removed before the worker restores."""
    job_dir = tmp_path / "job"
    # A killed run's scratch of worker 1 at step 3, in a job dir whose chief has saved nothing.
    shutil.copytree(two_worker_job.job_dir / "checkpoints", job_dir / "workers" / "worker_1" / "checkpoints")
    statuses, output = run_tf_config_workers(train_args(clips_dataset, job_dir, "--steps=3", "--strategy=auto"))
    assert statuses == [0, 0], output
    # Both started at step 0, as the reference job did: the same steps, the same losses.
    losses = re.findall(r"Trained to step 3: train loss ([\d.]+)", output)
    assert losses == re.findall(r"Trained to step 3: train loss ([\d.]+)", two_worker_job.output), output
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
    assert sorted(os.listdir(ml / "model")) == sorted(
        [contract.ATTRIBUTION_FILE, "MODEL_CARD.md", contract.MODEL_CONFIG_FILE, contract.MODEL_FILE]
    )
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

    result = task.run(train_args(clips_dataset, tmp_path, "--steps=3", "--eval_every=3", flag))
    assert keras.mixed_precision.global_policy().name == "float32"  # Global state left as found.
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[2] < losses[0]
    model = keras.saving.load_model(tmp_path / "export" / "model.keras")
    expected_policy = "mixed_float16" if flag == "--mixed_precision" else "float32"
    assert model.get_layer("gate_0").dtype_policy.name == expected_policy


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
    with pytest.raises(SystemExit):  # Refused by the parser, as every value that cannot work (see below).
        task.run(train_args(clips_dataset, tmp_path / "job", "--adam_beta2=1"))


def test_evaluate_scores_an_export_as_the_training_loop_does(clips_dataset, tmp_path, capsys):
    from trainer import evaluate

    description = contract.read_description(str(clips_dataset))
    windows = description.splits[contract.VALIDATION].windows
    batch = next(b for b in range(7, 1, -1) if windows % b == 0)  # Whole batches: the loop drops a remainder.
    result = task.run(train_args(clips_dataset, tmp_path, "--steps=4", "--eval_every=4", f"--batch_size={batch}",
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


# ---------------------------------------------------------------------------------------------------------------
# Faults: a kill during the export, a finished job run again (damaged shards: tests/test_data.py).


@pytest.mark.slow
def test_a_job_killed_during_its_export_then_run_again_exports_and_exits_0(clips_dataset, tmp_path, capsys):
    from sampler import loading

    job_dir = tmp_path / "job"
    argv = train_args(clips_dataset, job_dir, "--steps=2", "--checkpoint_every=2", "--summary_audio_secs=0")
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
    assert loading.load(str(job_dir)).model_config.step == 2
    assert not (job_dir / "checkpoints" / "ckpt-3_temp").exists()
    assert not [name for name in os.listdir(export_dir) if name.endswith(".tmp")]


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
    # What made the model, named as dataset.json names what made the data (`contract.software`).
    made_data = contract.read_description(str(clips_dataset)).runs[-1].software
    assert made_data.startswith("wavenet-music-toolkit ") and f"- {made_data}; exported" in text
    # The attribution the licences ask for travels with the model.
    assert contract.read_attribution(str(export_dir)) == contract.read_attribution(str(clips_dataset))


@pytest.mark.parametrize(
    "option",
    ["--steps=-5", "--steps=0", "--batch_size=0", "--checkpoint_every=0", "--eval_every=0", "--eval_batches=0",
     "--learning_rate=0", "--learning_rate=nan", "--summary_audio_secs=-1", "--crop_samples=0", "--adam_beta2=1",
     "--gain_augmentation_db=-1", "--shuffle_buffer_windows=0", "--steps_per_loop=0", "--warmup_steps=-1",
     "--clip_norm=inf", "--seed=-1"],
)  # fmt: skip
def test_a_value_that_cannot_work_is_refused_by_the_parser_before_the_job_dir_exists(
    option, clips_dataset, tmp_path, capsys
):
    job_dir = tmp_path / "new"
    with pytest.raises(SystemExit) as exit:
        task.run([f"--data={clips_dataset}", f"--job_dir={job_dir}", "--preset=tiny", option])
    assert exit.value.code == 2 and f"error: argument {option.split('=')[0]}: must be " in capsys.readouterr().err
    assert not job_dir.exists()


@pytest.mark.parametrize(
    "option, message",
    [("--crop_samples=10", "--crop_samples=10 must lie between"), ("--condition_on=genre", "nothing to condition on")],
    ids=["crop-below-the-receptive-field", "condition-on-unlabelled-data"],
)
def test_options_the_data_refuses_are_refused_before_the_job_dir_is_written(option, message, clips_dataset, tmp_path):
    job_dir = tmp_path / "new"
    with pytest.raises(contract.DatasetMismatchError, match=message):
        task.run([f"--data={clips_dataset}", f"--job_dir={job_dir}", "--preset=tiny", "--steps=1", option])
    assert not job_dir.exists() or os.listdir(job_dir) == []


@pytest.mark.slow
def test_deterministic_runs_give_bit_identical_losses(tmp_path):
    """Without --deterministic, these two runs of the default preset differed from their third step here."""
    from pipelines import preprocess

    data_dir = tmp_path / "long-windows"  # Long enough for the default preset's receptive field.
    preprocess.run([f"--output={data_dir}", f"--input={CLIPS['mp3_22k_mono']}", "--sample_rate=8000",
                    "--window_samples=4000", "--validation_fraction=0", "--direct_num_workers=1",
                    "--direct_running_mode=in_memory"])  # fmt: skip
    # Each in a process of its own: the option sets TensorFlow's threads, which a process fixes when TensorFlow starts.
    script = "import sys; from trainer import task; print([loss for _, loss in task.run(sys.argv[1:]).losses])"
    argv = [f"--data={data_dir}", "--batch_size=8", "--crop_samples=4000", "--steps=4", "--steps_per_loop=2",
            "--learning_rate=7e-3", "--summary_audio_secs=0", "--deterministic"]  # fmt: skip
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv, f"--job_dir={tmp_path / f'job-{i}'}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    (first, log), (second, _) = (run.communicate(timeout=600) for run in runs)
    first, second = first.strip().splitlines()[-1], second.strip().splitlines()[-1]
    assert len(json.loads(first)) == 4 and first == second  # Python's float repr is exact: equal text, equal bits.
    # No validation split, as the data was made: said, not advised against.
    assert "holds no validation split, as preprocessed (--validation_fraction 0)" in log
    assert "Preprocess with a larger" not in log
