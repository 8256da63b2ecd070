"""Fast generation: parity with the full model, priming, reproducibility, the CLI, and the whole path."""

import json
import os
import re
import shutil
import subprocess
import sys
import wave

import av
import numpy as np
import pytest

from pipelines import contract
from sampler import cpu, generate, loading
from tests.helpers import CLIPS
from trainer.model import WaveNetConfig, build_wavenet

ENGINES = ["cpu", "xla"]


def _random_wavenet(filter_width, quantization_channels=64, seed=0, engine="cpu", threads=2, condition_values=0):
    wavenet_config = WaveNetConfig(
        quantization_channels=quantization_channels, residual_channels=8, dilation_channels=8, skip_channels=16,
        filter_width=filter_width, dilations=(1, 2, 4, 8, 1, 2, 4, 8), condition_values=condition_values,
    )  # fmt: skip
    model = build_wavenet(wavenet_config)
    rng = np.random.default_rng(seed)
    for weight in model.weights:  # Non-zero weights and biases everywhere.
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    vocabulary = ("unknown", *(f"genre {i}" for i in range(1, condition_values)))
    model_config = contract.ModelConfig(
        wavenet_config=wavenet_config, sample_rate=16000, condition_kind="genre" if condition_values else None,
        condition_vocabulary=vocabulary if condition_values else (),
    )  # fmt: skip
    return model, loading.make(model, model_config, engine=engine, threads=threads), wavenet_config


@pytest.mark.parametrize("engine", ENGINES)
def test_conditioned_cached_logits_equal_the_full_forward_pass_per_clip_label(engine):
    """Each clip of one batch has its own label; cached stepping and priming equal the full model's logits."""
    model, generator, wavenet_config = _random_wavenet(2, engine=engine, condition_values=3)
    codes = np.random.default_rng(3).integers(0, 64, (4, 2 * wavenet_config.receptive_field + 20)).astype("int32")
    conditions = np.array([2, 0, 1, 2], np.int32)
    full = np.asarray(model([codes, conditions]))
    np.testing.assert_allclose(
        generator.teacher_forced_logits(codes, conditions=conditions), full, atol=2e-5, rtol=1e-5
    )
    primer_length = wavenet_config.receptive_field + 9
    primed = generator.teacher_forced_logits(
        codes[:, primer_length:], primer_codes=codes[:, :primer_length], conditions=conditions
    )
    np.testing.assert_allclose(primed, full[:, primer_length:], atol=2e-5, rtol=1e-5)
    # The label matters: the same codes under another label give other logits.
    other = generator.teacher_forced_logits(codes[:1], conditions=[1])
    assert np.abs(other - full[:1]).max() > 0.1


@pytest.mark.parametrize("engine", ENGINES)
def test_conditions_must_fit_the_model(engine):
    _, conditioned, _ = _random_wavenet(2, engine=engine, condition_values=3)
    with pytest.raises(ValueError, match="conditioned on genre: give --condition, one of unknown, genre 1, genre 2"):
        conditioned.generate(10)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        conditioned.generate(10, batch_size=2, conditions=[0, 3])
    clips = conditioned.generate(50, batch_size=3, conditions=2, seed=1)  # One label for every clip.
    assert clips.shape == (3, 50)
    _, unconditioned, _ = _random_wavenet(2, engine=engine)
    with pytest.raises(ValueError, match="not conditioned"):
        unconditioned.generate(10, conditions=[1])


def test_cpu_clip_with_a_label_does_not_depend_on_the_other_clips_labels():
    _, generator, _ = _random_wavenet(2, condition_values=3, threads=2)
    mixed = generator.generate(200, batch_size=3, seed=4, conditions=[1, 2, 0])
    alone = generator.generate(200, batch_size=3, seed=4, conditions=[1, 1, 1])
    np.testing.assert_array_equal(mixed[0], alone[0])
    assert not np.array_equal(mixed[1], alone[1])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("filter_width", [2, 3])
def test_cached_logits_equal_the_full_forward_pass(filter_width, engine):
    model, generator, wavenet_config = _random_wavenet(filter_width, engine=engine)
    assert generator.engine == engine
    codes = np.random.default_rng(1).integers(0, 64, (3, 3 * wavenet_config.receptive_field)).astype("int32")
    full = np.asarray(model(codes))
    cached = generator.teacher_forced_logits(codes)
    assert cached.shape == full.shape
    np.testing.assert_allclose(cached, full, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("filter_width", [2, 3])
def test_priming_fills_the_caches_like_stepping_through_the_primer(filter_width, engine):
    model, generator, wavenet_config = _random_wavenet(filter_width, engine=engine)
    codes = np.random.default_rng(2).integers(0, 64, (2, wavenet_config.receptive_field + 40)).astype("int32")
    primer_length = wavenet_config.receptive_field + 17
    cached = generator.teacher_forced_logits(codes[:, primer_length:], primer_codes=codes[:, :primer_length])
    full = np.asarray(model(codes))[:, primer_length:]
    np.testing.assert_allclose(cached, full, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_same_seed_same_clips_and_codes_in_range(engine):
    _, generator, _ = _random_wavenet(2, engine=engine)
    a = generator.generate(300, batch_size=3, seed=7, chunk=128)
    b = generator.generate(300, batch_size=3, seed=7, chunk=100)
    c = generator.generate(300, batch_size=3, seed=8, chunk=128)
    assert a.shape == (3, 300) and a.dtype == np.int32
    assert np.array_equal(a, b)  # Chunking does not change the result.
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # Clips of a batch differ.
    assert a.min() >= 0 and a.max() < 64
    with pytest.raises(ValueError, match="seed must be non-negative"):
        generator.generate(10, seed=-1)


def test_cpu_clips_do_not_depend_on_threads_chunks_or_batch():
    _, one_thread, _ = _random_wavenet(3, engine="cpu", threads=1)
    _, two_threads, _ = _random_wavenet(3, engine="cpu", threads=2)
    # 1,100 samples cross a block of random numbers (RANDOM_BLOCK = 1,024) inside a chunk and between chunks.
    a = one_thread.generate(1100, batch_size=3, seed=5, chunk=1100)
    b = two_threads.generate(1100, batch_size=5, seed=5, chunk=300)
    assert np.array_equal(a, b[:3])


@pytest.mark.parametrize("engine", ENGINES)
def test_sampling_follows_the_model_distribution(engine):
    _, generator, _ = _random_wavenet(2, quantization_channels=8, engine=engine)
    codes = generator.generate(1, batch_size=4000, seed=3)[:, 0]
    # The first step from silence (mid code, empty queues) has one distribution for every clip.
    logits = generator.teacher_forced_logits(np.full((1, 1), 4, np.int32))[0, 0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    observed = np.bincount(codes, minlength=8) / len(codes)
    np.testing.assert_allclose(observed, expected, atol=0.03)
    # Temperature 0.5 samples softmax(2 * logits).
    codes = generator.generate(1, batch_size=4000, seed=4, temperature=0.5)[:, 0]
    sharper = np.exp(2 * (logits - logits.max())) / np.exp(2 * (logits - logits.max())).sum()
    np.testing.assert_allclose(np.bincount(codes, minlength=8) / len(codes), sharper, atol=0.03)


def test_cpu_kernel_activations_match_numpy():
    import numba

    @numba.njit
    def apply(x):
        out = np.empty((2, x.shape[0]), np.float32)
        for i in range(x.shape[0]):
            out[0, i] = cpu.tanh(x[i])
            out[1, i] = cpu.exp_nonpositive(min(x[i], np.float32(0)))
        return out

    x = np.linspace(-90, 20, 200_001).astype(np.float32)
    tanh, exp = apply(x)
    np.testing.assert_allclose(tanh, np.tanh(x.astype(np.float64)), atol=1e-6, rtol=0)
    reference = np.exp(np.minimum(x, 0).astype(np.float64))
    normal = reference > 1e-37  # Below that the kernel's exp flushes to ~1e-38, which sampling cannot tell apart.
    np.testing.assert_allclose(exp[normal], reference[normal], rtol=5e-7)
    assert np.all(exp[~normal] < 2e-37)


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


def test_cli_xla_engine_and_bad_threads(trained_job, tmp_path, capsys):
    (path,) = generate.run(
        [f"--model={trained_job}", "--seconds=0.05", f"--output={tmp_path / 'x.wav'}", "--engine=xla"]
    )
    with wave.open(path) as f:
        assert f.getnframes() == 400
    assert "xla engine" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # Refused by the parser, before the model loads.
        generate.run([f"--model={trained_job}", "--seconds=1", f"--output={tmp_path / 'y.wav'}", "--threads=0"])
    assert "argument --threads: must be >= 1" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported model"):
        generate.run([f"--model={tmp_path}", "--seconds=1", f"--output={tmp_path / 'x.wav'}"])


@pytest.mark.slow
def test_walkthrough_from_real_clips_to_a_wav(tmp_path):
    """The README's three commands, as a user runs them."""

    def run(*args):
        result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        # A log, not a terminal: no native log noise, no carriage-return bars, only whole short lines.
        assert not re.search(r"^(?:[IWE]\d{4} |WARNING: All log messages)", result.stderr, re.MULTILINE), result.stderr
        assert "\r" not in result.stderr and max(map(len, result.stderr.splitlines()), default=0) < 300
        return result.stdout

    data, job, clip = tmp_path / "data", tmp_path / "job", tmp_path / "generated.wav"
    run("pipelines.preprocess", f"--output={data}", "--window_samples=4000", "--validation_fraction=0.5")
    run("trainer.task", f"--data={data}", f"--job_dir={job}", "--preset=tiny", "--steps=20", "--batch_size=4",
        "--summary_audio_secs=0.01", "--eval_every=20")  # fmt: skip
    out = run("sampler.generate", f"--model={job}", "--seconds=0.5", f"--output={clip}")
    assert "x real time" in out
    with wave.open(str(clip)) as f:
        assert f.getframerate() == 16000 and f.getnframes() == 8000
        samples = np.frombuffer(f.readframes(8000), "<i2")
    assert len(np.unique(samples)) > 10
    # The rate came from the data, through the export, not from a flag.
    assert contract.read_description(str(data)).sample_rate == 16000
    assert contract.read_model_config(str(job / contract.EXPORT_DIR)).sample_rate == 16000


# ---------------------------------------------------------------------------------------------------------------
# A shared export edited by hand or by an attacker: refused in one line before any kernel runs.


def _edited_export(trained_job, tmp_path, edit):
    export_dir = tmp_path / "export"
    shutil.copytree(trained_job / contract.EXPORT_DIR, export_dir)
    path = export_dir / contract.MODEL_CONFIG_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return export_dir


def _both(raw, key, value):
    raw["model"][key] = value
    raw[key] = value


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: _both(raw, "quantization_channels", 128), "config.json says quantization_channels=128"),
        (lambda raw: raw["model"].update(residual_channels=8), "config.json says residual_channels=8"),
        (lambda raw: raw["model"].update(skip_channels=64), "config.json says skip_channels=64"),
        (lambda raw: raw["model"].update(filter_width=3), "config.json says filter_width=3"),
        (lambda raw: raw["model"].update(dilations=raw["model"]["dilations"][:-1]), "more layers"),
        (lambda raw: raw["model"].update(dilations=raw["model"]["dilations"] + [1]), "that model.keras does not have"),
        (lambda raw: raw["model"].update(dilations=[2 * d for d in raw["model"]["dilations"]]), "has dilation 1"),
    ],
    ids=["channels", "residual", "skip", "filter-width", "fewer-layers", "more-layers", "dilations"],
)
def test_an_export_whose_config_disagrees_with_its_weights_is_refused(edit, message, trained_job, tmp_path, capsys):
    export_dir = _edited_export(trained_job, tmp_path, lambda raw: (edit(raw), raw.pop("receptive_field")))
    argv = [f"--model={export_dir}", "--seconds=0.1", f"--output={tmp_path / 'x.wav'}", "--engine=cpu"]
    assert contract.run_command(generate.run, argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: raw.update(sample_rate=10**12), "sample_rate must be in 1..768000"),
        (lambda raw: raw["model"].update(dilations=[2**23] * 3), "the receptive field"),
        (lambda raw: raw["model"].update(residual_channels=32.5), "residual_channels must be an integer"),
        (lambda raw: raw.update(model=[]), "malformed config.json"),
    ],
    ids=["rate-huge", "receptive-field-huge", "channels-fraction", "model-a-list"],
)
def test_a_hostile_config_is_a_contract_error(edit, message, trained_job, tmp_path):
    export_dir = _edited_export(trained_job, tmp_path, lambda raw: (edit(raw), raw.pop("receptive_field")))
    with pytest.raises(contract.ContractError, match=message):
        loading.load(str(export_dir))


def test_a_model_keras_of_random_bytes_is_named_as_damaged(trained_job, tmp_path):
    export_dir = _edited_export(trained_job, tmp_path, lambda raw: None)
    (export_dir / contract.MODEL_FILE).write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(contract.ContractError, match="model.keras is not a loadable Keras model"):
        loading.load(str(export_dir))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seconds=inf"], "argument --seconds: must be a finite number above 0"),
        (["--seconds=nan"], "argument --seconds: must be a finite number above 0"),
        (["--seconds=1", "--temperature=nan"], "argument --temperature: must be a finite number above 0"),
        (["--seconds=1", "--seed=-1"], "argument --seed: must be in"),
    ],
    ids=["seconds-inf", "seconds-nan", "temperature-nan", "seed-negative"],
)
def test_numbers_that_cannot_work_are_refused_by_the_parser(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        generate.run(["--model=unused", f"--output={tmp_path / 'x.wav'}", *args])
    assert message in capsys.readouterr().err


def test_more_audio_than_a_wav_holds_is_refused_before_generating(trained_job, tmp_path):
    with pytest.raises(ValueError, match="a 16-bit WAV holds at most ([0-9,]+) ") as refused:
        generate.run([f"--model={trained_job}", "--seconds=1e9", f"--output={tmp_path / 'x.wav'}"])
    assert os.listdir(tmp_path) == []
    # The most it allows, with the clip's INFO chunk, fills the RIFF size's 32 bits; one sample more would not fit.
    most = int(re.search(r"holds at most ([0-9,]+) ", str(refused.value)).group(1).replace(",", ""))
    model_config = contract.read_model_config(str(trained_job / contract.EXPORT_DIR))
    info = generate.clip_info(str(trained_job), model_config, "x")
    riff_size = generate.WAV_HEADER_BYTES + 2 * most + len(generate.info_chunk(info))
    assert riff_size <= 2**32 - 1 < riff_size + 2


def test_an_output_that_cannot_be_written_is_refused_before_generating(trained_job, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a directory")
    for output in (tmp_path, tmp_path / "a-file" / "x.wav"):
        assert contract.run_command(generate.run, [f"--model={trained_job}", "--seconds=600", f"--output={output}"])
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and str(output).split("/x.wav")[0] in err
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_long_clips_stream_to_disk_a_chunk_at_a_time(trained_job, tmp_path):
    generator = loading.load(str(trained_job), engine="cpu")
    chunks = list(generator.generate_chunks(10_000, batch_size=2, seed=3, chunk=4000))
    assert [c.shape for c in chunks] == [(2, 4000), (2, 4000), (2, 2000)]
    assert np.array_equal(np.concatenate(chunks, axis=1), generator.generate(10_000, batch_size=2, seed=3))
    (path,) = generate.run([f"--model={trained_job}", "--seconds=1.25", f"--output={tmp_path / 'x.wav'}"])
    with wave.open(path) as f:
        assert f.getnframes() == 10_000 and len(f.readframes(20_000)) == 20_000
    assert os.listdir(tmp_path) == ["x.wav"]  # No temporary left beside it.


# ---------------------------------------------------------------------------------------------------------------
# Several processes sharing --num_clips (--shard K/N, or Slurm's tasks): every clip once, each the same as alone.


@pytest.mark.parametrize("engine", ENGINES)
def test_a_clip_samples_the_same_in_any_batch(engine):
    """Clip i's random numbers derive from the seed and i alone: a batch starting at clip 2 continues the same clips."""
    _, generator, _ = _random_wavenet(2, engine=engine)
    whole = generator.generate(300, batch_size=5, seed=3)
    first = generator.generate(300, batch_size=2, seed=3)
    rest = generator.generate(300, batch_size=3, seed=3, first_clip=2)
    assert np.array_equal(np.concatenate([first, rest]), whole)
    assert not np.array_equal(rest[0], whole[0])  # Clip 2, not clip 0 again.
    with pytest.raises(ValueError, match="first_clip must be >= 0"):
        generator.generate(10, first_clip=-1)


def test_shards_together_write_exactly_the_clips_of_one_run_byte_for_byte(trained_job, tmp_path, capsys):
    common = [f"--model={trained_job}", "--seconds=0.1", "--num_clips=5", "--seed=3", "--engine=cpu"]
    whole = generate.run([*common, f"--output={tmp_path / 'whole' / 'take.wav'}"])
    capsys.readouterr()
    shards = [generate.run([*common, f"--output={tmp_path / 'shards' / 'take.wav'}", f"--shard={k}/2"]) for k in (0, 1)]
    out = capsys.readouterr().out
    assert "Generated 3 clip(s) of 0.1 s at 8000 Hz (clips 0-2 of 5: shard 0/2 from --shard)" in out
    assert "Generated 2 clip(s) of 0.1 s at 8000 Hz (clips 3-4 of 5: shard 1/2 from --shard)" in out
    names = [os.path.basename(p) for p in shards[0] + shards[1]]
    assert names == [os.path.basename(p) for p in whole] == [f"take-{i:03d}.wav" for i in range(5)]
    assert sorted(os.listdir(tmp_path / "shards")) == names  # No clip twice, none left out.
    contents = [(tmp_path / "whole" / name).read_bytes() for name in names]
    assert [(tmp_path / "shards" / name).read_bytes() for name in names] == contents
    assert len(set(contents)) == 5


def test_a_shard_with_no_clips_writes_nothing(trained_job, tmp_path, capsys):
    args = [f"--model={trained_job}", "--seconds=0.1", f"--output={tmp_path / 'x.wav'}", "--shard=1/2", "--num_clips=1"]
    assert generate.run(args) == []
    assert os.listdir(tmp_path) == []
    assert "Generated no clips: shard 1/2 (from --shard) gets none of --num_clips 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "shard", ["2/2", "-1/2", "0/0", "1", "a/b"], ids=["k-equals-n", "k-negative", "n-zero", "no-slash", "not-numbers"]
)
def test_a_shard_outside_its_range_is_refused_by_the_parser(shard, tmp_path, capsys):
    with pytest.raises(SystemExit):
        generate.run(["--model=unused", "--seconds=1", f"--output={tmp_path / 'x.wav'}", f"--shard={shard}"])
    assert "argument --shard:" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2"}


@pytest.mark.parametrize(
    "environ, shard, expected",
    [
        ({}, None, (range(0, 5), 0, 1)),
        ({**STEP, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, None, (range(3, 5), 1, 2)),
        ({**STEP, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, (0, 5), (range(0, 1), 0, 5)),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}, None,
         (range(3, 4), 2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
          "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, None, (range(3, 4), 2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1", **STEP,
          "SLURM_PROCID": "0"}, None, (range(3, 4), 2, 4)),
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, None, (range(0, 5), 0, 1)),
    ],
    ids=["alone", "srun-task-1-of-2", "shard-option-wins", "array-1-to-4", "array-with-step", "array-times-step",
         "batch-script"],
)  # fmt: skip
def test_the_shard_comes_from_the_option_else_from_slurm(environ, shard, expected):
    clips, index, count, _ = generate.clip_shard(5, shard, environ)
    assert (clips, index, count) == expected


def test_a_job_array_that_is_not_one_range_needs_shard():
    # --array=1,5,7
    environ = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
               "SLURM_ARRAY_TASK_COUNT": "3"}  # fmt: skip
    with pytest.raises(ValueError, match="not one evenly spaced range .*pass --shard K/N"):
        generate.clip_shard(4, None, environ)


def test_each_clip_says_in_its_riff_info_what_made_it_and_where_the_model_card_is(trained_job, tmp_path):
    path = tmp_path / "clip.wav"
    generate.run(["--model", str(trained_job), "--seconds=0.05", f"--output={path}"])
    with av.open(str(path)) as container:  # FFmpeg reads RIFF INFO as ISFT encoder, INAM title, ICMT comment.
        info = container.metadata
    assert info["encoder"] == f"{contract.software()} (python -m sampler.generate)" and info["title"] == "clip"
    assert str(trained_job) in info["comment"] and "MODEL_CARD.md" in info["comment"] and "step 40" in info["comment"]
    with wave.open(str(path)) as f:  # Still a plain WAV to every reader.
        assert f.getnframes() == 400 and len(f.readframes(400)) == 800


@pytest.fixture()
def read_only_dir(tmp_path):
    """A real read-only file system (a tmpfs mounted ro), unmounted afterwards; skipped where mounting is refused."""
    mount_point = tmp_path / "read-only"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_an_output_the_file_system_refuses_is_one_line_that_says_why(trained_job, read_only_dir, capsys, monkeypatch):
    import gc

    monkeypatch.delenv(contract.DEBUG_ENV, raising=False)
    unraisable = []  # What Python prints as "Exception ignored in: ..." (a half-made Wave_write's __del__).
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    refused = "takes no new entries there (it answers 'no such file or directory')"
    cases = {
        read_only_dir / "clip.wav": f"read-only file system: {read_only_dir / 'clip.wav'}",
        read_only_dir / "clips" / "a.wav": f"read-only file system: {read_only_dir / 'clips'}",
        "/proc/wavenet-x/clip.wav": f"cannot create directory: /proc/wavenet-x: the file system of /proc {refused}",
        "/proc/clip.wav": f"cannot create file: /proc/clip.wav: the file system of /proc {refused}",
    }
    for output, line in cases.items():
        argv = [f"--model={trained_job}", "--seconds=0.05", f"--output={output}"]
        assert contract.run_command(generate.run, argv) == 1
        gc.collect()
        assert capsys.readouterr().err == f"error: {line}\n"
    assert unraisable == []
