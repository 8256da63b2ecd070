"""The failure vocabulary: every input that cannot be used ends as one record with the stage that failed and why."""

STAGE_MATCH = "match"  # an input pattern matched no file
STAGE_READ = "read"  # a file or URL could not be opened or downloaded
STAGE_DECODE = "decode"  # no decodable audio
STAGE_PROCESS = "process"  # an unexpected error while processing a track
STAGE_WINDOW = "window"  # shorter than one window
STAGE_SCRAPE = "scrape"  # a listing page could not be read
STAGE_MESSAGE = "message"  # a streaming message named no track
STAGE_LICENCE = "licence"  # kept out by the licence filter (counted apart: Accounting.tracks_excluded)
STAGES = (
    STAGE_MATCH, STAGE_READ, STAGE_DECODE, STAGE_PROCESS, STAGE_WINDOW, STAGE_SCRAPE, STAGE_MESSAGE, STAGE_LICENCE,
)  # fmt: skip


class TrackError(Exception):
    """An input could not be used.

    Attributes:
      stage: one of STAGES, where it failed.
      status: the HTTP status of a failed request, or None.
    """

    def __init__(self, stage, message, status=None):
        super().__init__(message)
        self.stage = stage
        self.status = status


def printable(text):
    """`text` as valid UTF-8, for records, logs and Beam's coders (which encode str strictly).

    A file name whose bytes are not UTF-8 (Latin-1 names copied from old
    Windows shares) reaches Python as a str holding surrogate escapes (PEP 383);
    each such byte is written as `\\xNN` here, so `caf\\xe9.mp3` names the Latin-1
    file `café.mp3`. Other text is returned unchanged.

    Args:
      text: str, possibly holding lone surrogates.

    Returns:
      str that encodes to UTF-8.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # Surrogates that stand for no byte (JSON's \udXXX): shown as escapes too.
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")
