"""What a preprocess job is asked to do: one frozen value, built once from the command line and validated there.

`pipelines.options.settings` turns the parsed options into a `Settings` in the
entry point (`python -m pipelines.preprocess`), once: the audio config, the fetch
config, the label rules (the labels file read once), the licence rules, the final
validation fraction, the output, the storage settings and the CPU count. Every
stage below (the batch and streaming pipelines, the transforms, the commit) takes
this value, or the part of it it needs, and never reads the options again.
"""

import dataclasses

from pipelines import audio, fetch, labels, licences
from pipelines.contract import StorageSettings


@dataclasses.dataclass(frozen=True)
class Settings:
    """A preprocess job's settings.

    Attributes:
      output: the output directory (local, gs://, s3://).
      inputs: the --input arguments as given (patterns, URLs, @lists); () with scrape_urls only.
      scrape_urls: listing pages to scrape.
      audio: audio.AudioConfig.
      fetch: fetch.FetchConfig.
      labels: labels.LabelRules (the labels file already read).
      licences: licences.LicenceRules.
      validation_fraction: share of tracks held out, in [0, 1] (the bundled clips' default applied).
      skip_existing: add to the committed dataset, skipping its tracks (False: start a new description).
      num_shards: TFRecord shards per split (0: the runner chooses).
      max_pages, max_tracks: the scrape's limits.
      max_failure_fraction: the largest share of failed inputs that still exits 0.
      stale_lease_hours: when another run's lease is taken over.
      storage: contract.StorageSettings, how object stores are reached.
      streaming: run as a stream on input_subscription, committing every streaming_window_secs.
      input_subscription, streaming_window_secs: the stream's source and window, in seconds.
      command: the command line, credentials left out, recorded with the run.
    """

    output: str
    inputs: tuple
    scrape_urls: tuple
    audio: audio.AudioConfig
    fetch: fetch.FetchConfig
    labels: labels.LabelRules
    licences: licences.LicenceRules
    validation_fraction: float
    skip_existing: bool
    num_shards: int
    max_pages: int
    max_tracks: int
    max_failure_fraction: float
    stale_lease_hours: float
    storage: StorageSettings
    streaming: bool
    input_subscription: str
    streaming_window_secs: int
    command: tuple

    def __post_init__(self):
        if not 0.0 <= self.validation_fraction <= 1.0:
            raise ValueError(f"--validation_fraction must be in [0, 1], got {self.validation_fraction}")
        if not 0.0 <= self.max_failure_fraction <= 1.0:
            raise ValueError(f"--max_failure_fraction must be in [0, 1], got {self.max_failure_fraction}")
        if self.num_shards < 0:
            raise ValueError(f"--num_shards must be 0 (the runner chooses) or more, got {self.num_shards}")
        if self.max_pages < 1 or self.max_tracks < 1:
            raise ValueError(f"--max_pages and --max_tracks must be at least 1, got {self.max_pages}, "
                             f"{self.max_tracks}")
        if self.stale_lease_hours <= 0:
            raise ValueError(f"--stale_lease_hours must be positive, got {self.stale_lease_hours}")
        if self.streaming:
            if not self.input_subscription:
                raise ValueError("--streaming needs --input_subscription (projects/PROJECT/subscriptions/NAME)")
            if self.inputs or self.scrape_urls:
                raise ValueError("--streaming reads tracks from --input_subscription only, not --input or --scrape_url")
            if self.streaming_window_secs <= 0:
                raise ValueError(f"--streaming_window_secs must be positive, got {self.streaming_window_secs}")
