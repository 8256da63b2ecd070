"""Fast generation: parity with the full model, priming, reproducibility, the CLI, and the whole path."""

import dataclasses
import os
import subprocess
import sys
import wave

import numpy as np
import pytest

from pipelines import contract
from sampler import fast, generate
from tests.conftest import CLIPS
from trainer import model


def _random_wavenet(filter_width, quantization_channels=64, seed=0):
    config = model.WaveNetConfig(
        quantization_channels=quantization_channels, residual_channels=8, dilation_channels=8, skip_channels=16,
        filter_width=filter_width, dilations=(1, 2, 4, 8, 1, 2, 4, 8),
    )  # fmt: skip
    wavenet = model.build_wavenet(config)
    rng = np.random.default_rng(seed)
    for weight in wavenet.weights:  # Non-zero weights and biases everywhere.
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    exported = {
        "model": {**dataclasses.asdict(config), "dilations": list(config.dilations)},
        "receptive_field": config.receptive_field,
        "quantization_channels": quantization_channels,
    }
    return wavenet, fast.FastWaveNet(wavenet, exported), config


@pytest.mark.parametrize("filter_width", [2, 3])
def test_cached_logits_equal_the_full_forward_pass(filter_width):
    wavenet, fast_wavenet, config = _random_wavenet(filter_width)
    codes = np.random.default_rng(1).integers(0, 64, (3, 3 * config.receptive_field)).astype("int32")
    full = np.asarray(wavenet(codes))
    cached = fast_wavenet.teacher_forced_logits(codes)
    assert cached.shape == full.shape
    np.testing.assert_allclose(cached, full, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("filter_width", [2, 3])
def test_priming_fills_the_caches_like_stepping_through_the_primer(filter_width):
    import tensorflow as tf

    wavenet, fast_wavenet, config = _random_wavenet(filter_width)
    primer = np.random.default_rng(2).integers(0, 64, (2, config.receptive_field + 17)).astype("int32")
    state, code, t = fast_wavenet.prime(primer)
    logits, _ = fast_wavenet.step(state, code, tf.constant(t))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(wavenet(primer))[:, -1], atol=2e-5, rtol=1e-5)


def test_same_seed_same_clips_and_codes_in_range():
    _, fast_wavenet, _ = _random_wavenet(2)
    a = fast_wavenet.generate(300, batch_size=3, seed=7, chunk=128)
    b = fast_wavenet.generate(300, batch_size=3, seed=7, chunk=100)
    c = fast_wavenet.generate(300, batch_size=3, seed=8, chunk=128)
    assert a.shape == (3, 300) and a.dtype == np.int32
    assert np.array_equal(a, b)  # Chunking does not change the result.
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # Clips of a batch differ.
    assert a.min() >= 0 and a.max() < 64


def test_sampling_follows_the_model_distribution():
    _, fast_wavenet, _ = _random_wavenet(2, quantization_channels=8)
    codes = fast_wavenet.generate(1, batch_size=4000, seed=3)[:, 0]
    # The first step from silence (mid code, empty queues) has one distribution for every clip.
    logits = fast_wavenet.teacher_forced_logits(np.full((1, 1), 4, np.int32))[0, 0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    observed = np.bincount(codes, minlength=8) / len(codes)
    np.testing.assert_allclose(observed, expected, atol=0.03)


def test_cli_writes_wavs_at_the_model_rate_with_spectrograms(trained_job, tmp_path, capsys):
    paths = generate.run(
        [
            f"--model={trained_job}", "--seconds=0.25", f"--output={tmp_path / 'clip.wav'}", "--num_clips=2",
            "--seed=1", f"--primer={CLIPS['ogg_48k']}", "--spectrogram",
        ]
    )  # fmt: skip
    assert paths == [str(tmp_path / "clip-000.wav"), str(tmp_path / "clip-001.wav")]
    for path in paths:
        with wave.open(path) as f:
            assert (f.getframerate(), f.getnchannels(), f.getsampwidth(), f.getnframes()) == (8000, 1, 2, 2000)
            samples = np.frombuffer(f.readframes(2000), "<i2")
        assert samples.std() > 0
        assert os.path.getsize(os.path.splitext(path)[0] + ".png") > 1000
    assert "Generated 2 clip(s) of 0.25 s at 8000 Hz" in capsys.readouterr().out


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported model"):
        generate.run([f"--model={tmp_path}", "--seconds=1", f"--output={tmp_path / 'x.wav'}"])


@pytest.mark.slow
def test_walkthrough_from_real_clips_to_a_wav(tmp_path):
    """The README's three commands, as a user runs them."""

    def run(*args):
        result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    data, job, clip = tmp_path / "data", tmp_path / "job", tmp_path / "generated.wav"
    run("pipelines.preprocess", f"--output={data}", "--window_samples=4000", "--validation_fraction=0.5")
    run("trainer.task", f"--data={data}", f"--job_dir={job}", "--model=tiny", "--steps=20", "--batch_size=4",
        "--summary_audio_secs=0.01", "--eval_every=20")  # fmt: skip
    out = run("sampler.generate", f"--model={job}", "--seconds=0.5", f"--output={clip}")
    assert "x real time" in out
    with wave.open(str(clip)) as f:
        assert f.getframerate() == 16000 and f.getnframes() == 8000
        samples = np.frombuffer(f.readframes(8000), "<i2")
    assert len(np.unique(samples)) > 10
    assert contract.DEFAULT_SAMPLE_RATE == 16000


def test_export_is_fetched_through_beam_filesystems(trained_job):
    # Remote paths (gs://, s3://) take this route; Beam's local filesystem stands in for them here.
    local = fast._fetch_export(str(trained_job))
    assert sorted(os.listdir(local)) == [contract.MODEL_CONFIG_FILE, contract.MODEL_FILE]
    assert fast.FastWaveNet.load(local).config["sample_rate"] == 8000
