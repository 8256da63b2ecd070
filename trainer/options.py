"""The command line of `python -m trainer.task`: its options, their checks, and SageMaker's way of passing them.

Imports neither TensorFlow nor Keras, so `--help` and a refused option answer at once.
"""

import argparse
import json
import logging
import os
import posixpath

from pipelines import contract
from trainer import presets

_LOGGER = logging.getLogger(__name__)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
LR_SCHEDULES = ("constant", "cosine")
# Chosen on held-out music (BENCHMARKS.md, "Held-out quality", "Learning rate").
DEFAULT_LEARNING_RATE = 3e-3
DEFAULT_LR_SCHEDULE = "constant"
DEFAULT_WARMUP_STEPS = 0
DEFAULT_CLIP_NORM = 0.0
# Steps per host round trip by device kind (BENCHMARKS.md, "--steps_per_loop").
DEFAULT_STEPS_PER_LOOP = {"CPU": 10, "GPU": 100, "TPU": 200}


def build_parser():
    """The parser of `python -m trainer.task` (options and help; no TensorFlow).

    Each number is checked by its type (`contract.commands.int_in`, `number_in`): a value that cannot work is
    refused by the parser, exit status 2, before anything is read or written.
    """
    at_least_one = contract.commands.int_in(1)
    parser = contract.commands.ArgumentParser(
        prog="python -m trainer.task",
        description="Train a WaveNet on TFRecord windows written by pipelines.preprocess.",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="Output directory of pipelines.preprocess: local or gs:// (read directly), or s3:// and other "
        "Beam filesystems (staged to local disk first). Required, except on SageMaker, where the default is the "
        "job's input channel (SM_CHANNEL_TRAINING, or its only channel).",
    )
    parser.add_argument(
        "--job_dir",
        default=None,
        help="Directory for checkpoints (and, by default, logs and the export): local or gs://, or s3:// (worked "
        "on locally, copied back after every checkpoint and the export; resumes from what it holds). Required, "
        "except on SageMaker (default /opt/ml/checkpoints, which managed spot training syncs to "
        "checkpoint_s3_uri) and on Vertex AI (default AIP_CHECKPOINT_DIR).",
    )
    parser.add_argument(
        "--export_dir",
        default=None,
        help="Where the trained model is exported (model.keras, config.json): local, gs:// or s3://. Default: "
        "JOB_DIR/export; on SageMaker SM_MODEL_DIR (uploaded when the job ends), on Vertex AI AIP_MODEL_DIR.",
    )
    parser.add_argument(
        "--tensorboard_dir",
        default=None,
        help="Where TensorBoard logs go (train/, validation/): local, gs:// or s3:// (mirrored). Default: "
        "JOB_DIR/logs; on SageMaker SM_OUTPUT_DIR/tensorboard, on Vertex AI AIP_TENSORBOARD_LOG_DIR.",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(presets.PRESETS),
        default=None,
        help="The model's size: "
        + "; ".join(presets.describe(name) for name in sorted(presets.PRESETS))
        + f". Default: {presets.DEFAULT_PRESET} (or what --job_dir was started with, to resume it).",
    )
    parser.add_argument("--model", choices=sorted(presets.PRESETS), default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--condition_on",
        choices=contract.LABEL_KINDS,
        default=None,
        help="Condition the model on this label of the windows (global conditioning, WaveNet section 2.5): "
        "genre or artist, as python -m pipelines.preprocess labelled them (--label_from, --labels_file, a scrape). "
        "Its vocabulary comes from dataset.json, and the sampler's --condition then asks for a value by name. "
        "Default: unconditioned.",
    )
    parser.add_argument(
        "--steps", type=at_least_one, default=100000, help="Total training steps. Default: %(default)s."
    )
    parser.add_argument(
        "--batch_size", type=at_least_one, default=16, help="Global batch size (all replicas). Default: %(default)s."
    )
    parser.add_argument(
        "--crop_samples",
        type=at_least_one,
        default=None,
        help="Random crop of each window, in samples (>= receptive field + 1); bounds memory. "
        "Default: the whole window.",
    )
    parser.add_argument(
        "--gain_augmentation_db",
        type=contract.commands.number_in(0),
        default=0.0,
        help="Train on each crop at a random level: a gain drawn uniformly within +/- this many dB, "
        "lowered where needed so nothing clips, applied to the audio the mu-law codes stand for "
        "(trainer.augment.random_gain; 0 disables). Default: %(default)s.",
    )
    parser.add_argument(
        "--random_polarity",
        action="store_true",
        help="Train on half the crops with the waveform's sign inverted (it sounds the same; "
        "trainer.augment.random_polarity_inversion). Default: off.",
    )
    parser.add_argument(
        "--shuffle_buffer_windows",
        type=at_least_one,
        default=None,
        help="Windows in the training input's shuffle buffer (about window_samples bytes each). The pipeline "
        "writes each track's windows together, so a buffer smaller than the dataset mixes fewer tracks per "
        "batch. Default: as many as fit in 256 MiB per worker (16,777 windows of 16,000 samples), at most the "
        "training split's windows (a larger buffer only repeats them).",
    )
    parser.add_argument(
        "--learning_rate",
        type=contract.commands.number_in(0, above=True),
        default=DEFAULT_LEARNING_RATE,
        help="Adam's peak learning rate. Default: %(default)s (held-out benchmark, BENCHMARKS.md).",
    )
    parser.add_argument(
        "--adam_beta2",
        type=contract.commands.number_in(0, 1),
        default=0.999,
        help="Adam's decay rate of the squared-gradient average (beta_2 of Kingma and Ba, 2015): its memory is "
        "about 1 / (1 - beta2) steps. Default: %(default)s.",
    )
    parser.add_argument(
        "--lr_schedule",
        choices=LR_SCHEDULES,
        default=DEFAULT_LR_SCHEDULE,
        help="constant: the learning rate after the warm-up; cosine: then a cosine decay to 0 at --steps "
        "(Loshchilov and Hutter, SGDR, 2017). Default: %(default)s.",
    )
    parser.add_argument(
        "--warmup_steps",
        type=contract.commands.int_in(0),
        default=DEFAULT_WARMUP_STEPS,
        help="Steps of linear warm-up from 0 to --learning_rate. Default: %(default)s.",
    )
    parser.add_argument(
        "--clip_norm",
        type=contract.commands.number_in(0),
        default=DEFAULT_CLIP_NORM,
        help="Clip the gradients to this global norm (0 disables). Default: %(default)s.",
    )
    parser.add_argument(
        "--steps_per_loop",
        type=at_least_one,
        default=None,
        help="Training steps run on the device between returns to Python (progress, summaries and NaN checks "
        "happen once per loop). Default: "
        + ", ".join(f"{kind} {n}" for kind, n in DEFAULT_STEPS_PER_LOOP.items())
        + " (BENCHMARKS.md).",
    )
    parser.add_argument(
        "--checkpoint_every", type=at_least_one, default=500, help="Steps between checkpoints. Default: %(default)s."
    )
    parser.add_argument(
        "--eval_every", type=at_least_one, default=1000, help="Steps between validation runs. Default: %(default)s."
    )
    parser.add_argument(
        "--eval_batches", type=at_least_one, default=20, help="Validation batches per evaluation. Default: %(default)s."
    )
    parser.add_argument(
        "--summary_audio_secs",
        type=contract.commands.number_in(0),
        default=2.0,
        help="Seconds of audio generated at each evaluation for TensorBoard, by the sampler's fast engine, "
        "with its spectrogram (0 disables). Default: %(default)s.",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="tf.distribute strategy. auto: tpu with --tpu, multi_worker when TF_CONFIG names several workers, "
        "mirrored with several GPUs, else one_device; one_device: the first GPU, or the CPU; mirrored: every "
        "local GPU (synchronous data parallelism); multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG; "
        "tpu: TPUStrategy on --tpu. Default: %(default)s.",
    )
    parser.add_argument(
        "--tpu", default=None, help="TPU name or address; with --strategy auto, selects TPU. Default: none."
    )
    parser.add_argument(
        "--mixed_precision",
        action="store_true",
        help="float16 compute on GPU (bfloat16 on TPU) with float32 weights and loss scaling. Default: off.",
    )
    parser.add_argument("--jit_compile", action="store_true", help="Compile the train step with XLA. Default: off.")
    parser.add_argument(
        "--seed",
        type=contract.commands.int_in(0, 2**32),  # What numpy's global seed (keras.utils.set_random_seed) takes.
        default=0,
        help="Seed for weights, shuffling and cropping, 0 .. 2^32-1. Default: %(default)s.",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="Bit-identical runs: the same command and seed give the same losses and weights, at a cost in speed "
        "(TensorFlow's op determinism, and one op at a time; docs/training.md). Default: off.",
    )
    contract.add_verbose_option(parser)
    contract.storage.add_arguments(parser)
    return parser


def parse_args(argv, environ=None):
    """The options of a command line (`build_parser`), with a managed service's directories where none is given.

    --model, deprecated, names the preset. On SageMaker and Vertex AI the paths
    the user did not give come from the service (`managed_service_paths`).
    Everything the options alone can tell is checked here, before anything
    is read or written (what needs the data or the devices is checked by
    `trainer.task.run_parsed`, still before it writes).

    Args:
      argv: the command line.
      environ: the environment to read the services' variables from (default os.environ).

    Raises:
      SystemExit: (status 2, the usage and the reason on stderr) an unknown option, a missing --data or
        --job_dir, or a value that cannot work (--steps 0, --learning_rate nan, ...).
      NotADirectoryError: a local --job_dir, --export_dir or --tensorboard_dir is, or runs through, an existing
        file (naming that file).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is not None:
        _LOGGER.warning("--model is deprecated in trainer.task: it names a preset, now --preset %s", args.model)
        args.preset = args.preset or args.model
    for name, value in managed_service_paths(os.environ if environ is None else environ).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("data", "job_dir"):
        if getattr(args, name) is None:
            parser.error(f"the following arguments are required: --{name}")
    args.export_dir = args.export_dir or posixpath.join(args.job_dir, contract.EXPORT_DIR)
    args.tensorboard_dir = args.tensorboard_dir or posixpath.join(args.job_dir, "logs")
    for path in (args.job_dir, args.export_dir, args.tensorboard_dir):
        contract.commands.check_directory_path(path)
    return args


def managed_service_paths(environ):
    """The data, job, export and TensorBoard directories a managed training service lays out, by option name.

    SageMaker (sagemaker-training-toolkit's environment): the input channel
    SM_CHANNEL_<NAME> (/opt/ml/input/data/<name>; "training", or the only one);
    SM_MODEL_DIR (/opt/ml/model), uploaded to S3 when the job ends; the
    checkpoint directory /opt/ml/checkpoints beside it, which managed spot
    training syncs to checkpoint_s3_uri and restores on restart; SM_OUTPUT_DIR
    (/opt/ml/output)/tensorboard, what SageMaker's TensorBoard output config
    uploads. Vertex AI custom training: AIP_CHECKPOINT_DIR, AIP_MODEL_DIR,
    AIP_TENSORBOARD_LOG_DIR.

    Returns:
      dict option name -> path, only for what the environment names.
    """
    paths = {}
    if environ.get("SM_MODEL_DIR"):
        channels = {k[len("SM_CHANNEL_") :].lower(): v for k, v in environ.items() if k.startswith("SM_CHANNEL_")}
        if "training" in channels or len(channels) == 1:
            paths["data"] = channels.get("training") or next(iter(channels.values()))
        model_dir = environ["SM_MODEL_DIR"]
        paths["export_dir"] = model_dir
        paths["job_dir"] = os.path.join(os.path.dirname(model_dir.rstrip("/")), "checkpoints")
        if environ.get("SM_OUTPUT_DIR"):
            paths["tensorboard_dir"] = os.path.join(environ["SM_OUTPUT_DIR"], "tensorboard")
    for name, variable in (
        ("job_dir", "AIP_CHECKPOINT_DIR"),
        ("export_dir", "AIP_MODEL_DIR"),
        ("tensorboard_dir", "AIP_TENSORBOARD_LOG_DIR"),
    ):
        if environ.get(variable):
            paths[name] = environ[variable]
    return paths


SAGEMAKER_HYPERPARAMETERS = "/opt/ml/input/config/hyperparameters.json"


def sagemaker_argv(argv, hyperparameters_path=SAGEMAKER_HYPERPARAMETERS):
    """SageMaker starts a training container as `IMAGE train` with its settings in hyperparameters.json.

    Returns:
      argv with `train` replaced by --name=value for each hyperparameter (values
      arrive as strings, possibly JSON-quoted); argv unchanged otherwise.
    """
    if argv != ["train"] or not os.path.exists(hyperparameters_path):
        return argv
    with open(hyperparameters_path) as f:
        hyperparameters = json.load(f)
    flags = []
    for name, value in hyperparameters.items():
        if name.startswith("sagemaker_"):
            continue  # SageMaker's own settings.
        value = str(value)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        flags.append(f"--{name}" if value.lower() == "true" else f"--{name}={value}")
    return flags
