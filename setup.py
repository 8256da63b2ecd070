"""Package definition for the toolkit.

The same file serves `pip install -e .` on a laptop and Beam's `--setup_file`
on Dataflow, Spark and Flink workers, so worker dependencies live here only.
"""

import setuptools

# What Beam workers need. Workers never import TensorFlow (examples are
# encoded with tfx-bsl), but tfx-bsl itself declares a TensorFlow dependency,
# so the package still installs it; it is simply never imported there.
REQUIRED_PACKAGES = [
    "apache-beam[gcp,aws]==2.77.*",
    "tfx-bsl==1.21.*",
    "tensorflow==2.21.*",
    "tensorboard>=2.20",  # tf.summary needs it; TensorFlow 2.21 no longer installs it.
    "av>=14,<19",
    "soxr>=0.5,<2",
    "resampy>=0.4.3,<0.5",
    "pydub>=0.25.1,<0.26",
    "audioop-lts; python_version >= '3.13'",  # pydub imports audioop, removed in Python 3.13.
    "numpy>=1.26,<3",
    "google-crc32c>=1.5,<2",
    "beautifulsoup4>=4.12,<5",
    "requests>=2.31,<3",
    # Downloads are streamed from untrusted sites: urllib3 2.6.3 bounds what a compressed response may decompress to,
    # redirects included (CVE-2025-66471, CVE-2025-66418, CVE-2026-21441).
    "urllib3>=2.6.3,<3",
    "license-expression>=30.4,<31",  # SPDX ids and expressions, with the SPDX list 3.27 (pipelines/licences.py)
    "tqdm>=4.66,<5",
    "matplotlib>=3.8",  # spectrograms with axes and a dB scale (sampler PNGs, TensorBoard images)
    # The sampler's CPU engine: a numba kernel calling SciPy's BLAS, held to one BLAS thread per kernel thread.
    "numba>=0.59",
    "scipy>=1.11",
    "threadpoolctl>=3.1",
]

TEST_PACKAGES = [
    "pytest>=8,<10",
    "ruff>=0.6",
    "import-linter>=2.1,<3",  # `lint-imports`: the boundaries between the three programs (pyproject.toml)
    # Real object stores on 127.0.0.1 for tests/test_stores.py: S3's REST API (with IAM checks) and GCS's JSON API
    # (with the batch endpoint Beam's gcsio renames through).
    "moto[server]>=5.1,<6",
    "gcp-storage-emulator>=2024.8",
]

# benchmarks/: psutil to follow the memory of the pipeline's process tree (scipy,
# for the legacy pydub + scipy + resampy recipe they compare against, is required anyway).
BENCHMARK_PACKAGES = [
    "psutil>=5.9",
]

setuptools.setup(
    name="wavenet-music-toolkit",
    version="0.1.0",
    description=(
        "Turn music on the web into generative audio models: an Apache Beam "
        "preprocessing pipeline, a tf.distribute WaveNet trainer and a fast sampler."
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["pipelines*", "trainer*", "sampler*"]),
    package_data={"pipelines": ["data/*"]},
    install_requires=REQUIRED_PACKAGES,
    extras_require={"test": TEST_PACKAGES, "benchmark": BENCHMARK_PACKAGES},
    license="Apache-2.0",
)
