"""Object stores: the pipeline and the trainer's staging against real S3 and GCS servers on loopback, as ratios.

    python benchmarks/storage_benchmark.py [--corpus DIR] [--repeats 3]

Starts moto's S3 server and gcp-storage-emulator on 127.0.0.1 (as the tests do, `tests/stores.py`), then, in
one run, on the same files:

1. `python -m pipelines.preprocess` of the corpus to local disk, and the same command with `--output` on each
   store; against it, local disk plus one bulk upload of that local output to the store (boto3's
   `upload_file` for S3, google-cloud-storage's transfer manager for GCS, 8 files at a time, as `aws s3 sync`
   and `gcloud storage cp` do). Target: within 1.5x.
2. The trainer's staging of that dataset from S3 (`trainer.storage.stage_dataset`: dataset.json and the shards
   it lists) against one plain boto3 download of the same objects (`download_file`, one after another, as a
   script would). Target: within 1.5x.

Each timing is the best of --repeats. Results go in BENCHMARKS.md ("Storage").
"""

import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines import contract  # noqa: E402
from pipelines.sources import AUDIO_EXTENSIONS  # noqa: E402
from tests.stores import GcsServer, S3Server  # noqa: E402
from trainer import storage  # noqa: E402

UPLOAD_THREADS = 8
# Shards per split: what a dataset of hours holds, so that staging moves many files, not three.
NUM_SHARDS = 16


def preprocess_secs(corpus, output, env):
    """Wall time of the preprocess CLI on the corpus into `output`."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", f"--input={corpus}", f"--output={output}",
         "--validation_fraction=0.2", f"--num_shards={NUM_SHARDS}"],
        cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.monotonic() - started


def upload_secs(local_dir, uri, server):
    """Wall time of one bulk upload of a directory's files, UPLOAD_THREADS at a time, with the store's own client."""
    files = sorted(p for p in glob.glob(os.path.join(local_dir, "*")) if os.path.isfile(p))
    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    started = time.monotonic()
    if uri.startswith("s3://"):
        client = server.client()
        with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for future in [
                pool.submit(client.upload_file, p, bucket, f"{prefix}/{os.path.basename(p)}") for p in files
            ]:
                future.result()
    else:
        from google.cloud.storage import transfer_manager

        results = transfer_manager.upload_many_from_filenames(
            server.client().bucket(bucket), [os.path.basename(p) for p in files], source_directory=local_dir,
            blob_name_prefix=f"{prefix}/", max_workers=UPLOAD_THREADS, worker_type=transfer_manager.THREAD,
        )  # fmt: skip
        for result in results:
            if isinstance(result, Exception):
                raise result
    return time.monotonic() - started


def staging_secs(uri):
    destination = tempfile.mkdtemp(prefix="staged-")
    started = time.monotonic()
    storage.stage_dataset(uri, destination)
    secs = time.monotonic() - started
    shutil.rmtree(destination)
    return secs


def plain_download_secs(uri, server):
    """One plain boto3 download of the objects staging copies: dataset.json and the shards it lists."""
    description = contract.read_description(uri)
    names = [contract.DATASET_FILE] + [name for split in description.splits.values() for name in split.files]
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    client = server.client()
    destination = tempfile.mkdtemp(prefix="plain-")
    started = time.monotonic()
    for name in names:
        client.download_file(bucket, f"{prefix}/{name}", os.path.join(destination, name))
    secs = time.monotonic() - started
    shutil.rmtree(destination)
    return secs


def main():
    default_corpus = os.path.join(REPO, "..", "shared", "corpus")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus",
        default=default_corpus if os.path.isdir(default_corpus) else os.path.join(REPO, "pipelines", "data"),
        help="A directory of audio files. Default: ../shared/corpus, else the bundled clips.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timings are the best of this many. Default: 3.")
    args = parser.parse_args()
    files = sorted(p for p in glob.glob(os.path.join(args.corpus, "*")) if p.lower().endswith(AUDIO_EXTENSIONS))
    corpus = tempfile.mkdtemp(prefix="corpus-")
    for path in files:
        shutil.copy(path, corpus)
    megabytes = sum(os.path.getsize(p) for p in files) / 1e6
    print(f"corpus: {args.corpus} ({len(files)} files, {megabytes:.1f} MB); best of {args.repeats}")

    s3, gcs = S3Server(), GcsServer()
    try:
        base_env = {**os.environ, **s3.env(), **gcs.env()}
        s3.create_bucket("bench")
        gcs.create_bucket("bench")
        local_root = tempfile.mkdtemp(prefix="bench-out-")
        local, to_store, uploads = [], {"s3": [], "gs": []}, {"s3": [], "gs": []}
        for repeat in range(args.repeats):
            out = os.path.join(local_root, f"run{repeat}")
            local.append(preprocess_secs(corpus, out, base_env))
            for scheme, server in (("s3", s3), ("gs", gcs)):
                to_store[scheme].append(preprocess_secs(corpus, f"{scheme}://bench/run{repeat}", base_env))
                uploads[scheme].append(upload_secs(out, f"{scheme}://bench/upload{repeat}", server))
        size_mb = sum(os.path.getsize(p) for p in glob.glob(os.path.join(local_root, "run0", "*"))) / 1e6
        print(f"\n1. preprocess of the corpus ({size_mb:.1f} MB of output), wall seconds")
        print(f"   to local disk: {min(local):.2f}")
        for scheme in ("s3", "gs"):
            reference = min(local) + min(uploads[scheme])
            print(
                f"   to {scheme}://: {min(to_store[scheme]):.2f}; local + bulk upload {min(local):.2f} + "
                f"{min(uploads[scheme]):.2f} = {reference:.2f}; ratio {min(to_store[scheme]) / reference:.2f} "
                "(target <= 1.5)"
            )

        os.environ.update(s3.env())
        contract.configure_storage()
        staged, plain = [], []
        for _ in range(args.repeats):
            staged.append(staging_secs("s3://bench/run0"))
            plain.append(plain_download_secs("s3://bench/run0", s3))
        print("\n2. the trainer's staging from s3:// against one plain boto3 download of the same objects")
        print(
            f"   staging {min(staged):.2f} s, plain download {min(plain):.2f} s; ratio "
            f"{min(staged) / min(plain):.2f} (target <= 1.5)"
        )
    finally:
        s3.stop()
        gcs.stop()


if __name__ == "__main__":
    main()
