"""Scrape track URLs from music listing pages.

    python -m pipelines.scrape --url URL [--url URL ...] --output tracks.jsonl [--max_pages N] [--max_tracks N]

lists tracks (id, audio URL, title, artist, licence, page URL) without
downloading audio; `python -m pipelines.preprocess --scrape_url URL` runs the
same scraping inside the Beam pipeline and processes what it finds.

Everything specific to a site lives in one `SiteRules` entry of `SITES`: which
elements are tracks, how a track's fields are read, and which link is the next
page. The Free Music Archive is the reference site; another site is a new
entry, not a fork.
"""

import argparse
import dataclasses
import json
import logging
import sys
import urllib.parse

from apache_beam.io.filesystems import FileSystems

from pipelines import contract, fetch, sources
from pipelines.contract import STAGE_SCRAPE, TrackError

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrackRecord:
    """A track found on a listing page.

    Attributes:
      track_id: stable hash of the audio URL (`sources.track_id_for`), as in the dataset.
      audio_url: absolute URL of the audio file.
      title, artist, licence: as the site states them ('' when absent).
      page_url: the track's own page, or the listing page that showed it.
    """

    track_id: str
    audio_url: str
    title: str = ""
    artist: str = ""
    licence: str = ""
    page_url: str = ""


@dataclasses.dataclass(frozen=True)
class SiteRules:
    """Where a site keeps its tracks.

    Attributes:
      name: short name, for logs.
      track_selector: CSS selector of the elements that each hold one track.
      read_track: element, listing page URL -> dict with audio_url, title,
        artist, licence, page_url (None to skip the element).
      next_page_selectors: CSS selectors tried in order for the next page's link.
    """

    name: str
    track_selector: str
    read_track: object
    next_page_selectors: tuple


def _read_fma_track(element, listing_url):
    """Free Music Archive: `.play-item` elements carry JSON in `data-track-info`.

    Fields used: fileUrl (audio), title, artistName, url (track page);
    the licence is the Creative Commons link inside the element, if any,
    or licenseTitle/licenseUrl in the JSON.
    """
    try:
        info = json.loads(element.get("data-track-info") or "{}")
    except json.JSONDecodeError:
        return None
    audio_url = info.get("fileUrl") or info.get("playbackUrl")
    if not audio_url:
        return None
    licence_link = element.select_one('a[href*="creativecommons.org"]')
    licence = (
        info.get("licenseUrl")
        or info.get("licenseTitle")
        or (licence_link.get("href") if licence_link else "")
        or (element.get("data-license") or "")
    )
    page_link = element.select_one('a[href*="/music/"]')
    return {
        "audio_url": urllib.parse.urljoin(listing_url, audio_url),
        "title": info.get("title") or "",
        "artist": info.get("artistName") or "",
        "licence": licence,
        "page_url": urllib.parse.urljoin(
            listing_url, info.get("url") or (page_link.get("href") if page_link else listing_url)
        ),
    }


SITES = {
    "fma": SiteRules(
        name="fma",
        track_selector=".play-item[data-track-info]",
        read_track=_read_fma_track,
        next_page_selectors=('a[rel~="next"]', 'link[rel~="next"]', ".pagination-full a.next", "a.next"),
    ),
}


def parse_listing(html, listing_url, rules=SITES["fma"]):
    """Tracks and the next page's URL on one listing page.

    Args:
      html: the page, bytes or str.
      listing_url: its URL, to resolve relative links.
      rules: SiteRules.

    Returns:
      (list of TrackRecord in page order, next page URL or None).
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    tracks = []
    for element in soup.select(rules.track_selector):
        fields = rules.read_track(element, listing_url)
        if fields:
            tracks.append(TrackRecord(track_id=sources.track_id_for(fields["audio_url"]), **fields))
    next_url = None
    for selector in rules.next_page_selectors:
        link = soup.select_one(selector)
        if link is not None and link.get("href"):
            next_url = urllib.parse.urljoin(listing_url, link["href"])
            break
    return tracks, next_url


def scrape_listing(start_url, fetcher, max_pages, rules=SITES["fma"]):
    """Follows a listing's pagination from `start_url`.

    Args:
      start_url: first listing page.
      fetcher: `fetch.Fetcher`.
      max_pages: pages to read at most.
      rules: SiteRules.

    Yields:
      TrackRecord, or a failure record (`contract.failure_record`, stage
      'scrape') for a page that could not be read; scraping stops there.
    """
    url, seen_pages = start_url, set()
    while url and len(seen_pages) < max_pages and url not in seen_pages:
        seen_pages.add(url)
        try:
            response = fetcher.get(url)
        except fetch.FetchError as e:
            yield contract.failure_record(url, TrackError(STAGE_SCRAPE, str(e), e.status))
            return
        tracks, url = parse_listing(response.body, response.url, rules)
        _LOGGER.info("Listing %s: %d tracks", response.url, len(tracks))
        yield from tracks


def scrape(start_urls, fetcher, max_pages, max_tracks, rules=SITES["fma"]):
    """Distinct tracks of several listings, in order, at most `max_tracks`.

    Yields:
      TrackRecord (each track_id once) or failure dicts, as `scrape_listing`.
    """
    seen = set()
    for start_url in start_urls:
        for item in scrape_listing(start_url, fetcher, max_pages, rules):
            if isinstance(item, TrackRecord):
                if item.track_id in seen:
                    continue
                if len(seen) >= max_tracks:
                    return
                seen.add(item.track_id)
            yield item


def add_fetch_arguments(parser):
    """Politeness options shared by the scrape CLI and the pipeline's options."""
    defaults = fetch.FetchConfig()
    parser.add_argument(
        "--requests_per_second",
        type=float,
        default=defaults.requests_per_second,
        help="Requests per second to each host, shared by all requests in a worker. Default: %(default)s.",
    )
    parser.add_argument(
        "--max_retries",
        type=int,
        default=defaults.max_retries,
        help="Retries on timeouts, connection errors, 429 and 5xx, with exponential backoff and "
        "jitter, honouring Retry-After. Default: %(default)s.",
    )
    parser.add_argument(
        "--http_user_agent",
        default=defaults.user_agent,
        help="User-Agent header of our HTTP requests, also the agent matched in robots.txt. Default: %(default)r.",
    )


def add_scrape_limits(parser):
    parser.add_argument(
        "--max_pages", type=int, default=100, help="Listing pages to follow per start URL. Default: %(default)s."
    )
    parser.add_argument(
        "--max_tracks", type=int, default=10000, help="Distinct tracks to take in all. Default: %(default)s."
    )


def fetch_config(args, max_bytes=None):
    """FetchConfig from parsed options."""
    return dataclasses.replace(
        fetch.FetchConfig(),
        requests_per_second=args.requests_per_second,
        max_retries=args.max_retries,
        user_agent=args.http_user_agent,
        **({"max_bytes": max_bytes} if max_bytes else {}),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.scrape",
        description="List the tracks of music listing pages (Free Music Archive layout) as JSON lines, "
        "without downloading audio. Obeys robots.txt.",
    )
    parser.add_argument("--url", action="append", required=True, help="Listing page to start from; repeatable.")
    parser.add_argument("--output", required=True, help="JSON-lines file to write (local, gs:// or s3://).")
    add_scrape_limits(parser)
    add_fetch_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    fetcher = fetch.Fetcher(fetch_config(args))
    tracks, failures = [], []
    try:
        for item in scrape(args.url, fetcher, args.max_pages, args.max_tracks):
            (tracks if isinstance(item, TrackRecord) else failures).append(item)
    finally:
        fetcher.close()
    with FileSystems.create(args.output, mime_type="application/json") as f:
        for track in tracks:
            f.write((json.dumps(dataclasses.asdict(track), sort_keys=True) + "\n").encode("utf-8"))
    for failure in failures:
        print(f"failed: {failure['uri']}: {failure['error']}", file=sys.stderr)
    print(f"{len(tracks)} tracks written to {args.output}; {len(failures)} listing pages failed")
    if not tracks:
        sys.exit(1)
    return tracks


if __name__ == "__main__":
    try:
        main()
    except TrackError as e:
        sys.exit(f"error: {e}")
