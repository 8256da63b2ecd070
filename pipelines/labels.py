"""Labels of tracks (genre, artist): where they come from and which one wins.

Pure functions, no Beam: the DoFns of `pipelines.transforms` call them. A
track's label of each kind (`contract.LABEL_KINDS`) comes, in this order of
precedence, from:

1. an explicit labels file (`--labels_file FILE`: CSV with a `uri,kind,value`
   header, or JSON lines of {"uri", "kind", "value"}), keyed by track
   identity, so any spelling of a path or URL names the same track;
2. a rule of `--label_from KIND=SOURCE`: `parent_dir` (the name of the
   directory holding the file, or the URL's last path segment before the
   file name) or `tag` (the file's own metadata tag of that name, as FFmpeg
   reads it: ID3, Vorbis comments, MP4 atoms, RIFF INFO; a file without the
   tag keeps what the site said; needs the pyav decoder);
3. what the site said of the track when it was scraped (its genre page, its
   artist).

A kind no source names is `contract.UNKNOWN_LABEL`. Values are stripped of
surrounding white space and cut at `MAX_LABEL_CHARS` (names read from hostile
pages stay small); they are otherwise kept as written.
"""

import csv
import dataclasses
import io
import json
import posixpath
import urllib.parse

from pipelines import contract, sources

PARENT_DIR = "parent_dir"
TAG = "tag"
LABEL_SOURCES = (PARENT_DIR, TAG)
MAX_LABEL_CHARS = 100


class LabelsError(ValueError):
    """A --label_from rule or a labels file is malformed; the message says where."""


@dataclasses.dataclass(frozen=True)
class LabelRules:
    """How this run labels its tracks.

    Attributes:
      label_from: tuple of (kind, source) pairs, source in LABEL_SOURCES.
      explicit: dict track_id -> dict kind -> value, from a labels file.
    """

    label_from: tuple = ()
    explicit: dict = dataclasses.field(default_factory=dict)

    @property
    def needs_tags(self):
        return any(source == TAG for _, source in self.label_from)


def clean_value(value):
    """A label value as stored: a stripped str of at most MAX_LABEL_CHARS, or '' when it says nothing."""
    if not isinstance(value, str):
        value = "" if value is None else str(value)
    return " ".join(value.split())[:MAX_LABEL_CHARS]


def parse_label_from(specs):
    """`--label_from` values -> tuple of (kind, source).

    Args:
      specs: iterable of "KIND=SOURCE" strings (None: none).

    Raises:
      LabelsError: an unknown kind or source, or a kind given twice.
    """
    rules = []
    for spec in specs or ():
        kind, _, source = spec.partition("=")
        kind, source = kind.strip(), source.strip()
        if kind not in contract.LABEL_KINDS:
            raise LabelsError(f"--label_from {spec!r}: the kind must be one of {', '.join(contract.LABEL_KINDS)}")
        if source not in LABEL_SOURCES:
            raise LabelsError(f"--label_from {spec!r}: the source must be one of {', '.join(LABEL_SOURCES)}")
        if any(kind == k for k, _ in rules):
            raise LabelsError(f"--label_from names {kind} twice")
        rules.append((kind, source))
    return tuple(rules)


def parse_labels_file(text, name):
    """The text of a labels file -> dict track_id -> dict kind -> value.

    CSV (a header naming uri, kind and value; other columns are ignored) when
    the name ends in .csv, JSON lines otherwise. A later line for the same
    track and kind replaces an earlier one.

    Args:
      text: the file's contents.
      name: its name, for the format and for messages.

    Raises:
      LabelsError: naming the line that is malformed.
    """
    rows = []
    if name.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        missing = {"uri", "kind", "value"} - set(reader.fieldnames or ())
        if missing:
            raise LabelsError(
                f"{name}: the CSV header must name uri, kind and value (missing {', '.join(sorted(missing))})"
            )
        rows = [(reader.line_num, row) for row in reader]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LabelsError(f"{name} line {number}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise LabelsError(f"{name} line {number}: expected an object with uri, kind and value")
            rows.append((number, row))
    labels = {}
    for number, row in rows:
        uri, kind, value = row.get("uri"), row.get("kind"), clean_value(row.get("value"))
        if not isinstance(uri, str) or not uri.strip():
            raise LabelsError(f"{name} line {number}: no uri")
        if kind not in contract.LABEL_KINDS:
            raise LabelsError(f"{name} line {number}: kind {kind!r} is not one of {', '.join(contract.LABEL_KINDS)}")
        if not value:
            raise LabelsError(f"{name} line {number}: no value")
        labels.setdefault(sources.track_id_for(uri.strip()), {})[kind] = value
    return labels


def read_labels_file(path):
    """Reads a labels file (local, gs://, s3://); see `parse_labels_file`.

    Raises:
      FileNotFoundError: no file there.
      LabelsError: malformed.
    """
    try:
        text = contract.read_bytes(path).decode("utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"--labels_file {path} not found") from None
    return parse_labels_file(text, path)


def parent_dir(uri):
    """The name of the directory holding a track: a local path's, an object's or a URL path's ('' at the root)."""
    path = urllib.parse.urlsplit(uri).path if contract.is_remote(uri) else uri
    path = path.replace("\\", "/")
    return urllib.parse.unquote(posixpath.basename(posixpath.dirname(path)))


def tag_values(metadata):
    """FFmpeg metadata (container and stream dicts merged) -> dict lower-case key -> cleaned value."""
    return {str(key).lower(): clean_value(value) for key, value in metadata.items()}


def resolve(rules, source, tags=None):
    """A track's label of every kind.

    Args:
      rules: LabelRules of the run.
      source: the track's source record (`transforms.source_record`): uri,
        track_id, and the scraped `labels` dict if any.
      tags: the file's metadata (`tag_values`), or None when not read.

    Returns:
      dict kind -> value for every kind of contract.LABEL_KINDS
      (contract.UNKNOWN_LABEL where no source names one).
    """
    labels = {kind: clean_value(value) for kind, value in (source.get("labels") or {}).items()}
    for kind, how in rules.label_from:
        if how == PARENT_DIR:
            labels[kind] = clean_value(parent_dir(source["uri"]))
        elif tags is not None:
            labels[kind] = tags.get(kind, "") or labels.get(kind, "")
    labels.update(rules.explicit.get(source["track_id"], {}))
    return {kind: labels.get(kind) or contract.UNKNOWN_LABEL for kind in contract.LABEL_KINDS}
