"""Describing and committing: the run's statistics, its DatasetDescription, and the commit of dataset.json."""

import dataclasses
import posixpath

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from pipelines import cards, commit, contract
from pipelines.contract import Accounting, LabelCount, SplitSummary


class DatasetStatsFn(beam.CombineFn):
    """Track records -> (dict split -> SplitSummary without files, Accounting of the tracks' outcomes, label counts).

    The Accounting fills tracks_ok, tracks_silent, tracks_truncated and
    windows_silent_dropped; the input counts come from elsewhere. Label
    counts: {kind: {value: contract.LabelCount}}, every kind of
    contract.LABEL_KINDS present.
    """

    def create_accumulator(self):
        return {split: SplitSummary() for split in contract.SPLITS}, Accounting(), {k: {} for k in contract.LABEL_KINDS}

    def add_input(self, accumulator, track):
        splits, accounting, label_counts = accumulator
        split = track["split"]
        added = SplitSummary(windows=track["windows"], tracks=1, seconds=track["duration_secs"])
        outcome = Accounting(
            tracks_ok=1,
            tracks_silent=int(track["windows"] == 0),
            tracks_truncated=int(bool(track["decode_error"])),
            windows_silent_dropped=track["windows_silent_dropped"],
        )
        track_labels = track.get("labels") or {}
        count = LabelCount(windows=track["windows"], tracks=1)
        added_labels = {kind: {track_labels.get(kind, contract.UNKNOWN_LABEL): count} for kind in contract.LABEL_KINDS}
        # In place: a vocabulary of many values (artists) is not copied per track.
        contract.add_label_counts(label_counts, added_labels)
        return {**splits, split: splits[split].plus(added)}, accounting.plus(outcome), label_counts

    def merge_accumulators(self, accumulators):
        splits, accounting, label_counts = self.create_accumulator()
        for other_splits, other_accounting, other_labels in accumulators:
            splits = {name: splits[name].plus(other_splits[name]) for name in contract.SPLITS}
            accounting = accounting.plus(other_accounting)
            contract.add_label_counts(label_counts, other_labels)
        return splits, accounting, label_counts

    def extract_output(self, accumulator):
        return accumulator


def describe_run(
    config, validation_fraction, stats, shard_names, counts, run_files, previous=None, continued=False, command=()
):
    """The dataset description after a run (or a streaming window), built in one place.

    Args:
      config: `audio.AudioConfig` the dataset was made with.
      validation_fraction: share of tracks assigned to validation.
      stats: output of `DatasetStatsFn` for the run's tracks.
      shard_names: dict split -> shard names (or paths) the run wrote.
      counts: dict with the run's tracks_input (distinct tracks plus unusable
        patterns and listing pages, counted before processing), tracks_failed and
        tracks_excluded (lines of the failures file) and tracks_skipped_existing.
      run_files: (run_id, tracks file name, failures file name) of the run.
      previous: the DatasetDescription the run adds to, or None.
      continued: the run may be in `previous` already (a stream's next window): its
        accounting then adds up (`DatasetDescription.with_run`).
      command: the run's command line, credentials left out (`contract.redact_command`).

    Returns:
      contract.DatasetDescription: splits describe the union with `previous`,
      `accounting` the run.
    """
    splits, outcomes, label_counts = stats
    run_splits = {
        split: dataclasses.replace(
            splits[split], files=tuple(sorted(posixpath.basename(p) for p in shard_names[split]))
        )
        for split in contract.SPLITS
    }
    accounting = dataclasses.replace(outcomes, **counts)
    run = contract.RunRecord(*run_files, accounting=accounting, command=tuple(command), software=cards.software())
    if previous is not None:
        return previous.with_run(run_splits, run, label_counts, continued=continued)
    return contract.DatasetDescription(
        sample_rate=config.sample_rate,
        quantization_channels=config.quantization_channels,
        window_samples=config.window_samples,
        hop_samples=config.hop_samples,
        decoder=config.decoder,
        resampler=config.resampler,
        silence_threshold_db=config.silence_threshold_db,
        validation_fraction=validation_fraction,
        splits=run_splits,
        runs=(run,),
        labels=label_counts,
    )


def check_same_settings(description, config):
    """Refuses to add to an output whose dataset was made with other settings.

    Raises:
      contract.DatasetMismatchError: naming both values and what to do.
    """
    try:
        contract.check_compatible(
            description,
            "this run",
            sample_rate=config.sample_rate,
            quantization_channels=config.quantization_channels,
            window_samples=config.window_samples,
            hop_samples=config.hop_samples,
        )
    except contract.DatasetMismatchError as e:
        raise contract.DatasetMismatchError(
            f"{e}: use another --output, or --skip_existing=false to start afresh"
        ) from None


class WriteDatasetDescription(beam.PTransform):
    """The batch run's commit, once every shard, the failures and the track index are final.

    A run in which no track succeeded, into an output with no dataset yet,
    commits nothing (the driver reports its failures). Runs inside the
    pipeline, so a job launched from a Flex Template, whose launcher returns
    right after submission, still commits its output. It checks that the run
    still holds the output's lease, commits through `commit.commit` (the one
    commit, which streams use too): the run merged into the dataset.json
    current at that moment (merge=True) or replacing it, written in one piece;
    then releases the lease.
    """

    def __init__(self, output_dir, config, validation_fraction, run_id, merge, command=()):
        super().__init__()
        self._command = tuple(command)
        self._output_dir = output_dir
        self._config = config
        self._validation_fraction = validation_fraction
        self._run_id = run_id
        self._merge = merge

    def expand(self, inputs):
        def write(
            stats, train, validation, tracks_input, tracks_failed, tracks_excluded, tracks_skipped_existing, files
        ):
            shard_paths = {contract.TRAIN: train, contract.VALIDATION: validation}
            for split, paths in shard_paths.items():
                if stats[0][split].windows == 0 and paths:
                    # Beam writes one empty shard for an empty PCollection; keep no empty files.
                    FileSystems.delete(paths)
                    shard_paths[split] = []
            counts = {
                "tracks_input": tracks_input,
                "tracks_failed": tracks_failed,
                "tracks_excluded": tracks_excluded,
                "tracks_skipped_existing": tracks_skipped_existing,
            }
            output, run_id, config = self._output_dir, self._run_id, self._config
            run_files = (run_id, contract.tracks_file(run_id), contract.failures_file(run_id))
            commit.check_lease(output, run_id)

            def update(committed):
                if committed is None and stats[1].tracks_ok == 0 and tracks_skipped_existing == 0:
                    return None  # Nothing succeeded and nothing was committed before: an empty dataset would mislead.
                current = committed if self._merge else None
                if current is not None:
                    check_same_settings(current, config)
                fraction = self._validation_fraction
                return describe_run(
                    config, fraction, stats, shard_paths, counts, run_files, current, command=self._command
                )

            committed = commit.commit(output, run_id, update)
            commit.release_lease(output, run_id)
            if committed is not None:
                yield contract.join(output, contract.DATASET_FILE)

        # `stats` holds exactly one element, so this runs once, after every side input is final.
        return inputs["stats"] | "WriteDatasetJson" >> beam.FlatMap(
            write,
            pvalue.AsList(inputs[contract.TRAIN]),
            pvalue.AsList(inputs[contract.VALIDATION]),
            pvalue.AsSingleton(inputs["tracks_input"]),
            pvalue.AsSingleton(inputs["tracks_failed"]),
            pvalue.AsSingleton(inputs["tracks_excluded"]),
            pvalue.AsSingleton(inputs["tracks_skipped_existing"]),
            pvalue.AsList(inputs["written_files"]),
        )
