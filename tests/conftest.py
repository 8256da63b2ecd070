"""Shared fixtures: real music clips and broken files made from real bytes."""

import os
import shutil
import struct

import numpy as np
import pytest

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
    """A RIFF/WAVE file; header fields can be set to invalid values on purpose."""
    data = b"" if samples is None else np.asarray(samples, dtype="<i2").tobytes()
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


@pytest.fixture(scope="session")
def broken_dir(tmp_path_factory):
    """A directory holding every broken file of `broken_file_contents`."""
    directory = tmp_path_factory.mktemp("broken")
    for name, (content, _, _) in broken_file_contents().items():
        (directory / name).write_bytes(content)
    return directory


@pytest.fixture(scope="session")
def silent_wav(tmp_path_factory):
    """Three seconds of digital silence."""
    path = tmp_path_factory.mktemp("silent") / "silence.wav"
    path.write_bytes(wav_bytes(np.zeros(48000, np.int16)))
    return path


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory):
    """Every real clip copied into one directory (names with spaces kept)."""
    directory = tmp_path_factory.mktemp("clips")
    for path in CLIPS.values():
        shutil.copy(path, directory)
    return directory


def read_jsonl(path):
    """The records of a JSON-lines file."""
    import json

    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def decoded_duration_secs(path):
    """Duration of a file as PyAV decodes it: decoded samples / sample rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


@pytest.fixture(scope="session")
def http_server(clips_dir):
    """A real HTTP server on 127.0.0.1 serving `clips_dir`; yields its base URL."""
    import functools
    import http.server
    import threading

    handler = functools.partial(_QuietHandler, directory=str(clips_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class MusicSite:
    """A local music site laid out like the Free Music Archive, for scraping tests.

    Three listing pages under /genre/Ambient/ link 8 tracks, one of them on two
    pages: real audio (one behind a redirect, one behind a 429 with
    Retry-After), a 404, an HTML error page served as .mp3, and a file under
    /private/, which robots.txt disallows. Every request is logged.
    """

    RETRY_AFTER_SECS = 2

    def __init__(self, clips_dir):
        self.clips_dir = clips_dir
        self.requests = []  # (time.monotonic() on arrival, path, User-Agent)
        self.throttled_at = None  # time.monotonic() when the 429 was sent
        self.base_url = None

    def track(self, name, title, path, licence="https://creativecommons.org/licenses/by-sa/3.0/"):
        import html
        import json

        info = {
            "id": abs(hash(path)) % 100000,
            "title": title,
            "artistName": "Max McCracken",
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


@pytest.fixture()
def music_site(clips_dir):
    import http.server
    import threading
    import time
    import urllib.parse

    site = MusicSite(clips_dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, body=b"", content_type="text/html", headers=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            site.requests.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            if path == "/robots.txt":
                return self.send(200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
            if path == "/genre/Ambient/":
                page = int(urllib.parse.parse_qs(url.query).get("page", ["1"])[0])
                return self.send(200, site.listing(page).encode())
            if path == "/files/old-nebula.mp3":
                return self.send(302, headers=[("Location", "/files/Nebula%20(22k%20mono).mp3")])
            if path == "/files/error-page.mp3":
                return self.send(200, b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>")
            if path == "/slow/Deprecation.flac" and site.throttled_at is None:
                self.send(429, b"slow down", "text/plain", [("Retry-After", str(site.RETRY_AFTER_SECS))])
                site.throttled_at = time.monotonic()
                return None
            name = os.path.basename(path)
            local = os.path.join(site.clips_dir, name)
            if path.startswith(("/files/", "/slow/", "/private/")) and os.path.isfile(local):
                with open(local, "rb") as f:
                    return self.send(200, f.read(), "audio/mpeg")
            return self.send(404, b"not found", "text/plain")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


def pytest_configure(config):
    """Two logical CPU devices, so MirroredStrategy runs on a machine without GPUs.

    Must happen before TensorFlow initialises its runtime, hence here.
    """
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def clips_dataset(tmp_path_factory):
    """The bundled clips at 8 kHz in 400-sample windows: Awakening in validation, the other three in train.

    Built in two runs into one output (the second adds to the first), because a track's split
    hashes its path, which differs between checkouts; this split is the same everywhere.
    """
    from pipelines import preprocess

    output = tmp_path_factory.mktemp("trainer-data")
    common = [f"--output={output}", "--sample_rate=8000", "--window_samples=400", "--direct_num_workers=1",
              "--direct_running_mode=in_memory"]  # fmt: skip
    held_out = os.path.join(PACKAGE_DATA_DIR, "Awakening.mp3")
    train = [path for name, path in CLIPS.items() if path.startswith(PACKAGE_DATA_DIR) and path != held_out]
    preprocess.run(common + [f"--input={path}" for path in train] + ["--validation_fraction=0"])
    preprocess.run(common + [f"--input={held_out}", "--validation_fraction=1"])
    return output


@pytest.fixture(scope="session")
def trained_job(clips_dataset, tmp_path_factory):
    """A job_dir holding a tiny WaveNet trained for 40 steps on `clips_dataset`, exported."""
    from trainer import task

    job_dir = tmp_path_factory.mktemp("job")
    task.run(
        [
            f"--data={clips_dataset}", f"--job_dir={job_dir}", "--model=tiny", "--batch_size=8", "--steps=40",
            "--summary_audio_secs=0", "--eval_batches=1",
        ]
    )  # fmt: skip
    return job_dir
