"""What a local run prints when it ends: the summary of the dataset, the first failures, the warnings."""

from apache_beam.io.filesystems import FileSystems

from pipelines import contract

FAILURES_SHOWN = 5


def read_failures(output, failures_file):
    """The `contract.FailureRecord`s of a run's failures file ([] when it has none)."""
    try:
        return contract.read_records(contract.join(output, failures_file), contract.FailureRecord)
    except FileNotFoundError:
        return []


def format_failures(failures, failures_file, shown=FAILURES_SHOWN):
    """The first failures with their reasons, one line each, and how many more there are."""
    lines = [f"  {f.uri}: {f.stage}: {f.error}" for f in failures[:shown]]
    if len(failures) > shown:
        lines.append(f"  ... and {len(failures) - shown} more in {failures_file}")
    return lines


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_summary(description, output, wall_secs, new_secs, failures=()):
    """The closing summary printed after a local run, as a str.

    Args:
      description: contract.DatasetDescription.
      output: the output directory.
      wall_secs: the job's wall time.
      new_secs: seconds of audio this run processed.
      failures: the run's failure records (the first few are shown with their reasons).
    """
    accounting = description.accounting
    seconds = description.seconds
    skipped = accounting.tracks_skipped_existing
    excluded = accounting.tracks_excluded
    lines = [
        f"Tracks: {accounting.tracks_ok} ok, {accounting.tracks_failed} failed"
        + (f", {excluded} excluded by the licence filter " if excluded else " ")
        + (f"({skipped} already in the output) " if skipped else "")
        + f"of {accounting.tracks_input} inputs"
        + (
            f" ({accounting.tracks_truncated} kept in part, corrupt data dropped: see decode_error in the track index)"
            if accounting.tracks_truncated
            else ""
        ),
        f"Audio in the dataset: {seconds / 3600:.3f} h ({seconds:.1f} s) at {description.sample_rate} Hz, "
        f"{description.encoding} {description.quantization_channels} channels",
        "Windows: "
        + ", ".join(
            f"{name} {split.windows} ({_count(split.tracks, 'track')}, {_count(len(split.files), 'shard')})"
            for name, split in description.splits.items()
        )
        + f"; {accounting.windows_silent_dropped} silent dropped",
        *_label_lines(description),
        f"Throughput: {new_secs / wall_secs:.1f}x real time ({new_secs:.1f} s of audio in {wall_secs:.1f} s wall)",
        f"Output: {FileSystems.join(output, contract.DATASET_FILE)}",
    ]
    for name, split in description.splits.items():
        warning = empty_split_warning(name, description) if split.tracks == 0 and description.windows else None
        if warning:
            lines.append(warning)
    lines += _licence_lines(output)
    path = FileSystems.join(output, description.runs[-1].failures_file)
    kept_out = [f for f in failures if f.excluded]
    failed = [f for f in failures if not f.excluded]
    if failed:
        lines += [f"Failures ({len(failed)}, all in {path}):", *format_failures(failed, path)]
    if kept_out:
        lines += [f"Excluded by the licence filter ({len(kept_out)}, all in {path}):", *format_failures(kept_out, path)]
    return "\n".join(lines)


def _licence_lines(output, shown=4):
    """The licences in the dataset, by tracks, and where its card and attribution.csv are."""
    from pipelines import cards

    try:
        rows = contract.read_attribution(output)
    except (FileNotFoundError, contract.ContractError):
        return []
    ranked = sorted(((licence, n) for licence, n, _, _ in contract.licence_totals(rows)), key=lambda i: (-i[1], i[0]))
    text = ", ".join(f"{licence} {_count(n, 'track')}" for licence, n in ranked[:shown])
    more = f", ... ({len(ranked)} licences)" if len(ranked) > shown else ""
    card = FileSystems.join(output, cards.card_file(output))
    return [f"Licences: {text}{more} (card: {card}; {contract.ATTRIBUTION_FILE} beside it)"]


def empty_split_warning(split, description):
    """What to pass when a split came out empty by chance (the split of each track is a hash of its id).

    Returns:
      str, or None when the split is empty as asked: --validation_fraction 0 holds no track out, 1 all of them.
    """
    tracks = sum(s.tracks for s in description.splits.values())
    fraction = description.validation_fraction
    if fraction == (0.0 if split == contract.VALIDATION else 1.0):
        return None
    if split == contract.VALIDATION:
        wanted = min(1.0, round(1.5 / tracks, 2)) if tracks else 1.0
        return (
            f"Warning: the validation split is empty: {tracks} track(s) at --validation_fraction {fraction:g} "
            f"give {tracks * fraction:.1f} expected. Training will report no validation loss; pass "
            f"--validation_fraction {wanted:g} or more (with --skip_existing=false to re-split these tracks)"
        )
    return (
        f"Warning: the train split is empty ({tracks} track(s) at --validation_fraction {fraction:g}): "
        "pass a smaller --validation_fraction (with --skip_existing=false to re-split these tracks)"
    )


def _label_lines(description, shown=6):
    """A line per label kind that says something: its values by windows, the most common first."""
    lines = []
    for kind in contract.LABEL_KINDS:
        counts = description.labels.get(kind, {})
        if set(counts) <= {contract.UNKNOWN_LABEL}:
            continue
        ranked = sorted(counts.items(), key=lambda item: (-item[1].windows, item[0]))
        text = ", ".join(f"{value} {count.windows}" for value, count in ranked[:shown])
        more = f", ... ({len(ranked)} values)" if len(ranked) > shown else ""
        lines.append(f"Windows by {kind}: {text}{more}")
    return lines
