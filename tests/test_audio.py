import io
import os

import numpy as np
import pytest
import resampy
import soxr

from pipelines import audio, contract
from tests.helpers import CLIPS, broken_file_contents, wav_bytes


@pytest.mark.parametrize("channels", [1, 2, 3, 6], ids=["mono", "stereo", "3.0", "5.1"])
def test_downmix_is_the_mean_of_channels(channels):
    rng = np.random.default_rng(channels)
    audio_in = rng.uniform(-1, 1, (channels, 1000)).astype(np.float32)
    original = audio_in.copy()
    mono = audio.downmix(audio_in)
    assert mono.shape == (1000,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, original.sum(axis=0) / channels, rtol=1e-6, atol=1e-7)
    # Bit for bit what numpy's float32 mean gives (datasets written before stay reproducible).
    assert np.array_equal(mono, original.mean(axis=0, dtype=np.float32))
    assert np.array_equal(audio_in, original)


def test_downmix_rejects_zero_channels():
    with pytest.raises(ValueError, match="channels >= 1"):
        audio.downmix(np.zeros((0, 10), np.float32))


@pytest.mark.parametrize("resampler", audio.RESAMPLERS)
@pytest.mark.parametrize("in_rate", [22050, 44100, 48000, 8000, 16000])
def test_resampled_length_is_rounded_ratio(resampler, in_rate):
    n = 12345
    out = audio.resample(np.zeros(n, np.float32), in_rate, 16000, resampler)
    assert abs(len(out) - round(n * 16000 / in_rate)) <= 1


@pytest.mark.parametrize("resampler", audio.RESAMPLERS)
def test_streamed_resampling_equals_whole_signal(resampler):
    x = np.random.default_rng(0).normal(0, 0.3, 44100 * 2).astype(np.float32)
    stream = audio.StreamResampler(44100, 16000, resampler)
    chunks = [stream.resample_chunk(x[i : i + 7001]) for i in range(0, len(x), 7001)]
    chunks.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(chunks)
    if resampler.startswith("kaiser"):
        reference = resampy.resample(x, 44100, 16000, filter=resampler)
    else:
        reference = soxr.resample(x, 44100, 16000, quality="VHQ" if resampler == "soxr_vhq" else "HQ")
    assert abs(len(streamed) - len(reference)) <= 1
    n = min(len(streamed), len(reference))
    np.testing.assert_allclose(streamed[:n], reference[:n], atol=1e-5)


def test_resampling_keeps_a_tone_at_its_frequency():
    t = np.arange(44100) / 44100
    out = audio.resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 44100, 16000)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 16000 / len(out) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("hop", [4000, 1000, 6000], ids=["no-overlap", "overlap", "gaps"])
def test_window_cutter_matches_direct_slicing_for_any_chunking(hop):
    signal = np.arange(50000, dtype=np.float32)
    cutter = audio.WindowCutter(window_samples=4000, hop_samples=hop)
    rng = np.random.default_rng(hop)
    windows, start = [], 0
    while start < len(signal):
        size = int(rng.integers(1, 9000))
        windows.extend(cutter.push(signal[start : start + size]))
        start += size
    expected_offsets = list(range(0, len(signal) - 4000 + 1, hop))
    assert [offset for offset, _ in windows] == expected_offsets
    for offset, window in windows:
        assert np.array_equal(window, signal[offset : offset + 4000])


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_decoders_agree_after_resampling(name):
    config = dict(window_samples=8000, hop_samples=8000, silence_threshold_db=-np.inf)
    decoded = {}
    for decoder in audio.DECODERS:
        with open(CLIPS[name], "rb") as f:
            track = audio.Track(f, audio.AudioConfig(decoder=decoder, **config))
            decoded[decoder] = np.concatenate([contract.mu_law_decode(codes) for _, codes in track])
    a, b = decoded["pyav"], decoded["pydub"]
    assert len(a) == len(b) > 0
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_track_windows_have_length_range_and_offsets():
    audio_config = audio.AudioConfig(window_samples=4000, hop_samples=3000)
    with open(CLIPS["mp3_48k_space"], "rb") as f:
        track = audio.Track(f, audio_config)
        windows = list(track)
    assert [offset for offset, _ in windows] == [i * 3000 for i in range(len(windows))]
    assert all(codes.dtype == np.uint8 and codes.shape == (4000,) for _, codes in windows)
    assert len(np.unique(np.concatenate([codes for _, codes in windows]))) > 100
    assert track.stats.source_sample_rate == 48000 and track.stats.source_channels == 2
    assert track.stats.windows == len(windows)
    assert windows[-1][0] + 4000 <= track.stats.samples < windows[-1][0] + 4000 + 3000


def test_track_stream_reads_file_objects_lazily():
    size = os.path.getsize(CLIPS["mp3_44k"])
    with open(CLIPS["mp3_44k"], "rb") as f:
        track = iter(audio.Track(f, audio.AudioConfig(), block_samples=4096))
        next(track)
        assert f.tell() < size / 2


@pytest.mark.parametrize("decoder", audio.DECODERS)
@pytest.mark.parametrize("name", sorted(broken_file_contents(decodable_only=True)))
def test_broken_file_raises_track_error_with_stage(name, decoder):
    content, stage, _ = broken_file_contents()[name]
    with pytest.raises(contract.TrackError) as raised:
        list(audio.Track(io.BytesIO(content), audio.AudioConfig(decoder=decoder)))
    assert raised.value.stage == stage
    assert str(raised.value)


@pytest.mark.parametrize("name", sorted(broken_file_contents(decodable_only=True)))
def test_pyav_reasons_name_the_problem(name):
    content, _, reason = broken_file_contents()[name]
    with pytest.raises(contract.TrackError, match=reason):
        list(audio.Track(io.BytesIO(content), audio.AudioConfig()))


def test_digital_silence_is_dropped_and_counted_not_failed():
    track = audio.Track(io.BytesIO(wav_bytes(np.zeros(48000, np.int16))), audio.AudioConfig())
    assert list(track) == []
    assert track.stats.windows_silent_dropped == 3 and track.stats.windows == 0


def test_silence_threshold_is_configurable():
    quiet = (np.random.default_rng(0).uniform(-1, 1, 32000) * 30).astype(np.int16)  # About -60 dBFS peak.
    kept = list(audio.Track(io.BytesIO(wav_bytes(quiet)), audio.AudioConfig(silence_threshold_db=-80)))
    dropped = list(audio.Track(io.BytesIO(wav_bytes(quiet)), audio.AudioConfig(silence_threshold_db=-40)))
    assert len(kept) == 2 and dropped == []


def test_corrupt_data_after_good_audio_keeps_the_audio_and_says_why():
    with open(CLIPS["flac_44k"], "rb") as f:
        truncated = f.read()[:300000]
    track = audio.Track(io.BytesIO(truncated), audio.AudioConfig())
    windows = list(track)
    assert len(windows) == 1
    # FLAC's STREAMINFO declares the length, so the truncation is measured, not just noticed.
    assert track.stats.decode_error == "decoded 1.6 s of 3.0 s declared"


def test_audio_config_rejects_unknown_resampler():
    with pytest.raises(ValueError, match="resampler must be one of"):
        audio.AudioConfig(resampler="linear")


def float_wav(samples, sample_rate=16000):
    """A 32-bit float WAV of float32 [channels, n_samples]."""
    samples = np.asarray(samples, np.float32)
    return wav_bytes(samples.T.ravel(), sample_rate, channels=samples.shape[0], format_tag=3, bits=32)


def track_codes(wav, **config):
    track = audio.Track(io.BytesIO(wav), audio.AudioConfig(**config))
    return np.concatenate([codes for _, codes in track]), track.stats


def test_nonfinite_samples_are_dropped_and_counted_never_quantized():
    t = np.arange(64000) / 16000
    render = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    render[0, 10000:20000] = np.nan  # A plug-in that blew up, in one channel...
    render[1, 15000:22000] = np.inf  # ...and the other.
    render[1, 40000:40800] = -np.inf
    finite = np.isfinite(render).all(axis=0)
    codes, stats = track_codes(float_wav(render))
    # Exactly what the finite frames alone give: nothing of the broken stretches reaches the codec.
    expected, clean = track_codes(float_wav(render[:, finite]))
    assert np.array_equal(codes, expected) and clean.nonfinite_secs == 0 and clean.decode_error == ""
    assert stats.nonfinite_secs == (~finite).sum() / 16000 == 0.8
    assert stats.decode_error == "dropped 0.800 s of non-finite samples (NaN or Inf), the first at 0.625 s"


def test_a_track_of_nothing_but_nonfinite_samples_fails_saying_so():
    with pytest.raises(contract.TrackError, match=r"shorter than one window.*dropped 2.000 s of non-finite") as raised:
        track_codes(float_wav(np.full((1, 32000), np.nan)))
    assert raised.value.stage == "window"


@pytest.mark.parametrize("gain_db", [0.0, 40.0], ids=["within-full-scale", "plus-40-dbfs"])
def test_samples_beyond_full_scale_are_clipped_and_counted(gain_db):
    t = np.arange(32000) / 16000
    tone = (0.9 * 10 ** (gain_db / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    codes, stats = track_codes(float_wav(tone))
    assert stats.clipped_samples == np.count_nonzero(np.abs(tone) > 1)
    expected, _ = track_codes(float_wav(np.clip(tone, -1, 1)))
    assert np.array_equal(codes, expected)
    assert stats.decode_error == ""
