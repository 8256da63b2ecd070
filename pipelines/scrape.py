"""python -m pipelines.scrape: list the tracks of music listing pages as JSON lines, without downloading audio.

    python -m pipelines.scrape --url URL [--url URL ...] --output tracks.jsonl [--max_pages N] [--max_tracks N]

The command line only: the scraping (site rules, pagination, trust zones) is
`pipelines.listings`, which `python -m pipelines.preprocess --scrape_url URL`
runs inside the Beam pipeline.
"""

import logging
import sys

from pipelines import contract, fetch, listings


def build_parser():
    """The parser of `python -m pipelines.scrape`."""
    parser = contract.commands.ArgumentParser(
        prog="python -m pipelines.scrape",
        description="List the tracks of music listing pages (Free Music Archive layout) as JSON lines, "
        "without downloading audio. Obeys robots.txt.",
    )
    parser.add_argument(
        "--url", action="append", required=True, help="Listing page to start from; repeatable. Required."
    )
    parser.add_argument("--output", required=True, help="JSON-lines file to write (local, gs:// or s3://). Required.")
    listings.add_limits(parser)
    fetch.add_arguments(parser, downloads=False)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    fetcher = fetch.Fetcher(fetch.config_from_options(args))
    tracks, failures, summary = [], [], {}
    try:
        for item in listings.scrape(args.url, fetcher, args.max_pages, args.max_tracks, summary=summary):
            (tracks if isinstance(item, contract.ListedTrack) else failures).append(item)
    finally:
        fetcher.close()
    lines = "".join(track.to_json() + "\n" for track in tracks)
    contract.write_text(args.output, lines, mime_type="application/jsonl")
    for failure in failures:
        print(f"failed: {failure.uri}: {failure.error}", file=sys.stderr)
    for start_url, stats in summary.items():
        print(f"{start_url}: {stats['pages']} pages, {stats['tracks']} tracks")
    print(f"{len(tracks)} tracks written to {args.output}; {len(failures)} failures (pages, malformed elements)")
    if not tracks:
        sys.exit(1)
    return tracks


if __name__ == "__main__":
    sys.exit(contract.run_command(main))
