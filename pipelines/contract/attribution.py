"""attribution.csv: one row per committed track with its licence, what CC BY and BY-SA require of whoever uses it.

Written by the pipeline at every commit beside the dataset card (README.md),
read by the trainer for the model card; both through this module, so its
columns have one home.
"""

import csv
import dataclasses
import io

from pipelines.contract import fs
from pipelines.contract.checks import ContractError
from pipelines.contract.names import ATTRIBUTION_FILE

# Terms of a licence as the cards count them: "yes", "no", or "unknown" (a licence we cannot read).
YES, NO, UNKNOWN_TERM = "yes", "no", "unknown"


@dataclasses.dataclass(frozen=True)
class AttributionRow:
    """One committed track and the terms it is used under.

    Attributes:
      track_id: the track's id in the dataset (16 hex digits).
      title, artist: as the source states them ('' when it says nothing).
      licence: SPDX id or expression, a LicenseRef- id, or 'unknown'.
      licence_url: the licence's deed, '' when none is known.
      source_page: the track's page (scraped tracks), else where it was read from.
      duration_secs: seconds of its audio in the dataset.
      attribution, share_alike, non_commercial, no_derivatives: the licence's terms, YES, NO or UNKNOWN_TERM.
      licence_text: the licence as the source wrote it (a tag, a site's string), '' when none.
    """

    track_id: str
    title: str
    artist: str
    licence: str
    licence_url: str
    source_page: str
    duration_secs: float
    attribution: str = UNKNOWN_TERM
    share_alike: str = UNKNOWN_TERM
    non_commercial: str = UNKNOWN_TERM
    no_derivatives: str = UNKNOWN_TERM
    licence_text: str = ""


COLUMNS = tuple(field.name for field in dataclasses.fields(AttributionRow))
# The columns every reader needs; the others (terms, licence_text) read as their defaults where a file lacks them.
REQUIRED_COLUMNS = tuple(f.name for f in dataclasses.fields(AttributionRow) if f.default is dataclasses.MISSING)


def attribution_csv(rows):
    """The CSV text of rows (a header of COLUMNS, one line per row, sorted by artist, title and track id)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: (r.artist.casefold(), r.title.casefold(), r.track_id)):
        values = dataclasses.asdict(row)
        values["duration_secs"] = f"{row.duration_secs:.3f}"
        writer.writerow(values[name] for name in COLUMNS)
    return out.getvalue()


def licence_totals(rows):
    """Tracks and seconds per licence of `rows`, the licence with the most audio first.

    Returns:
      list of (licence, tracks, seconds, a row of that licence: its terms), sorted by seconds, then licence.
    """
    totals = {}
    for row in rows:
        tracks, secs, first = totals.get(row.licence, (0, 0.0, row))
        totals[row.licence] = (tracks + 1, secs + row.duration_secs, first)
    ranked = sorted(totals.items(), key=lambda item: (-item[1][1], item[0]))
    return [(licence, tracks, secs, first) for licence, (tracks, secs, first) in ranked]


def write_attribution(directory, rows):
    """Replaces DIRECTORY/attribution.csv atomically (`fs.write_text`); returns its path."""
    path = fs.join(directory, ATTRIBUTION_FILE)
    fs.write_text(path, attribution_csv(rows), mime_type="text/csv")
    return path


def read_attribution(directory):
    """The rows of DIRECTORY/attribution.csv.

    Columns this version does not know (a later version's) are ignored; optional ones a file lacks (an
    earlier version's) read as their defaults, as the track records do.

    Raises:
      FileNotFoundError: none there (a dataset committed before cards were written).
      ContractError: a required column missing (`REQUIRED_COLUMNS`), or a malformed row.
    """
    path = fs.join(directory, ATTRIBUTION_FILE)
    text = fs.read_bytes(path).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        raise ContractError(f"{path}: no column {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    known = [name for name in COLUMNS if name in reader.fieldnames]
    rows = []
    for number, values in enumerate(reader, start=2):
        try:
            values = {name: values[name] for name in known}
            if None in values.values():
                raise ValueError("fewer fields than columns")
            rows.append(AttributionRow(**{**values, "duration_secs": float(values["duration_secs"])}))
        except (TypeError, ValueError) as e:
            raise ContractError(f"{path} line {number}: {e}") from None
    return rows
