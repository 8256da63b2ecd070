"""python -m pipelines.verify OUTPUT: is a preprocess output sound, and what did dead runs leave in it?

    python -m pipelines.verify OUTPUT [--clean] [--break_lease] [--tracks]

Checks the output against its dataset.json (the commit point): every listed
shard exists, its records pass their CRC32C checksums and their count is the
split's window count; every committed run's track index and failures file
exists; every record holds window_samples codes; the track index lists each
split's tracks, each track once; every run's accounting adds up; the dataset
card and attribution.csv describe exactly what is committed (--write_cards
writes them again when stale). Lists the
leftovers of runs that never committed (shards, track and failure files and
beam-temp-* directories of the exact names a run writes, that no committed run
owns) and, with --clean, removes them. --clean never removes a file that
dataset.json names or a file of a name the pipeline could not have written,
and removes nothing when dataset.json cannot be read or does not validate.
Exit status 0 when the dataset is sound, 1 when not.
"""

import dataclasses
import os
import sys

from pipelines import cards, commit, compat, contract, examples
from pipelines.contract import storage


@dataclasses.dataclass
class Report:
    """What `check` found.

    Attributes:
      problems: list of str; empty when the dataset is sound.
      leftovers: top-level names that no committed run owns.
      lease: the Lease held on the output, or None.
      windows: records read from the listed shards.
      tracks: committed track records read.
      unreadable: dataset.json exists but cannot be read or does not validate;
        then nothing is a leftover and --clean refuses.
      stale: what is out of date in the dataset card and attribution.csv (derived from
        dataset.json: the data can be sound with them stale; --write_cards rewrites them).
    """

    problems: list
    leftovers: list
    lease: object = None
    windows: int = 0
    tracks: int = 0
    unreadable: bool = False
    stale: list = dataclasses.field(default_factory=list)


def _check_shard(path, window_samples, decoder, batch=256):
    """(records, [(index, codes) of records whose audio is not window_samples long]) of one shard.

    Raises:
      ValueError: a truncated record or a checksum mismatch.
      IsADirectoryError: the shard is a directory.
    """
    if not contract.is_remote(path) and os.path.isdir(path):
        raise IsADirectoryError("a directory, not a file")
    count, wrong, pending = 0, [], []

    def flush():
        for offset, length in enumerate(decoder.audio_lengths(pending)):
            if length != window_samples:
                wrong.append((count - len(pending) + offset, length))
        pending.clear()

    with contract.open_binary(path) as f:
        for record in compat.read_tfrecords(f):
            pending.append(record)
            count += 1
            if len(pending) == batch:
                flush()
    flush()
    return count, wrong


def check(output, stale_lease_hours=commit.DEFAULT_STALE_LEASE_HOURS):
    """Checks an output against its dataset.json.

    Args:
      output: the output directory (local, gs://, s3://).
      stale_lease_hours: a lease older than this does not protect its run's files.

    Returns:
      Report.
    """
    lease = commit.read_lease(output)
    live = [lease.run_id] if lease is not None and not lease.is_stale(stale_lease_hours * 3600) else []
    try:
        description = contract.read_description(output)
    except FileNotFoundError as e:  # Nothing committed: every file of a run is a leftover.
        leftovers = commit.leftovers(output, None, live, writer_active=bool(live))
        return Report(problems=[str(e)], leftovers=leftovers, lease=lease)
    except contract.ContractError as e:  # What is committed is unknown: nothing is a leftover.
        return Report(problems=[str(e)], leftovers=[], lease=lease, unreadable=True)
    problems, windows = [], 0
    decoder = examples.ExampleDecoder()
    for split, summary in description.splits.items():
        records = 0
        for name in summary.files:
            path = contract.join(output, name)
            if not contract.exists(path):
                problems.append(f"{split} shard {name} is listed but missing")
                continue
            try:
                counted, wrong = _check_shard(path, description.window_samples, decoder)
            except (ValueError, IsADirectoryError) as e:
                problems.append(f"{split} shard {name} is corrupt: {e}")
                continue
            records += counted
            if wrong:
                index, length = wrong[0]
                problems.append(
                    f"{split} shard {name}: {len(wrong)} records hold other than window_samples="
                    f"{description.window_samples} codes (record {index} holds {length})"
                )
        windows += records
        if records != summary.windows:
            problems.append(f"{split}: dataset.json lists {summary.windows} windows, the shards hold {records}")
    tracks_by_split, seen, count = {split: 0 for split in contract.SPLITS}, set(), 0
    for run in description.runs:
        if run.accounting.unaccounted():
            problems.append(f"run {run.run_id}: accounting does not add up ({run.accounting})")
        for name in (run.tracks_file, run.failures_file):
            if "*" not in name and not contract.exists(contract.join(output, name)):
                problems.append(f"run {run.run_id}: {name} is listed but missing")
    tracks = list(commit.committed_tracks(output, description)) if not problems else []
    for track in tracks:
        count += 1
        if track.track_id in seen:
            problems.append(f"track {track.track_id} ({track.uri}) is in the dataset twice")
        seen.add(track.track_id)
        tracks_by_split[track.split] += 1
    if not problems:
        for split, summary in description.splits.items():
            if tracks_by_split[split] != summary.tracks:
                problems.append(
                    f"{split}: dataset.json lists {summary.tracks} tracks, the track indexes {tracks_by_split[split]}"
                )
    for kind, values in description.labels.items():
        labelled = sum(count.windows for count in values.values())
        if labelled != description.windows:
            problems.append(f"labels: {kind} values count {labelled} windows, the splits {description.windows}")
    stale = cards.stale_cards(output, description, tracks) if not problems else []
    return Report(
        problems, commit.leftovers(output, description, live, writer_active=bool(live)), lease, windows, count,
        stale=stale,
    )  # fmt: skip


def build_parser():
    """The parser of `python -m pipelines.verify`."""
    parser = contract.commands.ArgumentParser(
        prog="python -m pipelines.verify",
        description="Check a preprocess output against its dataset.json; list (and remove) what dead runs left.",
    )
    parser.add_argument(
        "output", help="The --output of python -m pipelines.preprocess (local, gs:// or s3://). Required."
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="Remove the leftovers of runs that never committed: only files and beam-temp-* directories of the "
        "exact names a run writes that no committed or live run owns; never a file dataset.json names, never "
        "anything else. Refused (nothing removed) when dataset.json cannot be read or does not validate. "
        "Default: off (list them).",
    )
    parser.add_argument(
        "--break_lease",
        action="store_true",
        help="Remove the lease of a run believed alive (use only when it is dead), then clean as --clean does, "
        "its files included. Default: off.",
    )
    parser.add_argument(
        "--tracks", action="store_true", help="Print the committed track records as JSON lines. Default: off."
    )
    parser.add_argument(
        "--stale_lease_hours",
        type=float,
        default=commit.DEFAULT_STALE_LEASE_HOURS,
        help="A lease older than this no longer protects its run's files. Default: %(default)s.",
    )
    parser.add_argument(
        "--write_cards",
        action="store_true",
        help="Write the dataset card (README.md, or DATASET_CARD.md beside a README.md of yours) and attribution.csv "
        "for what dataset.json commits: for an output committed before cards were written, or when verify calls "
        "them stale. Default: off.",
    )
    storage.add_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    storage.configure(contract.StorageSettings.from_options(args))
    contract.check_access([args.output])
    clean = args.clean or args.break_lease
    report = check(args.output, args.stale_lease_hours)
    if clean and report.unreadable:
        raise contract.ContractError(
            f"{report.problems[0]}. --clean removes nothing while dataset.json cannot be read: which files are "
            "committed is unknown. Restore dataset.json (or move the output's files elsewhere) first."
        )
    if args.break_lease and report.lease is not None:
        contract.delete([contract.join(args.output, commit.LEASE_FILE)])
        print(f"Broke the lease of {report.lease.describe()}")
        report = check(args.output, args.stale_lease_hours)
    committed = not report.unreadable and contract.exists(contract.join(args.output, contract.DATASET_FILE))
    if args.write_cards and committed and report.stale:
        with commit.commit_lock(args.output, commit.new_run_id()):  # As a commit writes them, of what it committed.
            description = contract.read_description(args.output)
            tracks = commit.committed_tracks(args.output, description)
            paths = cards.write_cards(args.output, description, cards.attribution_rows(tracks))
        print(f"Wrote {', '.join(paths)}")
        report = dataclasses.replace(report, stale=[])
    elif args.write_cards and committed:
        print("The dataset card and attribution.csv are current: nothing to write")
    if args.tracks and not report.problems:
        for track in commit.committed_tracks(args.output, contract.read_description(args.output)):
            print(track.to_json())
        return 0
    if report.lease is not None:
        print(f"Lease: held by {report.lease.describe()}")
    for problem in report.problems:
        print(f"problem: {problem}")
    if report.leftovers:
        verb = "Removed" if clean else "Leftovers of runs that did not commit (remove with --clean)"
        if clean:
            commit.remove(args.output, report.leftovers)
        print(f"{verb}: {len(report.leftovers)}")
        for name in report.leftovers:
            print(f"  {name}")
    for stale in report.stale:
        print(f"stale: {stale} (--write_cards writes the cards again)")
    if report.problems:
        print(f"{args.output}: NOT sound ({len(report.problems)} problems)")
        return 1
    cards_note = "; its cards are stale" if report.stale else ""
    print(f"{args.output}: sound ({report.windows} windows, {report.tracks} tracks){cards_note}")
    return 0


if __name__ == "__main__":
    sys.exit(contract.run_command(main))
