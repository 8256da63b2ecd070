"""The contracts shared by the pipeline, the trainer and the sampler: their one home.

`trainer/` and `sampler/` import nothing else from `pipelines` (import-linter
checks it in CI; the sampler's primer also uses `pipelines.audio.recording`).
Each room has one job, and this package re-exports their public names, so
`from pipelines import contract; contract.X` reads the same whatever the room:

- `names`: feature keys, label kinds, splits, the file names a run writes and
  the patterns that match them, the model's layer names;
- `limits`: the audio format both contracts share, its defaults and bounds;
- `mulaw`: the mu-law codec;
- `failures`: `TrackError`, the stage names, `printable` (names as valid UTF-8);
- `records`: the records runs write and read (`TrackRecord`, `FailureRecord`, `ListedTrack`), one reader;
- `dataset`: `DatasetDescription` (dataset.json: built, validated, read,
  written) and the one compatibility check, `check_compatible`;
- `model`: `WaveNetConfig` and `ModelConfig` (export/config.json), finding an export;
- `checks`: the contracts' errors and the checks that raise them;
- `fs`: files through Beam's filesystems, atomic replacement included;
- `storage`: object stores: the storage settings made Beam's filesystem options
  once per process, checks that fail in one line, create-if-absent;
- `cpus`: the CPUs a process may use, the Slurm job step it is a task of, and that task's GPUs;
- `commands`: what every command shares (faults as one line, TensorFlow's
  C++ chatter filtered, progress bars and log lines, the software's name and version).

It imports numpy only at module level (Beam is imported when first used), so
Beam workers, the trainer and the sampler all import it cheaply.
"""

from pipelines.contract.attribution import (  # noqa: F401
    ATTRIBUTION_FILE,
    AttributionRow,
    licence_totals,
    read_attribution,
    write_attribution,
)
from pipelines.contract.checks import (  # noqa: F401
    ContractError,
    DatasetMismatchError,
)
from pipelines.contract.commands import (  # noqa: F401
    DEBUG_ENV,
    NATIVE_LOG_LEVEL_ENV,
    PROGRESS_LOG_INTERVAL_SECS,
    VERBOSE_OPTION,
    CommandError,
    Interrupted,
    LogProgress,
    add_verbose_option,
    detach_children_stderr,
    fault_message,
    filter_native_logs,
    format_duration,
    is_native_noise,
    pipe_stderr,
    progress_bar,
    redact_command,
    redact_url,
    run_command,
    software,
)
from pipelines.contract.cpus import (  # noqa: F401
    SlurmStep,
    bind_task_gpus,
    cgroup_cpu_limit,
    process_stat,
    slurm_array_task,
    slurm_step,
    usable_cpus,
    visible_gpus,
)
from pipelines.contract.dataset import (  # noqa: F401
    DATASET_FORMAT_VERSION,
    Accounting,
    DatasetDescription,
    LabelCount,
    RunRecord,
    SplitSummary,
    add_label_counts,
    check_compatible,
    merge_label_counts,
    read_description,
    write_description,
)
from pipelines.contract.failures import (  # noqa: F401
    STAGE_DECODE,
    STAGE_LICENCE,
    STAGE_MATCH,
    STAGE_MESSAGE,
    STAGE_PROCESS,
    STAGE_READ,
    STAGE_SCRAPE,
    STAGE_WINDOW,
    STAGES,
    TrackError,
    printable,
)
from pipelines.contract.fs import (  # noqa: F401
    TRANSFER_THREADS,
    copy,
    copy_all,
    delete,
    directory_name,
    exists,
    is_remote,
    join,
    match,
    open_binary,
    read_bytes,
    read_contract,
    read_json,
    write_bytes,
    write_text,
)
from pipelines.contract.limits import (  # noqa: F401
    DEFAULT_QUANTIZATION_CHANNELS,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_WINDOW_SAMPLES,
    ENCODING,
    MAX_CHANNELS,
    MAX_CONDITION_VALUES,
    MAX_QUANTIZATION_CHANNELS,
    MAX_RECEPTIVE_FIELD,
    MAX_SAMPLE_RATE,
    MAX_WINDOW_SAMPLES,
    MIN_QUANTIZATION_CHANNELS,
    check_quantization_channels,
)
from pipelines.contract.model import (  # noqa: F401
    MODEL_FORMAT_VERSION,
    UNCONDITIONED_MODEL_FORMAT_VERSION,
    ModelConfig,
    WaveNetConfig,
    fetch_export,
    local_export_dir,
    read_model_config,
    write_model_config,
)
from pipelines.contract.mulaw import (  # noqa: F401
    mu_law_decode,
    mu_law_encode,
    mu_law_encode_reference,
    mu_law_thresholds,
)
from pipelines.contract.names import (  # noqa: F401
    AUDIO_FEATURE,
    CARD_FALLBACK_FILE,
    CARD_FILE,
    CAUSAL_CONV_LAYER,
    COMMIT_LOCK_FILE,
    COMMIT_WRITTEN_FILES,
    CONDITION_INPUT,
    DATASET_FILE,
    EMBEDDING_LAYER,
    EXPORT_DIR,
    FAILURES_PREFIX,
    FEATURES,
    JSONL_SUFFIX,
    LABEL_KINDS,
    LEASE_FILE,
    LOGITS_LAYER,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    OFFSET_FEATURE,
    RUN_ID_PATTERN,
    SKIP_OUT_LAYER,
    SPLITS,
    TFRECORD_SUFFIX,
    TRACK_ID_FEATURE,
    TRACKS_PREFIX,
    TRAIN,
    UNKNOWN_LABEL,
    VALIDATION,
    condition_layer,
    failures_file,
    gate_layer,
    is_commit_temporary,
    label_feature,
    residual_skip_layer,
    run_file_owner,
    run_temp_directory_owner,
    shard_prefix,
    stream_files_glob,
    stream_prefix,
    temporary_name,
    tracks_file,
)
from pipelines.contract.records import (  # noqa: F401
    FailureRecord,
    ListedTrack,
    TrackRecord,
    read_records,
)
from pipelines.contract.storage import (  # noqa: F401
    StorageError,
    StorageSettings,
    check_access,
)
from pipelines.contract.storage import configure as configure_storage  # noqa: F401
