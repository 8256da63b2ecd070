"""Beam transforms of the preprocess pipeline, a room per stage; this package re-exports their public names.

DoFns only wire the pure functions of `pipelines.audio`, `pipelines.sources`
and `pipelines.examples` together, count their work with Beam metrics and
route failures to a tagged output; no audio logic lives here.

- `metrics`: the namespace, counter names and tagged outputs the steps share;
- `inputs`: patterns matched, listings scraped, one source per track, inputs counted;
- `processing`: each track into windows of its split, a track record or a failure;
- `writing`: examples encoded and written as TFRecord shards, records as JSON lines;
- `describing`: the run's statistics, its description, and the commit of dataset.json.
"""

from pipelines.transforms.describing import (  # noqa: F401
    FAILURE,
    SELECTED,
    SKIPPED_TRACK,
    TRACK,
    UNUSABLE,
    RunStats,
    RunStatsFn,
    WriteDatasetDescription,
    check_same_settings,
    describe_run,
)
from pipelines.transforms.inputs import (  # noqa: F401
    CommittedTrackIds,
    ExpandInputs,
    FetchingDoFn,
    MatchInputsFn,
    PickSourceFn,
    ScrapeListingsFn,
    ScrapeTracks,
    SelectSources,
    source_location,
    source_record,
    track_fields,
)
from pipelines.transforms.metrics import (  # noqa: F401
    BYTES_READ,
    EXAMPLES_ENCODED,
    FAILED,
    NAMESPACE,
    PAGES_FAILED,
    PATTERNS_UNMATCHED,
    SAMPLES_OUT,
    SKIPPED,
    TRACKS,
    TRACKS_FAILED_PROCESSING,
    TRACKS_MAX_TRACK_SECS_REACHED,
    TRACKS_OK,
    TRACKS_SCRAPED,
    TRACKS_SILENT,
    TRACKS_SKIPPED_EXISTING,
    TRACKS_STARTED,
    TRACKS_TRUNCATED,
    WINDOWS_KEPT,
    WINDOWS_SILENT_DROPPED,
)
from pipelines.transforms.processing import (  # noqa: F401
    ProcessTrackFn,
    ProcessTracks,
    split_for,
)
from pipelines.transforms.writing import (  # noqa: F401
    EncodeExamples,
    EncodeExamplesFn,
    WriteJsonLines,
    WriteSplit,
)
