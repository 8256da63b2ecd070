"""Global conditioning end to end: labelled windows -> a conditioned WaveNet -> clips asked for by label name."""

import glob
import json
import os
import wave

import numpy as np
import pytest

from pipelines import contract, preprocess
from sampler import generate, loading
from trainer import compat, evaluate, task

SAMPLE_RATE = 8000
LOW, HIGH = "low", "high"


def noise(colour, seconds, seed):
    """Noise whose energy sits below 1 kHz (low) or above 3 kHz (high) at 8 kHz: the same spectrum mirrored.

    One-pole low-pass noise (pole 0.9); multiplying by (-1)^n moves its spectrum from 0 Hz to 4 kHz.
    """
    import scipy.signal

    x = scipy.signal.lfilter([1.0], [1.0, -0.9], np.random.default_rng(seed).normal(size=seconds * SAMPLE_RATE))
    x = 0.4 * x / np.abs(x).max()
    return x * (-1.0) ** np.arange(x.size) if colour == HIGH else x


def low_band_share(audio):
    """Share of a clip's energy below 2 kHz (half the band at 8 kHz)."""
    power = np.abs(np.fft.rfft(audio - np.mean(audio))) ** 2
    return float(power[np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE) < 2000].sum() / power.sum())


def write_wav(path, audio):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def read_wav(path):
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32767


@pytest.fixture(scope="module")
def labelled_data(tmp_path_factory):
    """music/low/*.wav and music/high/*.wav (two 6 s tracks each), preprocessed with --label_from genre=parent_dir."""
    root = tmp_path_factory.mktemp("colours")
    for colour in (LOW, HIGH):
        (root / colour).mkdir()
        for seed in (1, 2):
            write_wav(root / colour / f"{colour}-{seed}.wav", noise(colour, 6, seed + (10 if colour == HIGH else 0)))
    output = tmp_path_factory.mktemp("colours-data")
    preprocess.run(
        [
            f"--input={root}",
            f"--output={output}",
            "--label_from=genre=parent_dir",
            "--sample_rate=8000",
            "--window_samples=1000",
            "--quantization_channels=64",
            "--validation_fraction=0",
            "--direct_num_workers=1",
            "--direct_running_mode=in_memory",
        ]  # fmt: skip
    )
    return output


@pytest.fixture(scope="module")
def conditioned_job(labelled_data, tmp_path_factory):
    """A tiny WaveNet conditioned on genre, trained for 150 steps (about half a minute on 2 cores)."""
    job_dir = tmp_path_factory.mktemp("conditioned-job")
    task.run(
        [
            f"--data={labelled_data}",
            f"--job_dir={job_dir}",
            "--preset=tiny",
            "--condition_on=genre",
            "--steps=150",
            "--batch_size=16",
            "--crop_samples=400",
            "--learning_rate=3e-3",
            "--eval_every=150",
            "--summary_audio_secs=0.05",
        ]  # fmt: skip
    )
    return job_dir


@pytest.mark.slow
def test_each_label_generates_where_its_training_audio_has_its_energy(conditioned_job, tmp_path, capsys):
    paths = generate.run(
        [
            "--model",
            str(conditioned_job),
            "--seconds",
            "0.5",
            "--num_clips",
            "6",
            "--condition",
            "low,HIGH",
            "--output",
            str(tmp_path / "clip.wav"),
            "--engine",
            "cpu",
        ]  # fmt: skip
    )
    shares = [low_band_share(read_wav(p)) for p in paths]
    assert all(share > 0.8 for share in shares[0::2]), shares  # low: the energy below 2 kHz
    assert all(share < 0.2 for share in shares[1::2]), shares  # high: above
    out = capsys.readouterr().out
    assert "clip-000.wav (genre low)" in out and "clip-001.wav (genre high)" in out  # HIGH matched case-insensitively.
    # The xla engine, one label per clip of one batch likewise.
    generator = loading.load(str(conditioned_job), engine="xla")
    codes = generator.generate(
        4000, batch_size=2, seed=3, conditions=generator.model_config.condition_indices([HIGH, LOW])
    )
    high, low = (low_band_share(contract.mu_law_decode(c, 64)) for c in codes)
    assert low > 0.8 and high < 0.2, (low, high)


@pytest.mark.slow
def test_the_export_records_the_kind_and_its_vocabulary(conditioned_job, trained_job):
    with open(os.path.join(conditioned_job, "export", contract.MODEL_CONFIG_FILE)) as f:
        raw = json.load(f)
    assert raw["condition"] == {"kind": "genre", "vocabulary": ["unknown", "high", "low"]}
    assert raw["format_version"] == contract.MODEL_FORMAT_VERSION and raw["model"]["condition_values"] == 3
    # An unconditioned model's config is as it was before conditioning existed.
    with open(os.path.join(trained_job, "export", contract.MODEL_CONFIG_FILE)) as f:
        plain = json.load(f)
    assert plain["format_version"] == contract.UNCONDITIONED_MODEL_FORMAT_VERSION
    assert "condition" not in plain and "condition_values" not in plain["model"]


@pytest.mark.slow
def test_audio_summaries_hold_one_clip_per_label(conditioned_job):
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(conditioned_job, "logs", "validation", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"generated/genre=high", "generated/genre=low"} <= tags
    assert {"generated_spectrogram/genre=high", "generated_spectrogram/genre=low"} <= tags


@pytest.mark.slow
def test_sampler_refuses_names_the_model_does_not_know(conditioned_job, trained_job, tmp_path):
    common = ["--seconds", "0.01", "--output", str(tmp_path / "x.wav")]
    with pytest.raises(
        ValueError, match="'jazz' is not a genre this model knows; it was trained on 3: 'unknown', 'high'"
    ):
        generate.run(["--model", str(conditioned_job), "--condition", "jazz", *common])
    with pytest.raises(ValueError, match="conditioned on genre: give --condition, one of unknown, high, low"):
        generate.run(["--model", str(conditioned_job), *common])
    with pytest.raises(ValueError, match="trained without --condition_on"):
        generate.run(["--model", str(trained_job), "--condition", "low", *common])


@pytest.mark.slow
def test_evaluation_per_label(conditioned_job, labelled_data):
    scored = evaluate.evaluate(str(conditioned_job), str(labelled_data), split=contract.TRAIN, progress=False)
    counts = contract.read_description(str(labelled_data)).labels["genre"]
    assert scored.label_kind == "genre"
    assert {value: s["windows"] for value, s in scored.by_label.items()} == {v: c.windows for v, c in counts.items()}
    windows = sum(s["windows"] for s in scored.by_label.values())
    mean = sum(s["loss_nats"] * s["windows"] for s in scored.by_label.values()) / windows
    assert mean == pytest.approx(scored.loss_nats, rel=1e-5)
    assert all(s["loss_nats"] < scored.entropy_nats for s in scored.by_label.values())


def test_conditioning_needs_labelled_data(clips_dataset, tmp_path):
    with pytest.raises(contract.DatasetMismatchError, match="every window of the dataset has genre 'unknown'"):
        task.run([f"--data={clips_dataset}", f"--job_dir={tmp_path}", "--preset=tiny", "--condition_on=genre"])


@pytest.mark.slow
def test_a_resumed_job_keeps_its_label_and_vocabulary(labelled_data, tmp_path):
    job_dir = tmp_path / "job"
    common = [f"--data={labelled_data}", f"--job_dir={job_dir}", "--preset=tiny", "--steps=4", "--batch_size=4",
              "--crop_samples=200", "--summary_audio_secs=0", "--checkpoint_every=2"]  # fmt: skip
    task.run([*common, "--condition_on=genre"], stop_after_steps=2)
    with open(job_dir / "condition.json") as f:
        assert json.load(f) == {"kind": "genre", "vocabulary": ["unknown", "high", "low"]}
    with pytest.raises(contract.DatasetMismatchError, match="pass --condition_on=genre to resume it"):
        task.run(common)
    with pytest.raises(contract.DatasetMismatchError, match="pass --condition_on=genre to resume it"):
        task.run([*common, "--condition_on=artist"])
    result = task.run([*common, "--condition_on=genre"])
    assert result.step == 4 and result.export_dir
    plain = tmp_path / "plain"
    task.run([*common[:1], f"--job_dir={plain}", *common[2:]], stop_after_steps=2)
    with pytest.raises(contract.DatasetMismatchError, match="holds checkpoints of an unconditioned model"):
        task.run([*common[:1], f"--job_dir={plain}", *common[2:], "--condition_on=genre"])


@pytest.mark.slow
def test_walkthrough_two_genres_scraped_trained_and_asked_for(music_site, tmp_path, capsys):
    data, job = tmp_path / "two-genres", tmp_path / "genres"
    preprocess.run(
        [
            f"--scrape_url={music_site.base_url}/genre/Ambient/",
            f"--scrape_url={music_site.base_url}/genre/Electronic/",
            f"--output={data}",
            "--sample_rate=8000",
            "--window_samples=1000",
            "--validation_fraction=0",
            "--requests_per_second=50",
            "--max_retries=3",
            "--direct_num_workers=1",
            "--direct_running_mode=in_memory",
        ]  # fmt: skip
    )
    assert "Windows by genre: Ambient " in capsys.readouterr().out
    task.run([f"--data={data}", f"--job_dir={job}", "--preset=tiny", "--condition_on=genre", "--steps=2",
              "--batch_size=4", "--crop_samples=200", "--summary_audio_secs=0"])  # fmt: skip
    paths = generate.run(["--model", str(job), "--seconds", "0.05", "--num_clips", "2", "--condition",
                          "Ambient,Electronic", "--output", str(tmp_path / "genres.wav")])  # fmt: skip
    assert [os.path.basename(p) for p in paths] == ["genres-000.wav", "genres-001.wav"]
    assert "genres-001.wav (genre Electronic)" in capsys.readouterr().out
    scored = evaluate.evaluate(str(job), str(data), split=contract.TRAIN, progress=False)
    assert scored.label_kind == "genre" and set(scored.by_label) == {"Ambient", "Electronic"}


def test_conditioned_training_on_two_replicas_matches_one_device(labelled_data, tmp_path):
    """(codes, label) batches go through MirroredStrategy as they do on one device."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    codes, conditions = rng.integers(0, 64, (4, 200)).astype("int32"), np.array([1, 2, 2, 1], np.int32)

    def fixed(ctx):
        per_replica = ctx.get_per_replica_batch_size(4)
        return tf.data.Dataset.from_tensor_slices((codes, conditions)).batch(per_replica).repeat()

    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    losses = {}
    for name, strategy in {
        "one": tf.distribute.OneDeviceStrategy(cpus[0]),
        "mirrored": compat.mirrored_strategy(cpus),
    }.items():
        result = task.run(
            [f"--data={labelled_data}", f"--job_dir={tmp_path / name}", "--preset=tiny", "--condition_on=genre",
             "--steps=3", "--batch_size=4", "--crop_samples=200", "--summary_audio_secs=0", "--eval_batches=1"],
            dataset_override=fixed,
            strategy_override=strategy,
        )  # fmt: skip
        losses[name] = [loss for _, loss in result.losses]
    assert len(losses["one"]) == 3 and losses["one"][0] != losses["one"][2]
    assert losses["mirrored"] == pytest.approx(losses["one"], rel=1e-5)
