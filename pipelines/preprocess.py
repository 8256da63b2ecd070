"""python -m pipelines.preprocess: music files and URLs -> mu-law TFRecord windows.

    match inputs / scrape listings -> one source per track -> Reshuffle -> decode -> mono
      -> resample -> windows -> mu-law -> tf.train.Example -> train-*.tfrecord / validation-*.tfrecord
    plus dataset.json (the commit point) and the run's tracks-RUN.jsonl and failures-RUN.jsonl in --output.

With no --input, processes the clips bundled with the package into ./output
using every core. Runs unchanged on Dataflow, Spark and Flink (--runner).
"""

import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from pipelines import commit, compat, contract, progress, sources, summary, transforms
from pipelines import options as options_module
from pipelines.contract import storage
from pipelines.options import PROG, PreprocessOptions, help_text, unknown_flags

# Set in the Flex Template launcher image (templates/Dockerfile), never on workers or laptops.
FLEX_TEMPLATE_ENV = "FLEX_TEMPLATE_PYTHON_PY_FILE"


class PreprocessError(contract.CommandError):
    """The job ran but its output is not usable; `description` is its `contract.DatasetDescription` (or None)."""

    def __init__(self, message, description=None):
        super().__init__(message)
        self.description = description


def build_pipeline(pipeline, settings, run_id, previous=None):
    """Adds every step of the preprocess job to `pipeline`.

    Args:
      pipeline: a beam.Pipeline.
      settings: the job's `settings.Settings`.
      run_id: this run's id (`commit.new_run_id`), in the name of every file it writes.
      previous: the output's committed `contract.DatasetDescription` whose
        tracks are skipped and to which this run adds, or None to start afresh.

    Returns:
      PCollection holding the path of dataset.json once it is written (the commit).
    """
    audio_config, output = settings.audio, settings.output

    found, failures = [], []
    if settings.inputs:
        patterns = sources.expand_input_arguments(settings.inputs)
        if not patterns:
            raise ValueError("--input names no file: every argument was empty or an empty @list")
        matched, match_failures = pipeline | "ExpandInputs" >> transforms.ExpandInputs(patterns)
        found.append(matched)
        failures.append(match_failures)
    if settings.scrape_urls:
        scraped, scrape_failures = pipeline | "ScrapeTracks" >> transforms.ScrapeTracks(
            settings.scrape_urls, settings.fetch, settings.max_pages, settings.max_tracks
        )
        found.append(scraped)
        failures.append(scrape_failures)

    # The skip set: the tracks of committed runs only, read from the index files dataset.json names.
    existing_ids = pipeline | "CommittedTrackIds" >> transforms.CommittedTrackIds(
        commit.committed_track_indexes(output, previous)
    )

    to_process, skipped = (
        found | "FlattenSources" >> beam.Flatten() | "SelectSources" >> transforms.SelectSources(existing_ids)
    )
    processed = to_process | "ProcessTracks" >> transforms.ProcessTracks(
        audio_config, settings.validation_fraction, settings.fetch, settings.labels, settings.licences
    )
    tracks = processed[transforms.TRACKS]
    failures.append(processed[transforms.FAILED])
    shards = {
        split: processed[split]
        | f"Write{split.capitalize()}" >> transforms.WriteSplit(output, split, run_id, settings.num_shards)
        for split in contract.SPLITS
    }

    all_failures = failures | "FlattenFailures" >> beam.Flatten()
    written = (
        all_failures
        | "WriteFailures" >> transforms.WriteJsonLines(FileSystems.join(output, contract.failures_file(run_id))),
        tracks | "WriteTrackIndex" >> transforms.WriteJsonLines(FileSystems.join(output, contract.tracks_file(run_id))),
    ) | "FlattenWrittenFiles" >> beam.Flatten()

    unusable_inputs = tuple(failures[:-1])  # Of patterns and listing pages (processing's failures are tracks').
    stats = {
        transforms.TRACK: tracks,
        transforms.FAILURE: all_failures,
        transforms.SELECTED: to_process,
        transforms.SKIPPED_TRACK: skipped,
        transforms.UNUSABLE: unusable_inputs,
    } | "RunStats" >> transforms.RunStats()
    return {
        "stats": stats,
        "written_files": written,
        **shards,
    } | "Commit" >> transforms.WriteDatasetDescription(
        output, audio_config, settings.validation_fraction, run_id, merge=previous is not None, command=settings.command
    )


def local_runner(options, argv):
    """The runner for a job started without --runner: Beam's FnApiRunner, one process per CPU this process may use
    (`contract.usable_cpus`: affinity, cgroup quota, the Slurm allocation).

    The FnApiRunner is the engine behind Beam's DirectRunner. Naming it keeps
    local runs predictable: Beam 2.77's DirectRunner first tries to download
    the Prism runner from GitHub, which fails on machines without internet
    access (costing time on every run) and runs a different engine on those
    with it. An explicit --runner (DirectRunner included) is left to Beam.

    Returns:
      a runner instance, or None when --runner was given.
    """
    if options.view_as(StandardOptions).runner is not None:
        return None
    direct = options.view_as(DirectOptions)
    if not any(arg.startswith("--direct_num_workers") for arg in argv):
        direct.direct_num_workers = contract.usable_cpus()  # Not 0: Beam's 0 counts the node's cores.
    if not any(arg.startswith("--direct_running_mode") for arg in argv):
        direct.direct_running_mode = "multi_processing"
    return compat.fn_api_runner(options)


def check_description(description, max_failure_fraction):
    """Raises PreprocessError when inputs went missing, none succeeded, or too many failed.

    Args:
      description: contract.DatasetDescription.
      max_failure_fraction: largest acceptable share of failed inputs.
    """
    accounting = description.accounting
    ok, failed, total = accounting.tracks_ok, accounting.tracks_failed, accounting.tracks_input
    excluded = accounting.tracks_excluded
    skipped = accounting.tracks_skipped_existing
    failures_file = description.runs[-1].failures_file
    if accounting.unaccounted():
        raise PreprocessError(
            f"accounting does not hold: {ok} ok + {failed} failed + {excluded} excluded + {skipped} skipped "
            f"!= {total} inputs",
            description,
        )
    if ok == 0 and skipped == 0:
        raise PreprocessError(
            f"no track succeeded ({failed} of {total} inputs failed"
            + (f", {excluded} were excluded by the licence filter" if excluded else "")
            + f"; reasons in {failures_file})",
            description,
        )
    if total and failed / total > max_failure_fraction:
        raise PreprocessError(
            f"{failed} of {total} inputs failed ({failed / total:.0%}), more than "
            f"--max_failure_fraction={max_failure_fraction:g}; reasons in {failures_file}",
            description,
        )


def run(argv=None, save_main_session=True):
    """Builds and runs the preprocess pipeline.

    Args:
      argv: command-line arguments (ours and Beam's); None reads sys.argv.
      save_main_session: pickle the main module's globals for workers.

    Returns:
      the output's contract.DatasetDescription, or None when the runner only submitted the job.

    Raises:
      PreprocessError: when no track succeeded or the failed share passes
        --max_failure_fraction.
      commit.LeaseError: another live run is writing into --output.
      ValueError: for inconsistent options, or an output made with other settings.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():
        return _run(argv, save_main_session)

    def interrupt(signum, frame):
        # Ctrl-C reaches every process of the group, workers that are still starting up among them: what they
        # print as they die is dropped (`contract.pipe_stderr`, from `main`), what they log through the runner is
        # not heard (Beam's loggers stay quiet for the rest of this process: its run is over), and they are
        # stopped before Beam unwinds (stopped gracefully, they would print their shutdown chatter).
        contract.detach_children_stderr()
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
        _stop_local_workers()
        raise contract.Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _quiet_worker_watchers():
            return _run(argv, save_main_session)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(argv, save_main_session):
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return None
    unknown = unknown_flags(argv)
    if unknown:  # Refused as every command refuses one: the usage, the option meant, exit status 2.
        compat.options_parser(PreprocessOptions, prog=PROG).error("; ".join(unknown))
    options = PreprocessOptions(argv)
    setup = options.view_as(SetupOptions)
    setup.save_main_session = save_main_session
    # Local worker processes import pipelines.workers at start: they reach stores as this process does, and leave
    # Ctrl-C to it.
    setup.beam_plugins = sorted({*(setup.beam_plugins or []), "pipelines.workers"})
    runner = local_runner(options, argv)
    settings = options_module.settings(options, argv)  # Every option parsed and checked, once, before any work.
    contract.commands.check_directory_path(settings.output)
    storage.configure(settings.storage)
    output = settings.output
    local = runner is not None or options.view_as(StandardOptions).runner == "DirectRunner"
    # Inputs are matched by the job: checked here only when this process runs it (a cluster's workers have
    # their own credentials). Every fault is then one line before any work, not a minute of retries later.
    contract.check_access([output, *(_store_patterns(settings.inputs) if local else [])])
    if settings.streaming:
        return _run_streaming(options, settings)
    run_id = commit.new_run_id()
    _, stale = commit.acquire_lease(output, run_id, local, settings.stale_lease_hours * 3600)
    if stale is not None:
        logging.warning("Took over the stale lease of %s on %s.", stale.describe(), output)
    try:
        try:
            committed = commit.current_description(output)
        except contract.ContractError as e:
            raise contract.ContractError(
                f"{e}. Nothing was changed: restore {contract.DATASET_FILE}, or use another --output"
            ) from None
        if committed is not None and settings.skip_existing:
            transforms.check_same_settings(committed, settings.audio)
        left = commit.leftovers(output, committed, live_run_ids=[run_id])
        if left:
            commit.remove(output, left)
            logging.warning("Removed %d leftovers of runs that did not commit: %s", len(left), ", ".join(left[:5]))
        previous = committed if settings.skip_existing else None
        previous_secs = previous.seconds if previous else 0.0

        started = time.monotonic()
        pipeline = beam.Pipeline(runner=runner, options=options)
        build_pipeline(pipeline, settings, run_id, previous)
        if os.environ.get(FLEX_TEMPLATE_ENV):
            # Launched from a Dataflow Flex Template: the launcher must return once the job is submitted.
            pipeline.run()
            logging.info("Submitted from a Flex Template; the job commits dataset.json when it finishes.")
            return None
        try:
            with progress.Reporter() if local else contextlib.nullcontext():
                result = pipeline.run()
                state = result.wait_until_finish()
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, the local workers already stopped (`run`).
            interrupted = e if isinstance(e, contract.Interrupted) else contract.Interrupted()
            raise interrupted.with_detail(_what_is_committed(output)) from None
        except Exception as e:
            reason = contract.fault_message(e)
            if reason is None:
                raise  # A bug: its traceback says more than a line would.
            raise PreprocessError(f"the job failed: {reason}. {_what_is_committed(output)}") from e
    except BaseException:
        if local:
            commit.release_lease(output, run_id)  # Nothing of this run was committed; its files are leftovers.
        raise
    wall_secs = time.monotonic() - started
    if state != PipelineState.DONE:
        logging.info("Pipeline submitted (state %s); the job commits dataset.json when it finishes.", state)
        return None

    description = commit.current_description(output)
    if description is None or run_id not in description.run_ids:
        raise _nothing_committed(output, run_id)
    new_secs = description.seconds - previous_secs
    failures = summary.read_failures(output, description.runs[-1].failures_file)
    print(summary.format_summary(description, output, wall_secs, new_secs, failures))
    _log_counters(result)
    check_description(description, settings.max_failure_fraction)
    return description


def _store_patterns(inputs):
    """The object-store patterns and @list files among --input arguments."""
    paths = [argument[1:] if argument.startswith("@") else argument for argument in inputs or ()]
    return [path for path in paths if storage.bucket_of(path) is not None]


def _nothing_committed(output, run_id):
    """After a run in which no track succeeded: its failures printed, its files removed, the error to raise."""
    failures_file = contract.failures_file(run_id)
    failures = summary.read_failures(output, failures_file)
    path = contract.join(output, failures_file)
    print("\n".join(["Failures:", *summary.format_failures(failures, path)]), file=sys.stderr)
    # The failures file stays, as the record of why (the next run removes it); the rest of the run goes now.
    mine = [n for n, _ in commit.top_level_entries(output) if commit.run_owner(n) == run_id and n != failures_file]
    commit.remove(output, mine)
    excluded = sum(f.excluded for f in failures)
    outcome = f"{len(failures) - excluded} of {len(failures)} inputs failed" + (
        f", {excluded} were excluded by the licence filter" if excluded else ""
    )
    return PreprocessError(
        f"no track succeeded ({outcome}; reasons above and in {path}); nothing was committed to {output}"
    )


def _stop_local_workers():
    """Stops the local runner's SDK worker processes (this process's descendants) at once, and quietly.

    They ignore Ctrl-C (`pipelines.workers`), so that a terminal's SIGINT to the
    whole process group does not fill it with each worker's traceback; killed,
    they print nothing (Beam starts each through a shell, which does die of the
    signal: `_quiet_worker_watchers` keeps that from being heard).
    """
    _killed_workers.set()
    for pid in _descendant_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


_killed_workers = threading.Event()
_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")


@contextlib.contextmanager
def _quiet_worker_watchers():
    """Silences the threads of Beam's local runner that watch a worker (`run_worker`) when the worker ended by a
    signal meant for this whole job (Ctrl-C's SIGINT, SIGTERM) or by `_stop_local_workers`, and its gRPC threads
    (`read_grpc_client_inputs`, ...) whose streams to the workers `_stop_local_workers` cut; other ends are heard.
    After workers were stopped, that stays so until the next run: their streams may break a moment later."""
    previous_hook = threading.excepthook
    _killed_workers.clear()  # This run's workers: none stopped yet.

    def hook(args):
        match = _WORKER_EXIT.search(str(args.exc_value)) if args.thread and args.thread.name == "run_worker" else None
        if match and (int(match.group(1)) in (-2, -15) or _killed_workers.is_set()):
            return
        if _killed_workers.is_set() and type(args.exc_value).__module__.split(".")[0] == "grpc":
            return
        previous_hook(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        if not _killed_workers.is_set():
            threading.excepthook = previous_hook


def _descendant_pids():
    """The pids of this process's descendants, children first (Linux /proc; none elsewhere)."""
    parents = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        fields = contract.process_stat(entry) if entry.isdigit() else None
        if fields is not None:
            parents[int(entry)] = int(fields[1])  # Field 4, the parent pid.
    found, frontier = [], [os.getpid()]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def _what_is_committed(output):
    """After a failed run: what the output's readers still see, in one sentence."""
    try:
        description = commit.current_description(output)
    except contract.ContractError as e:
        return f"The output's {contract.DATASET_FILE} cannot be read: {e}"
    if description is None:
        return f"Nothing was committed; {output} holds no dataset yet."
    return (
        f"Nothing of this run was committed: {contract.join(output, contract.DATASET_FILE)} is as before "
        f"({description.windows} windows of {len(description.runs)} run(s)) and readable."
    )


def _run_streaming(options, settings):
    """Submits the streaming job (it runs until cancelled) and returns None."""
    from pipelines import streaming

    pipeline = beam.Pipeline(options=options)
    messages = pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(
        subscription=settings.input_subscription, with_attributes=True
    )
    streaming.build_streaming_pipeline(messages, settings)
    pipeline.run()
    logging.warning(
        "Streaming job submitted; it writes into %s every %d s.", settings.output, settings.streaming_window_secs
    )
    return None


def _log_counters(result):
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(transforms.NAMESPACE))["counters"]
    except (NotImplementedError, KeyError):  # Some runners do not report metrics.
        return
    totals = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (counter.committed or 0)
    logging.info("Beam counters: %s", ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Local worker processes forward every log line at its own level; their
    # warnings are Beam's start-up chatter, their errors still show.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    contract.pipe_stderr()  # The local workers write into it too: an interruption can silence them.
    sys.argv[0] = PROG  # Beam's option parser names the command after it in its errors, as users type it.
    sys.exit(contract.run_command(run))


if __name__ == "__main__":
    main()
