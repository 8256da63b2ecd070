"""Command-line options of `python -m pipelines.preprocess`.

A `PipelineOptions` subclass, so every Beam option (--runner,
--direct_num_workers, --temp_location, --setup_file, ...) works beside these,
and a Dataflow Flex Template's metadata.json can mirror them.
"""

import math
import os

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import audio, commit, compat, contract, fetch, labels, licences, listings
from pipelines.sources import PACKAGE_DATA_DIR

# The bundled clips processed when no --input is given.
DEFAULT_INPUTS = (os.path.join(PACKAGE_DATA_DIR, "*.mp3"), os.path.join(PACKAGE_DATA_DIR, "*.ogg"))
DEFAULT_VALIDATION_FRACTION = 0.1
# Four bundled clips: at 0.1 the validation split would usually be empty. Their ids do not depend on
# where the package is installed, so at 0.5 the same clip (Awakening) is held out on every install.
BUNDLED_VALIDATION_FRACTION = 0.5


def _bool(text):
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _float_or_inf(text):
    return -math.inf if text.strip().lower() in ("-inf", "off", "none") else float(text)


# AudioConfig's defaults are the options' defaults: one home for each.
_AUDIO_DEFAULTS = audio.AudioConfig()


class PreprocessOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group(
            "preprocess",
            "Every Apache Beam pipeline option (--runner, --direct_num_workers, --temp_location, "
            "--setup_file, --project, --region, ...) is accepted beside these.",
        )
        group.add_argument(
            "--input",
            action="append",
            default=None,
            help="Audio to process; repeatable. A local path, directory or glob, a gs:// or s3:// "
            "glob, an http(s):// URL, or @list.txt naming a file with one of those per line. "
            "Default: the clips bundled with the package, unless --scrape_url is given.",
        )
        group.add_argument(
            "--scrape_url",
            action="append",
            default=None,
            help="Listing page (Free Music Archive layout) to scrape for track URLs; repeatable. "
            "Its pagination is followed, the tracks are downloaded and processed in the same job, "
            "and their title, artist, licence and page go into the run's track index (tracks-RUN.jsonl). "
            "Default: none.",
        )
        group.add_argument(
            "--label_from",
            action="append",
            default=None,
            metavar="KIND=SOURCE",
            help=f"Label every track's KIND ({', '.join(contract.LABEL_KINDS)}) from SOURCE; repeatable. "
            "parent_dir: the name of the directory (or URL path segment) holding the file, e.g. "
            "genre=parent_dir for music/ambient/*.mp3; tag: the file's own metadata tag of that name (ID3, "
            "Vorbis comments, MP4; pyav decoder). Wins over what a scraped site said. Labels go into every "
            "window (label/KIND features) and each kind's vocabulary into dataset.json; a track without one "
            f"is '{contract.UNKNOWN_LABEL}'. Default: scraped tracks carry their genre page's genre and their "
            "artist, other tracks no labels.",
        )
        group.add_argument(
            "--labels_file",
            default=None,
            metavar="FILE",
            help="Labels file (local, gs://, s3://): CSV with a uri,kind,value header, or JSON lines of "
            '{"uri": ..., "kind": ..., "value": ...}; any spelling of a track\'s path or URL names it. Wins over '
            "--label_from and the scrape. Default: none.",
        )
        group.add_argument(
            "--licence",
            default=None,
            metavar="SPDX",
            help="The licence of every input of this run, as an SPDX id or expression (CC-BY-4.0, "
            "'CC-BY-SA-3.0 OR MIT'); it wins over what files' tags and sites say. Default: each track's own, from "
            "what a scraped site says, else the file's tags (ID3 TCOP/WCOP, Vorbis and FLAC LICENSE/COPYRIGHT, MP4 "
            "cprt), else unknown.",
        )
        group.add_argument(
            "--licence_filter",
            default=None,
            choices=licences.POLICIES,
            help="Keep only tracks whose licence allows it: commercial-derivatives (commercial use and derived "
            "works: CC BY, CC BY-SA, CC0, Free Art License, ...), permissive (the same without share-alike), "
            "noncommercial (derived works, commercial or not: adds CC BY-NC and BY-NC-SA). A track kept out is a "
            "line of the failures file at stage 'licence' with the reason, counted in the summary and dataset.json "
            "(tracks_excluded); a scraped one is never downloaded. Default: keep every licence.",
        )
        group.add_argument(
            "--licence_allow",
            action="append",
            default=None,
            metavar="SPDX_OR_PATTERN",
            help="Also keep tracks of these licences: SPDX ids or shell patterns (CC-BY-*, CC0-1.0), repeatable or "
            "comma-separated; alone, keep only these. Default: none.",
        )
        group.add_argument(
            "--licence_allow_unknown",
            action="store_true",
            help="With --licence_filter or --licence_allow, also keep tracks whose licence is unknown. Default: off "
            "(every filter keeps unknown licences out).",
        )
        listings.add_limits(group)
        fetch.add_arguments(group)
        group.add_argument(
            "--skip_existing",
            type=_bool,
            nargs="?",
            const=True,
            default=True,
            help="Skip tracks already committed in --output (those its dataset.json lists) and add the new ones "
            "beside them, so a re-run never duplicates windows and dataset.json describes the union. "
            "--skip_existing=false starts a new description; the old files are then leftovers that the next "
            "run or python -m pipelines.verify --clean removes. Default: true.",
        )
        group.add_argument(
            "--output",
            default="output",
            help="Directory (local, gs:// or s3://) for the TFRecord shards, dataset.json, "
            "each run's track index and failures (tracks-RUN.jsonl, failures-RUN.jsonl). Default: ./output.",
        )
        group.add_argument(
            "--sample_rate",
            type=int,
            default=_AUDIO_DEFAULTS.sample_rate,
            help="Output sample rate in Hz. Default: %(default)s.",
        )
        group.add_argument(
            "--quantization_channels",
            type=int,
            default=_AUDIO_DEFAULTS.quantization_channels,
            help="Number of mu-law levels, 2..256. Default: %(default)s.",
        )
        group.add_argument(
            "--window_samples",
            type=int,
            default=_AUDIO_DEFAULTS.window_samples,
            help="Samples per training window, at --sample_rate. Default: %(default)s.",
        )
        group.add_argument(
            "--hop_samples",
            type=int,
            default=None,
            help="Samples between window starts; smaller than --window_samples overlaps windows. "
            "Default: equal to --window_samples.",
        )
        group.add_argument(
            "--validation_fraction",
            type=float,
            default=None,
            help="Share of tracks (not windows) assigned to the validation split, chosen by a "
            f"stable hash of the track id. Default: {DEFAULT_VALIDATION_FRACTION}; "
            f"{BUNDLED_VALIDATION_FRACTION} for the bundled clips (no --input), so that both splits hold one.",
        )
        group.add_argument(
            "--stale_lease_hours",
            type=float,
            default=commit.DEFAULT_STALE_LEASE_HOURS,
            help="A run takes a lease on --output and refuses to start while another live run holds it. A lease "
            "is stale, and taken over, when its run started on this machine and its process is gone, or when it "
            "is older than this many hours. Default: %(default)s.",
        )
        group.add_argument(
            "--decoder",
            choices=audio.DECODERS,
            default=_AUDIO_DEFAULTS.decoder,
            help="pyav: in-process FFmpeg, streams from the file, no temporary files. pydub: runs the ffmpeg and "
            "ffprobe executables, which must be on PATH. Default: %(default)s.",
        )
        group.add_argument(
            "--resampler",
            choices=audio.RESAMPLERS,
            default=_AUDIO_DEFAULTS.resampler,
            help="soxr_hq or soxr_vhq: libsoxr. kaiser_best, kaiser_fast: resampy's filters (much slower). "
            "Default: %(default)s.",
        )
        group.add_argument(
            "--silence_threshold_db",
            type=_float_or_inf,
            default=_AUDIO_DEFAULTS.silence_threshold_db,
            help="Windows whose peak is below this level in dBFS are digital silence: counted "
            "and dropped. '-inf' keeps every window. Default: %(default)s.",
        )
        group.add_argument(
            "--max_track_secs",
            type=float,
            default=_AUDIO_DEFAULTS.max_track_secs,
            help="Audio of a track past this many seconds is not processed (hours of silence in a small file, "
            "a stream that never ends); its track record says so. Default: %(default)s (two hours).",
        )
        group.add_argument(
            "--max_failure_fraction",
            type=float,
            default=0.5,
            help="Exit non-zero when more than this share of inputs failed (every failure is in "
            "the run's failures-RUN.jsonl either way). Default: %(default)s.",
        )
        group.add_argument(
            "--num_shards",
            type=int,
            default=0,
            help="TFRecord shards per split; 0 lets the runner choose. Default: %(default)s.",
        )
        group.add_argument(
            "--input_subscription",
            default=None,
            help="With --streaming: Pub/Sub subscription (projects/PROJECT/subscriptions/NAME) whose messages "
            "name tracks: Cloud Storage notifications, or a path or URL per message. Default: none.",
        )
        group.add_argument(
            "--streaming_window_secs",
            type=int,
            default=60,
            help="With --streaming: length in seconds of the stream's fixed windows; each window's shards, "
            "failures and track files are written when it closes. Default: %(default)s.",
        )

    def label_rules(self):
        """The `labels.LabelRules` these options describe (reads --labels_file).

        Raises:
          labels.LabelsError: a malformed rule or file; FileNotFoundError: the --labels_file is missing.
        """
        rules = labels.parse_label_from(self.label_from)
        explicit = labels.read_labels_file(self.labels_file) if self.labels_file else {}
        return labels.LabelRules(label_from=rules, explicit=explicit)

    def fetch_config(self):
        """The `fetch.FetchConfig` these options describe."""
        return fetch.config_from_options(self)

    def licence_rules(self):
        """The `licences.LicenceRules` these options describe.

        Raises:
          ValueError: a --licence that is not an SPDX id or expression, or an allow list that names none.
        """
        stated = licences.parse_user_licence(self.licence) if self.licence else None
        return licences.LicenceRules(
            stated=stated,
            filter=licences.parse_filter(self.licence_filter, self.licence_allow or (), self.licence_allow_unknown),
        )

    def audio_config(self):
        """The `AudioConfig` these options describe; raises ValueError when inconsistent."""
        return audio.AudioConfig(
            sample_rate=self.sample_rate,
            quantization_channels=self.quantization_channels,
            window_samples=self.window_samples,
            hop_samples=self.hop_samples or self.window_samples,
            decoder=self.decoder,
            resampler=self.resampler,
            silence_threshold_db=self.silence_threshold_db,
            max_track_secs=self.max_track_secs,
        )


def settings(options, argv=()):
    """The one `settings.Settings` of a job: its options parsed once, validated, frozen.

    Args:
      options: PipelineOptions (any view) of the command line.
      argv: the command line, recorded with the run (credentials left out).

    Raises:
      ValueError: inconsistent options, a bad --licence or licence allow list.
      labels.LabelsError: a malformed --label_from or labels file; FileNotFoundError: a missing labels file.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    from pipelines.settings import Settings

    ours = options.view_as(PreprocessOptions)
    streaming = bool(options.view_as(StandardOptions).streaming)
    bundled = not ours.input and not ours.scrape_url and not streaming
    fraction = ours.validation_fraction
    if fraction is None:
        fraction = BUNDLED_VALIDATION_FRACTION if bundled else DEFAULT_VALIDATION_FRACTION
    return Settings(
        output=ours.output,
        inputs=DEFAULT_INPUTS if bundled else tuple(ours.input or ()),
        scrape_urls=tuple(ours.scrape_url or ()),
        audio=ours.audio_config(),
        fetch=ours.fetch_config(),
        labels=ours.label_rules(),
        licences=ours.licence_rules(),
        validation_fraction=fraction,
        skip_existing=ours.skip_existing,
        num_shards=ours.num_shards,
        max_pages=ours.max_pages,
        max_tracks=ours.max_tracks,
        max_failure_fraction=ours.max_failure_fraction,
        stale_lease_hours=ours.stale_lease_hours,
        storage=contract.StorageSettings.from_options(options),
        streaming=streaming,
        input_subscription=ours.input_subscription,
        streaming_window_secs=ours.streaming_window_secs,
        command=contract.redact_command(list(argv)),
    )


PROG = "python -m pipelines.preprocess"
DESCRIPTION = (
    "Music files, globs, URLs or scraped listing pages -> mu-law TFRecord windows, dataset.json, and per-run "
    "track and failure files. Every Apache Beam pipeline option is accepted beside these."
)


def help_text():
    """--help as users type the command: our options, and the Beam options they name."""
    parser = compat.options_parser(PreprocessOptions, prog=PROG, description=DESCRIPTION)
    beam = parser.add_argument_group("Beam's options that the ones above name")
    beam.add_argument(
        "--streaming",
        action="store_true",
        help="Run as a streaming job: the tracks the messages of --input_subscription name, committed every "
        "--streaming_window_secs into the dataset found in --output (docs/running-at-scale.md). Default: off (a "
        "batch job over --input).",
    )
    return parser.format_help()


def unknown_flags(argv):
    """The arguments no option of ours or of Beam defines, each with a "did you mean" suggestion.

    Beam discards arguments it cannot parse; a mistyped --ouput would then
    write to the default output. This tells the user before the job starts, as
    every command does (`contract.commands.unknown_options`).

    Args:
      argv: the command line.

    Returns:
      list of str messages, empty when every argument is known.
    """
    actions = compat.parser_options(compat.beam_option_parser())
    known = [option for action in actions for option in action.option_strings]
    return contract.commands.unknown_options(argv, known)
