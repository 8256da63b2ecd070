"""The trainer's input: the tf.data stream (trainer/data.py), its augmentation (trainer/augment.py) and the
checks of the shards it reads (trainer/shards.py), on real preprocessed clips."""

import shutil

import numpy as np
import pytest

from pipelines import audio, contract
from tests.helpers import CLIPS, train_args
from trainer import augment, data, shards, task


def test_the_shuffle_buffer_mixes_the_tracks_that_the_pipeline_wrote_one_after_another(clips_dataset):
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

    def first_batch(buffer_windows, split_windows=None):
        dataset = data.make_dataset(paths, description.window_samples, 32, seed=3,
                                    shuffle_buffer_windows=buffer_windows, split_windows=split_windows)  # fmt: skip
        return next(iter(dataset)).numpy()

    def tracks_of(batch):
        return [track_of[codes.astype(np.uint8).tobytes()] for codes in batch]

    assert data.default_shuffle_buffer_windows(description.window_samples) >= len(file_order)
    # Never more than the split holds: a larger buffer only repeats windows and takes longer to fill.
    windows = description.splits[contract.TRAIN].windows
    assert windows == len(file_order)
    assert data.default_shuffle_buffer_windows(description.window_samples, windows) == windows
    # Capped where the dataset is made, for every caller that names the split's windows.
    capped = first_batch(None, split_windows=windows)
    np.testing.assert_array_equal(capped, first_batch(windows))
    assert not np.array_equal(capped, first_batch(None))  # (The uncapped default fills ~10^5 windows: seconds.)
    mixed = tracks_of(capped)
    assert len(set(mixed)) == tracks and max(mixed.count(t) for t in set(mixed)) < 24
    assert len(set(tracks_of(first_batch(8)))) < tracks  # A small buffer: a batch of the first track(s) read.
    # (--shuffle_buffer_windows=0 is refused by the parser: tests/test_trainer.py, "refused_by_the_parser".)


def test_gain_and_polarity_augmentation_are_part_of_the_deterministic_input_stream(clips_dataset):
    description = contract.read_description(str(clips_dataset))
    paths = data.split_paths(str(clips_dataset), description, contract.TRAIN)

    def batches(gain_db, polarity=False, skip=0):
        dataset = data.make_dataset(paths, description.window_samples, 4, seed=3, gain_db=gain_db,
                                    random_polarity=polarity, skip_windows=skip, shuffle_buffer_windows=64)  # fmt: skip
        return [batch.numpy() for batch in dataset.take(3)]

    plain, augmented, both = batches(0.0), batches(6.0), batches(6.0, polarity=True)
    assert not np.array_equal(np.stack(plain), np.stack(augmented))
    assert not np.array_equal(np.stack(augmented), np.stack(both))
    np.testing.assert_array_equal(np.stack(batches(6.0, True)), np.stack(both))  # Resumes see the same draws.
    np.testing.assert_array_equal(batches(6.0, True, skip=4)[0], both[1])


# ---------------------------------------------------------------------------------------------------------------
# Augmentation: a random level and polarity, drawn per crop.


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
    np.testing.assert_array_equal(augment.random_gain(tf.constant(codes), 1e-6, seed).numpy(), codes)
    changes = []
    for s in range(8):
        out = augment.random_gain(tf.constant(codes), 6.0, tf.constant([s, 7], tf.int64)).numpy()
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
        out = augment.random_gain(tf.constant(full_scale), 6.0, tf.constant([s, 7], tf.int64)).numpy()
        assert _level_db(out) <= _level_db(full_scale) + 0.25
        # Only samples within a code of the extremes reach them (the peak may rise by those 0.19 dB).
        assert np.sum((out == 0) | (out == 255)) <= np.sum((full_scale <= 1) | (full_scale >= 254))


def test_random_polarity_inverts_the_waveform_of_about_half_the_crops():
    import tensorflow as tf

    codes = _real_codes(4000)
    inverted = 0
    for s in range(40):
        out = augment.random_polarity_inversion(tf.constant(codes), tf.constant([s, 7], tf.int64)).numpy()
        if not np.array_equal(out, codes):
            np.testing.assert_array_equal(out, 255 - codes)
            np.testing.assert_allclose(contract.mu_law_decode(out), -contract.mu_law_decode(codes), rtol=1e-4)
            inverted += 1
    assert 10 <= inverted <= 30


# ---------------------------------------------------------------------------------------------------------------
# Damaged shards: named, with the check to run.


def _damaged_copy(dataset, tmp_path, damage):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    shard = copy / contract.read_description(str(copy)).splits[contract.TRAIN].files[0]
    damage(shard)
    return copy, shard


def _flip_a_byte(shard):
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF
    shard.write_bytes(bytes(content))


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
        task.run(train_args(data_dir, tmp_path / "job", "--steps=200", "--summary_audio_secs=0",
                            "--eval_every=1000"))  # fmt: skip
    text = str(raised.value)
    assert str(shard) in text and message in text and f"python -m pipelines.verify {data_dir}" in text


def test_an_empty_shard_and_counts_that_disagree_are_warned_of(clips_dataset, tmp_path):
    data_dir, shard = _damaged_copy(clips_dataset, tmp_path, lambda shard: shard.write_bytes(b""))
    warnings = shards.check_shard_files(str(data_dir), contract.read_description(str(data_dir)))
    assert any(f"{shard} is empty" in w for w in warnings)
    assert any("fewer than the" in w and "windows dataset.json lists need" in w for w in warnings)
    assert shards.check_shard_files(str(clips_dataset), contract.read_description(str(clips_dataset))) == []
