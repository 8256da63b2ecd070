"""Track URLs from music listing pages: the scraping library (`python -m pipelines.scrape` is its command line).

`scrape` lists tracks (id, audio URL, title, artist, genre, licence, page URL)
without downloading audio; `python -m pipelines.preprocess --scrape_url URL`
runs the same scraping inside the Beam pipeline and processes what it finds.

Everything specific to a site lives in one `SiteRules` entry of `SITES`: which
elements are tracks, how a track's fields are read, and which link is the next
page. The Free Music Archive is the reference site; another site is a new
entry, not a fork. Settings come as values (a `fetch.Fetcher`, limits): this
module reads no command's options.
"""

import dataclasses
import json
import logging
import re
import urllib.parse

from pipelines import contract, fetch, sources
from pipelines.contract import STAGE_SCRAPE, TrackError

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SiteRules:
    """Where a site keeps its tracks.

    Attributes:
      name: short name, for logs.
      track_selector: CSS selector of the elements that each hold one track.
      read_track: element, listing page URL -> dict with audio_url, title,
        artist, genre, licence, page_url; raises ValueError saying what is malformed.
      next_page_selectors: CSS selectors tried in order for the next page's link.
    """

    name: str
    track_selector: str
    read_track: object
    next_page_selectors: tuple


def _text(value):
    """A field as text: strings as they are, numbers as written, anything else empty."""
    if isinstance(value, str):
        return value.strip()
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _http_url(base, link, what):
    """An absolute http(s) URL from a link on a page; ValueError saying why not."""
    if not isinstance(link, str) or not link.strip():
        raise ValueError(f"{what} is missing or not a string (got {link!r})")
    url = urllib.parse.urljoin(base, link.strip())  # ValueError for malformed ones ("http://[bad").
    urllib.parse.urlsplit(url).port  # noqa: B018 (raises ValueError for a malformed port)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in fetch.SCHEMES:
        raise ValueError(f"{what} {link.strip()[:200]!r} is not an http(s) URL")
    return url


def _read_fma_track(element, listing_url):
    """Free Music Archive: `.play-item` elements carry JSON in `data-track-info`.

    Fields used: fileUrl (audio), title, artistName, url (track page);
    the licence is the Creative Commons link inside the element, if any,
    or licenseTitle/licenseUrl in the JSON; the genre is `_fma_genre`'s.

    Raises:
      ValueError: malformed JSON, not an object, or no usable audio URL.
    """
    try:
        info = json.loads(element.get("data-track-info") or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed data-track-info JSON: {e}") from None
    if not isinstance(info, dict):
        raise ValueError(f"data-track-info is not a JSON object (got {type(info).__name__})")
    audio_url = _http_url(listing_url, info.get("fileUrl") or info.get("playbackUrl"), "fileUrl")
    licence_link = element.select_one('a[href*="creativecommons.org"]')
    licence = (
        _text(info.get("licenseUrl"))
        or _text(info.get("licenseTitle"))
        or (_text(licence_link.get("href")) if licence_link else "")
        or _text(element.get("data-license"))
    )
    page_link = element.select_one('a[href*="/music/"]')
    try:
        page_url = _http_url(listing_url, info.get("url") or (page_link.get("href") if page_link else None), "url")
    except ValueError:
        page_url = listing_url  # The track's page is a nicety; the listing page stands in.
    return {
        "audio_url": audio_url,
        "title": _text(info.get("title")),
        "artist": _text(info.get("artistName")),
        "genre": _fma_genre(info, listing_url),
        "licence": licence,
        "page_url": page_url,
    }


def _fma_genre(info, listing_url):
    """A track's genre on the Free Music Archive: the genre page's it was listed on, else the JSON's first.

    A listing at /genre/NAME/ lists that genre (the user chose the page);
    elsewhere the JSON may carry `genre` (a name) or `genres` (names, or
    objects with genre_title / title / name).
    """
    if listing_genre(listing_url):
        return listing_genre(listing_url)
    named = info.get("genre")
    if not _text(named) and isinstance(info.get("genres"), list):
        for entry in info["genres"]:
            if isinstance(entry, dict):
                entry = entry.get("genre_title") or entry.get("title") or entry.get("name")
            if _text(entry):
                named = entry
                break
    return _text(named)


def listing_genre(listing_url):
    """The genre a listing URL names (`.../genre/Ambient/?page=2` -> 'Ambient'), or ''."""
    segments = [urllib.parse.unquote(s) for s in urllib.parse.urlsplit(listing_url).path.split("/") if s]
    for before, segment in zip(segments, segments[1:], strict=False):
        if before.lower() == "genre":
            return segment.replace("_", " ").strip()
    return ""


SITES = {
    "fma": SiteRules(
        name="fma",
        track_selector=".play-item[data-track-info]",
        read_track=_read_fma_track,
        next_page_selectors=('a[rel~="next"]', 'link[rel~="next"]', ".pagination-full a.next", "a.next"),
    ),
}
# Link texts (or aria-labels) that mean "next page" on real listings.
_NEXT_TEXT = re.compile(r"^\s*(next(\s+page)?|more|older)?\s*(>|>>|›|»|→)?\s*$", re.IGNORECASE)
PAGE_PARAMETER = "page"


@dataclasses.dataclass(frozen=True)
class ListingPage:
    """What one listing page holds.

    Attributes:
      tracks: list of contract.ListedTrack, in page order.
      next_url: the next page's URL, or None.
      problems: list of str, one per malformed element or link (the rest of the page was read).
      elements: how many elements matched the site rules' track selector (malformed ones included).
      links: how many links (`a` elements with an href) the page holds.
    """

    tracks: list
    next_url: str
    problems: list
    elements: int = 0
    links: int = 0


def parse_listing(html, listing_url, rules=SITES["fma"], zone=fetch.ZONE_PUBLIC):
    """Tracks, the next page's URL and what was malformed on one listing page.

    The next page is the first of: a link the site rules name (rel="next"
    first); a link whose text means next ("Next", "NEXT >", "›", "»", ...); a
    link to the same path with the next `page` number.

    Args:
      html: the page, bytes or str.
      listing_url: its URL, to resolve relative links.
      rules: SiteRules.
      zone: the listed tracks' zone.

    Returns:
      ListingPage.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    tracks, problems = [], []
    elements = soup.select(rules.track_selector)
    for position, element in enumerate(elements, start=1):
        try:
            fields = rules.read_track(element, listing_url)
        except ValueError as e:
            problems.append(f"track element {position}: {e}")
            continue
        tracks.append(contract.ListedTrack(track_id=sources.track_id_for(fields["audio_url"]), zone=zone, **fields))
    next_url = _next_page(soup, listing_url, rules, problems)
    return ListingPage(tracks, next_url, problems, len(elements), len(soup.find_all("a", href=True)))


def _next_page(soup, listing_url, rules, problems):
    candidates = [soup.select_one(selector) for selector in rules.next_page_selectors]
    candidates += [
        a for a in soup.find_all("a", href=True)
        if _NEXT_TEXT.fullmatch(a.get_text(" ", strip=True) or a.get("aria-label") or "-")
    ]  # fmt: skip
    tried = set()
    for link in candidates:
        if link is None or not link.get("href") or id(link) in tried:
            continue
        tried.add(id(link))
        try:
            return _http_url(listing_url, link["href"], "next-page link")
        except ValueError as e:
            problems.append(str(e))
    current = _page_number(listing_url)
    for link in soup.find_all("a", href=True):
        try:
            url = _http_url(listing_url, link["href"], "link")
        except ValueError:
            continue
        same_path = urllib.parse.urlsplit(url).path == urllib.parse.urlsplit(listing_url).path
        if same_path and _page_number(url) == current + 1:
            return url
    return None


def _page_number(url):
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get(PAGE_PARAMETER, [])
    return int(values[0]) if values and values[0].isascii() and values[0].isdigit() else 1


def _with_page(url, number):
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != PAGE_PARAMETER]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode([*query, (PAGE_PARAMETER, number)])))


def listing_zone(start_url, fetcher):
    """'private' when the listing is on a loopback or private address or the user allows those, else 'public'."""
    if fetcher.config.allow_private_addresses or fetch.is_private_host(start_url, fetcher.resolver):
        return fetch.ZONE_PRIVATE
    return fetch.ZONE_PUBLIC


def scrape_listing(start_url, fetcher, max_pages, rules=SITES["fma"], seen=None, stats=None):
    """Follows a listing's pagination from `start_url`.

    Without a next link, a URL with a `page` query parameter goes on to the
    next page number until a page brings no new track.

    Args:
      start_url: first listing page.
      fetcher: `fetch.Fetcher`.
      max_pages: pages to read at most.
      rules: SiteRules.
      seen: set of track ids already found (by earlier listings); updated.
      stats: dict to fill with {"pages": n, "tracks": n (new tracks),
        "elements": n (matching the track selector), "links": n (on the pages read)}.

    Yields:
      contract.ListedTrack, or a contract.FailureRecord (stage
      'scrape') for a page that could not be read (scraping stops there), for
      each malformed element or link (the rest goes on), and for a listing
      whose pages were read but hold no element the site rules take for a
      track (another site's pages, a search with no results), which says so.
    """
    seen = set() if seen is None else seen
    stats = {} if stats is None else stats
    stats.update(pages=0, tracks=0, elements=0, links=0)
    try:
        zone = listing_zone(start_url, fetcher)
    except Exception as e:  # noqa: BLE001 (malformed start URL and the like: a failure line, never a crash)
        yield _failure(start_url, f"{type(e).__name__}: {e}")
        return
    url, visited, guessed = start_url, set(), False
    while url and stats["pages"] < max_pages and url not in visited:
        visited.add(url)
        try:
            with fetcher.get_page(url, allow_private=zone == fetch.ZONE_PRIVATE) as response:
                page = parse_listing(response.body, response.url, rules, zone)
        except fetch.FetchError as e:
            if not guessed:  # A guessed page number that does not exist is the end of the listing.
                yield _failure(url, str(e), e.status)
            break
        except Exception as e:  # noqa: BLE001 (whatever a page does, the job goes on)
            yield _failure(url, f"could not parse the page: {type(e).__name__}: {e}")
            break
        stats["pages"] += 1
        stats["elements"] += page.elements
        stats["links"] += page.links
        new = [t for t in page.tracks if t.track_id not in seen]
        seen.update(t.track_id for t in new)
        stats["tracks"] += len(new)
        _LOGGER.info("Listing %s: %d tracks (%d new)", response.url, len(page.tracks), len(new))
        for problem in page.problems:
            yield _failure(response.url, problem)
        yield from new
        if guessed and not new:
            break
        url, guessed = page.next_url, False
        if url is None and PAGE_PARAMETER in urllib.parse.parse_qs(urllib.parse.urlsplit(response.url).query):
            url, guessed = _with_page(response.url, _page_number(response.url) + 1), True
    if stats["pages"] and not stats["elements"]:
        yield _failure(start_url, _no_tracks_reason(rules, stats))


def _no_tracks_reason(rules, stats):
    """Why a listing whose pages were read yielded no track, and what to do instead."""
    pages, links = stats["pages"], stats["links"]
    return (
        f"no track found: no element matched the track selector {rules.track_selector!r} of the site rules "
        f"{rules.name!r} on the {pages} page{'' if pages == 1 else 's'} read "
        f"({links} link{'' if links == 1 else 's'} on {'it' if pages == 1 else 'them'}). "
        "Is this a listing of that site? Another site needs its own SiteRules entry in pipelines/listings.py; "
        "direct audio URLs go in --input"
    )


def _failure(url, reason, status=None):
    return contract.FailureRecord.of(url, TrackError(STAGE_SCRAPE, reason, status))


def scrape(start_urls, fetcher, max_pages, max_tracks, rules=SITES["fma"], summary=None):
    """Distinct tracks of several listings, in order, at most `max_tracks`.

    Args:
      summary: dict to fill with start URL -> {"pages", "tracks"}.

    Yields:
      contract.ListedTrack (each track_id once) or failure records, as `scrape_listing`.
    """
    seen, taken = set(), 0
    summary = {} if summary is None else summary
    for start_url in start_urls:
        stats = summary.setdefault(start_url, {})
        for item in scrape_listing(start_url, fetcher, max_pages, rules, seen, stats):
            if isinstance(item, contract.ListedTrack):
                if taken >= max_tracks:
                    return
                taken += 1
            yield item
        _LOGGER.warning("Scraped %s: %d pages, %d tracks", start_url, stats["pages"], stats["tracks"])


def add_limits(parser):
    """--max_pages and --max_tracks: how far a scrape goes (the pipeline's and the scrape CLI's options)."""
    parser.add_argument(
        "--max_pages", type=int, default=100, help="Listing pages to follow per start URL. Default: %(default)s."
    )
    parser.add_argument(
        "--max_tracks", type=int, default=10000, help="Distinct tracks to take in all. Default: %(default)s."
    )
