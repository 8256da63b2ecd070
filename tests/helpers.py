"""Plain helpers of the tests: real clips, broken files made from real bytes, a local music site, a quick
training job's arguments."""

import json
import os
import struct
import subprocess
import sys

import numpy as np

from pipelines.options import PACKAGE_DATA_DIR

TESTS_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# Real clips (Endgame: Singularity by Max McCracken, CC BY-SA 3.0; see COPYRIGHT.singularity-music).
CLIPS = {
    "mp3_44k": os.path.join(PACKAGE_DATA_DIR, "Awakening.mp3"),
    "mp3_48k_space": os.path.join(PACKAGE_DATA_DIR, "Media Threat.mp3"),
    "mp3_22k_mono": os.path.join(PACKAGE_DATA_DIR, "Nebula (22k mono).mp3"),
    "ogg_48k": os.path.join(PACKAGE_DATA_DIR, "Coherence.ogg"),
    "flac_44k": os.path.join(TESTS_DATA_DIR, "Deprecation.flac"),
    "wav_44k": os.path.join(TESTS_DATA_DIR, "By-Product.wav"),
}


def wav_bytes(samples=None, sample_rate=16000, channels=1, format_tag=1, bits=16):
    """A RIFF/WAVE file; header fields can be set to invalid values on purpose.

    samples: int16 [n_samples * channels] (interleaved), or float32 with format_tag=3 and bits=32 (IEEE float,
    full scale +/-1; NaN, Inf and values past full scale are written as they are).
    """
    dtype = "<f4" if format_tag == 3 else "<i2"
    data = b"" if samples is None else np.asarray(samples, dtype=dtype).tobytes()
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, sample_rate, sample_rate * block_align, block_align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def broken_file_contents(decodable_only=False):
    """name -> (bytes, stage expected in the failure record, regex expected in its error).

    decodable_only leaves out the empty file, which is refused when opened, before decoding.
    """
    with open(CLIPS["mp3_44k"], "rb") as f:
        mp3 = f.read()
    with open(os.path.join(TESTS_DATA_DIR, "video-only.mp4"), "rb") as f:
        video = f.read()
    tone = (3000 * np.sin(np.arange(16000) * 0.05)).astype(np.int16)
    files = {
        "empty.mp3": (b"", "read", r"empty file \(0 bytes\)"),
        "error page.mp3": (
            b"<!DOCTYPE html><html><head><title>429 Too Many Requests</title></head></html>\n" * 20,
            "decode",
            "not a decodable audio file",
        ),
        # Random bytes may probe as a bogus stream header, depending on how the file is read.
        "random.flac": (
            np.random.default_rng(1).bytes(40000),
            "decode",
            "not a decodable audio file|zero channels",
        ),
        "truncated.mp3": (mp3[:2000], "window", "shorter than one window"),
        "unknown-codec.wav": (wav_bytes(tone, format_tag=0x7777), "decode", "unsupported audio codec"),
        "zero-channels.wav": (wav_bytes(tone, channels=0), "decode", "zero channels"),
        "video-only.mp4": (video, "decode", "no audio stream"),
    }
    if decodable_only:
        del files["empty.mp3"]
    return files


def train_args(data_dir, job_dir, *extra):
    """`python -m trainer.task` arguments of a quick CPU job: the tiny preset, batches of 4, 5 ms audio summaries,
    2 validation batches per evaluation; `extra` adds to or overrides them."""
    return [
        f"--data={data_dir}", f"--job_dir={job_dir}", "--preset=tiny", "--batch_size=4",
        "--summary_audio_secs=0.005", "--eval_batches=2", *extra,
    ]  # fmt: skip


def free_ports(n):
    """n TCP ports of 127.0.0.1 free at the time of the call (held together while chosen, so all differ)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_tf_config_workers(argv, workers=2, timeout=300):
    """`python -m trainer.task argv` as `workers` local MultiWorkerMirroredStrategy workers (TF_CONFIG, loopback
    ports, no GPUs), run to their end.

    Returns:
      (exit statuses, every worker's stdout and stderr, worker 0's first).

    Raises:
      subprocess.TimeoutExpired: the workers did not end within `timeout` s (they are killed).
    """
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    processes = []
    try:
        for index in range(workers):
            tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
            processes.append(subprocess.Popen([sys.executable, "-m", "trainer.task", *argv], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [p.returncode for p in processes], "".join(outputs)


def example_labels(output):
    """{track_id: {kind: set of values}} over every example of every split of a preprocess output, read with
    TensorFlow."""
    import tensorflow as tf

    from pipelines import contract

    description = contract.read_description(str(output))
    features = {contract.TRACK_ID_FEATURE: tf.io.FixedLenFeature([], tf.string)}
    features.update({contract.label_feature(k): tf.io.FixedLenFeature([], tf.string) for k in contract.LABEL_KINDS})
    found = {}
    for split in contract.SPLITS:
        for record in tf.data.TFRecordDataset(description.shard_paths(str(output), split)):
            example = tf.io.parse_single_example(record, features)
            per_kind = found.setdefault(example[contract.TRACK_ID_FEATURE].numpy().decode(), {})
            for kind in contract.LABEL_KINDS:
                per_kind.setdefault(kind, set()).add(example[contract.label_feature(kind)].numpy().decode())
    return found


def read_jsonl(path):
    """The records of a JSON-lines file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def decoded_duration_secs(path):
    """Duration of a file as PyAV decodes it: decoded samples / sample rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


class MusicSite:
    """A local music site laid out like the Free Music Archive, for scraping tests.

    Three listing pages under /genre/Ambient/ link 8 tracks, one of them on two
    pages: real audio (one behind a redirect, one behind a 429 with
    Retry-After), a 404, an HTML error page served as .mp3, and a file under
    /private/, which robots.txt disallows. /genre/Electronic/ lists one more
    track, by another artist. Every request is logged.
    """

    RETRY_AFTER_SECS = 2

    def __init__(self, clips_dir):
        self.clips_dir = clips_dir
        self.requests = []  # (time.monotonic() on arrival, path, User-Agent)
        self.throttled_at = None  # time.monotonic() when the 429 was sent
        self.base_url = None

    def track(
        self, name, title, path, licence="https://creativecommons.org/licenses/by-sa/3.0/", artist="Max McCracken"
    ):
        import html

        info = {
            "id": abs(hash(path)) % 100000,
            "title": title,
            "artistName": artist,
            "fileUrl": f"{self.base_url}{path}",
            "url": f"{self.base_url}/music/Max_McCracken/{name}/",
        }
        return (
            f"<div class=\"play-item gcol gid-electronic\" data-track-info='{html.escape(json.dumps(info))}'>"
            f'<span class="ptxt-track">{html.escape(title)}</span>'
            f'<a href="{licence}" class="licence">CC BY-SA</a></div>'
        )

    def listing(self, page):
        tracks = {
            1: [
                self.track("awakening", "Awakening", "/files/Awakening.mp3"),
                self.track("coherence", "Coherence", "/files/Coherence.ogg"),
                self.track("media-threat", "Media Threat", "/files/Media%20Threat.mp3"),
            ],
            2: [
                self.track("media-threat", "Media Threat", "/files/Media%20Threat.mp3"),  # again
                self.track("missing", "Missing", "/files/missing.mp3"),
                self.track("error-page", "Error Page", "/files/error-page.mp3"),
                self.track("nebula", "Nebula", "/files/old-nebula.mp3"),  # redirects
                self.track("secret", "Secret", "/private/secret.mp3"),  # disallowed
            ],
            3: [self.track("deprecation", "Deprecation", "/slow/Deprecation.flac")],  # 429 first
        }[page]
        next_link = f'<a rel="next" href="/genre/Ambient/?page={page + 1}">NEXT</a>' if page < 3 else ""
        return f"<html><body><div class='playlist'>{''.join(tracks)}</div>{next_link}</body></html>"

    def electronic_listing(self):
        """/genre/Electronic/: one page, one track by another artist (the other genre of a two-genre scrape)."""
        track = self.track("by-product", "By-Product", "/files/By-Product.wav", artist="Guest Artist")
        return f"<html><body><div class='playlist'>{track}</div></body></html>"


def committed_tracks(output):
    """The track records of every run committed in a preprocess output (read as the pipeline's verifier reads
    them), as the JSON objects of the file."""
    from pipelines import commit, contract

    return [t.to_dict() for t in commit.committed_tracks(str(output), contract.read_description(str(output)))]


def last_failures(output):
    """The failure records of the last run committed in a preprocess output."""
    from pipelines import contract

    return read_jsonl(os.path.join(str(output), contract.read_description(str(output)).runs[-1].failures_file))


def dataflow_worker_environment(job):
    """The environment Dataflow would give the job's workers, built offline from a dry-run job (tests only).

    `DataflowRunner` with `--dry_run=True` stops before its API client builds
    the job's `Environment` (`apache_beam.runners.dataflow.internal.apiclient`);
    building it here shows what would reach the workers without a network.

    Args:
      job: `PipelineResult.job` of a dry run (an `apiclient.Job`).

    Returns:
      (dict of the pipeline options sent to workers, list of SDK container image names).
    """
    from apache_beam.runners.dataflow.internal import apiclient

    environment = apiclient.Environment(
        [], job.options, "8", "gs://dry-run/pipeline.pb", proto_pipeline=job.proto_pipeline
    ).proto
    pool = environment.worker_pools[0]
    images = [image.container_image for image in pool.sdk_harness_container_images]
    return dict(environment.sdk_pipeline_options["options"]), images
