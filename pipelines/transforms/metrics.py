"""The names the pipeline's Beam steps share: the metrics namespace, counter names and tagged outputs.

Counters are read back by the driver; those that share a name with an `Accounting` field count the same thing.
"""

NAMESPACE = "preprocess"
PATTERNS_UNMATCHED = "patterns_unmatched"
TRACKS_STARTED = "tracks_started"  # tracks that entered processing (not the accounting's tracks_input)
TRACKS_OK = "tracks_ok"
TRACKS_FAILED_PROCESSING = "tracks_failed_processing"  # a part of the accounting's tracks_failed
TRACKS_EXCLUDED_LICENCE = "tracks_excluded"  # kept out by the licence filter: the accounting's tracks_excluded
TRACKS_SILENT = "tracks_silent"
TRACKS_TRUNCATED = "tracks_truncated"
TRACKS_SKIPPED_EXISTING = "tracks_skipped_existing"
TRACKS_MAX_TRACK_SECS_REACHED = "tracks_max_track_secs_reached"  # the track records' max_track_secs_reached
TRACKS_SCRAPED = "tracks_scraped"
PAGES_FAILED = "listing_pages_failed"
BYTES_READ = "bytes_read"
SAMPLES_OUT = "samples_out"
WINDOWS_KEPT = "windows_kept"
WINDOWS_SILENT_DROPPED = "windows_silent_dropped"
EXAMPLES_ENCODED = "examples_encoded"

# Tagged outputs.
FAILED = "failed"
TRACKS = "tracks"
SKIPPED = "skipped"
