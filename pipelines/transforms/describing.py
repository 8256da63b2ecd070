"""Describing and committing: the run's statistics, its DatasetDescription, and the commit of dataset.json."""

import dataclasses
import posixpath

import apache_beam as beam
from apache_beam import pvalue

from pipelines import commit, contract
from pipelines.contract import Accounting, LabelCount, SplitSummary

# The kinds of element `RunStats` is given: what each adds to the run's accounting (`RunStatsFn`).
TRACK, FAILURE, SELECTED, SKIPPED_TRACK, UNUSABLE = "track", "failure", "selected", "skipped", "unusable"


class RunStatsFn(beam.CombineFn):
    """A run's elements, tagged by kind -> (dict split -> SplitSummary without files, its Accounting, label
    counts).

    Kinds (`RunStats` tags them): TRACK, a `contract.TrackRecord` (tracks_ok,
    tracks_silent, tracks_truncated, windows_silent_dropped, the splits and the
    labels); FAILURE, a `contract.FailureRecord` (tracks_failed, or tracks_excluded
    for the licence filter's); SELECTED, a track that went to processing, and
    UNUSABLE, a pattern or listing page that gave none (tracks_input); SKIPPED_TRACK, a
    track already in the output (tracks_input and tracks_skipped_existing). Label
    counts: {kind: {value: contract.LabelCount}}, every kind of contract.LABEL_KINDS
    present. One combine for all of it: each is a Beam stage less at start-up.
    """

    def create_accumulator(self):
        return {split: SplitSummary() for split in contract.SPLITS}, Accounting(), {k: {} for k in contract.LABEL_KINDS}

    def add_input(self, accumulator, tagged):
        splits, accounting, label_counts = accumulator
        kind, element = tagged
        if kind != TRACK:
            return splits, accounting.plus(_counted(kind, element)), label_counts
        track = element
        added = SplitSummary(windows=track.windows, tracks=1, seconds=track.duration_secs)
        added_accounting = Accounting(
            tracks_ok=1,
            tracks_silent=int(track.windows == 0),
            tracks_truncated=int(bool(track.decode_error)),
            windows_silent_dropped=track.windows_silent_dropped,
        )
        track_labels = track.labels or {}
        count = LabelCount(windows=track.windows, tracks=1)
        added_labels = {kind: {track_labels.get(kind, contract.UNKNOWN_LABEL): count} for kind in contract.LABEL_KINDS}
        # In place: a vocabulary of many values (artists) is not copied per track.
        contract.add_label_counts(label_counts, added_labels)
        return {**splits, track.split: splits[track.split].plus(added)}, accounting.plus(added_accounting), label_counts

    def merge_accumulators(self, accumulators):
        splits, accounting, label_counts = self.create_accumulator()
        for other_splits, other_accounting, other_labels in accumulators:
            splits = {name: splits[name].plus(other_splits[name]) for name in contract.SPLITS}
            accounting = accounting.plus(other_accounting)
            contract.add_label_counts(label_counts, other_labels)
        return splits, accounting, label_counts

    def extract_output(self, accumulator):
        return accumulator


def _counted(kind, element):
    if kind == FAILURE:
        return Accounting(tracks_excluded=1) if element.excluded else Accounting(tracks_failed=1)
    if kind == SKIPPED_TRACK:
        return Accounting(tracks_input=1, tracks_skipped_existing=1)
    return Accounting(tracks_input=1)  # SELECTED, UNUSABLE


class RunStats(beam.PTransform):
    """A run's statistics and whole accounting in one combine (`RunStatsFn`), for batch and streaming jobs alike.

    Applied to a dict kind -> PCollection (TRACK, FAILURE, SELECTED, SKIPPED_TRACK,
    UNUSABLE; a kind may hold a tuple of PCollections). Returns a PCollection of
    one (splits, Accounting, label counts): per window with `windowed`, none for an
    empty window.
    """

    def __init__(self, windowed=False):
        super().__init__()
        self._windowed = windowed

    def expand(self, parts):
        tagged = []
        for kind, pcolls in parts.items():
            for i, pcoll in enumerate(pcolls if isinstance(pcolls, tuple) else (pcolls,)):
                tagged.append(pcoll | f"Tag{kind.capitalize()}{i}" >> beam.Map(lambda e, kind=kind: (kind, e)))
        combine = beam.CombineGlobally(RunStatsFn())
        combine = combine.without_defaults() if self._windowed else combine
        return tagged | "Flatten" >> beam.Flatten() | "Combine" >> combine


def describe_run(
    audio_config, validation_fraction, stats, shard_names, run_files, previous=None, continued=False, command=()
):
    """The dataset description after a run (or a streaming window), built in one place.

    Args:
      audio_config: `audio.AudioConfig` the dataset was made with.
      validation_fraction: share of tracks assigned to validation.
      stats: output of `RunStatsFn` for the run: its splits, its whole Accounting, its label counts.
      shard_names: dict split -> shard names (or paths) the run wrote.
      run_files: (run_id, tracks file name, failures file name) of the run.
      previous: the DatasetDescription the run adds to, or None.
      continued: the run may be in `previous` already (a stream's next window): its
        accounting then adds up (`DatasetDescription.with_run`).
      command: the run's command line, credentials left out (`contract.redact_command`).

    Returns:
      contract.DatasetDescription: splits describe the union with `previous`,
      `accounting` the run.
    """
    splits, accounting, label_counts = stats
    run_splits = {
        split: dataclasses.replace(
            splits[split], files=tuple(sorted(posixpath.basename(p) for p in shard_names[split]))
        )
        for split in contract.SPLITS
    }
    run = contract.RunRecord(*run_files, accounting=accounting, command=tuple(command), software=contract.software())
    if previous is not None:
        return previous.with_run(run_splits, run, label_counts, continued=continued)
    return contract.DatasetDescription(
        sample_rate=audio_config.sample_rate,
        quantization_channels=audio_config.quantization_channels,
        window_samples=audio_config.window_samples,
        hop_samples=audio_config.hop_samples,
        decoder=audio_config.decoder,
        resampler=audio_config.resampler,
        silence_threshold_db=audio_config.silence_threshold_db,
        validation_fraction=validation_fraction,
        splits=run_splits,
        runs=(run,),
        labels=label_counts,
    )


def check_same_settings(description, audio_config):
    """Refuses to add to an output whose dataset was made with other settings.

    Raises:
      contract.DatasetMismatchError: naming both values and what to do.
    """
    try:
        contract.check_compatible(
            description,
            "this run",
            sample_rate=audio_config.sample_rate,
            quantization_channels=audio_config.quantization_channels,
            window_samples=audio_config.window_samples,
            hop_samples=audio_config.hop_samples,
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

    def __init__(self, output, audio_config, validation_fraction, run_id, merge, command=()):
        super().__init__()
        self._command = tuple(command)
        self._output = output
        self._audio_config = audio_config
        self._validation_fraction = validation_fraction
        self._run_id = run_id
        self._merge = merge

    def expand(self, inputs):
        def write(stats, train, validation, files):
            splits, accounting, _ = stats
            shard_paths = {contract.TRAIN: train, contract.VALIDATION: validation}
            for split, paths in shard_paths.items():
                if splits[split].windows == 0 and paths:
                    # Beam writes one empty shard for an empty PCollection; keep no empty files.
                    contract.delete(paths)
                    shard_paths[split] = []
            output, run_id, audio_config = self._output, self._run_id, self._audio_config
            run_files = (run_id, contract.tracks_file(run_id), contract.failures_file(run_id))
            commit.check_lease(output, run_id)

            def update(committed):
                if committed is None and accounting.tracks_ok == 0 and accounting.tracks_skipped_existing == 0:
                    return None  # Nothing succeeded and nothing was committed before: an empty dataset would mislead.
                current = committed if self._merge else None
                if current is not None:
                    check_same_settings(current, audio_config)
                fraction = self._validation_fraction
                return describe_run(
                    audio_config, fraction, stats, shard_paths, run_files, current, command=self._command
                )

            committed = commit.commit(output, run_id, update, [contract.join(output, run_files[1])])
            commit.release_lease(output, run_id)
            if committed is not None:
                yield contract.join(output, contract.DATASET_FILE)

        # `stats` holds exactly one element, so this runs once, after every side input is final.
        return inputs["stats"] | "WriteDatasetJson" >> beam.FlatMap(
            write,
            pvalue.AsList(inputs[contract.TRAIN]),
            pvalue.AsList(inputs[contract.VALIDATION]),
            pvalue.AsList(inputs["written_files"]),
        )
