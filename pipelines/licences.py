"""Licences in one standard form: what music on the web says of its licence -> an SPDX id, its terms, a filter.

Pure functions, no Beam: the pipeline records one `Licence` per track and may
drop tracks a `LicenceFilter` refuses.

Identifiers. A licence is recorded as an SPDX license identifier or
expression (SPDX specification 2.3, Annex D) from the SPDX License List as
`license-expression` ships it (30.4: list 3.27), or as `UNKNOWN` ('unknown')
with the text the source gave kept in `Licence.raw`. Where the list has no
id, ours are `LicenseRef-` ids (which SPDX leaves to users):

- `LicenseRef-CC-<ELEMENTS>-<VERSION>-<PORT>`: a Creative Commons
  jurisdiction port the list lacks, in the list's own pattern (CC-BY-3.0-US,
  CC-BY-SA-2.0-UK are listed; `LicenseRef-CC-BY-NC-SA-2.5-IT`,
  `LicenseRef-CC-BY-NC-SA-3.0-US` are not). PORT is the upper-cased
  jurisdiction of the licence URL (`/licenses/by-nc-sa/2.5/it/`), so the
  deed URL can be rebuilt from the id. The same form holds 1.0 licences
  without Attribution the list lacks (`LicenseRef-CC-NC-SA-1.0`).
- `LicenseRef-CC-<ELEMENTS>`: a Creative Commons name with no version, as the
  Free Music Archive often writes ("Attribution-ShareAlike"). No SPDX id
  fits (the versions differ in wording), but the licence elements, which are
  all a filter needs, are the same in every version, so the terms stay known
  instead of the track becoming `unknown`. It has no deed URL.
- `LicenseRef-LAL`: "Free Art License" with no version (1.2 and 1.3 are
  listed: LAL-1.2, LAL-1.3; every version is copyleft with attribution).
- `LicenseRef-All-Rights-Reserved` (`ALL_RIGHTS_RESERVED`): "All rights
  reserved", or a bare copyright notice ("(C) 2012 Name", "℗ 2012 Label"):
  copyright needs no formality (Berne Convention, article 5(2)), so a notice
  without a licence grants nothing. A known licence that grants nothing, so
  it is not `unknown`; terms: no commercial use, no derived works.
- `LicenseRef-Public-Domain` (`PUBLIC_DOMAIN`): "Public domain" said
  without naming a tool; no conditions. The Public Domain Mark is listed
  (CC-PDM-1.0), as are CC0 (CC0-1.0) and CC's 2004 Public Domain
  Dedication and Certification (CC-PDDC).

Element order in ids is the list's (BY, NC, ND, SA), whatever the order of
the URL (1.0's `/licenses/by-nd-nc/1.0/` is CC-BY-NC-ND-1.0). SPDX ids match
case-insensitively; ours are written as above.

Where the table comes from. Creative Commons URLs follow
https://creativecommons.org/licenses/<elements>/<version>/[<jurisdiction>/]
(versions 1.0, 2.0, 2.1, 2.5, 3.0, 4.0: https://wiki.creativecommons.org/wiki/License_Versions),
https://creativecommons.org/publicdomain/zero/1.0/ and /publicdomain/mark/1.0/;
names are CC's licence titles ("Attribution-NonCommercial-ShareAlike 3.0
Unported", ports titled by jurisdiction: "... 3.0 United States") in the
spellings the FMA and ID3/Vorbis taggers use; the Free Art License is
https://artlibre.org/licence/lal/en/ (1.3). This mapping is ours; parsing and
validating SPDX ids and expressions is `license-expression`'s.

Terms (`terms`): Creative Commons ids from their elements; the Free Art
License, CC0, the Public Domain Mark and other licences users may type (MIT,
Apache-2.0, GPL-*, ...) from ScanCode LicenseDB's category as
`license-expression` ships it: 'Public Domain' -> no conditions,
'Permissive' -> attribution, 'Copyleft' and 'Copyleft Limited' ->
attribution and share-alike (a stricter reading than some of them need,
never a looser one). Any other id's terms are not known.

Filter policies (`POLICIES`, `LicenceFilter`):
- `commercial-derivatives`: only licences that allow commercial use and
  derived works (CC BY, CC BY-SA, CC0, the Public Domain Mark, the Free Art
  License, permissive and copyleft software licences).
- `permissive`: `commercial-derivatives` without share-alike (CC BY, CC0, the
  Public Domain Mark, permissive software licences): nothing asks for a model
  or dataset built from the music to be shared alike.
- `noncommercial`: licences that allow derived works, commercial or not
  (adds CC BY-NC and CC BY-NC-SA).
No policy admits an ND licence, all rights reserved, or terms not known. An
allow list of ids or shell patterns (`CC-BY-*`, `CC0-1.0`) admits more, and
`unknown` passes only when allowed explicitly.
"""

import dataclasses
import difflib
import fnmatch
import functools
import re

import license_expression

# The SPDX License List that license-expression ships (tests/test_licences.py checks it against the installed one).
SPDX_LIST_VERSION = "3.27"
UNKNOWN = "unknown"
ALL_RIGHTS_RESERVED = "LicenseRef-All-Rights-Reserved"
PUBLIC_DOMAIN = "LicenseRef-Public-Domain"

POLICY_COMMERCIAL_DERIVATIVES = "commercial-derivatives"
POLICY_PERMISSIVE = "permissive"
POLICY_NONCOMMERCIAL = "noncommercial"
POLICIES = {
    POLICY_COMMERCIAL_DERIVATIVES: "only licences that allow commercial use and derived works",
    POLICY_PERMISSIVE: "only licences that allow commercial use and derived works without share-alike",
    POLICY_NONCOMMERCIAL: "only licences that allow derived works, commercial or not",
}
# The option a policy comes from, named in the reasons a filter gives.
POLICY_OPTION = "--licence_filter"

# Keys (case-insensitive) of FFmpeg's metadata that hold a licence, in order of precedence:
# `license`: Vorbis and FLAC LICENSE, ID3 TXXX:LICENSE (Picard, `ffmpeg -metadata license=`);
# `wcop`: ID3 TXXX:WCOP, which `ffmpeg -metadata WCOP=` writes (FFmpeg does not read the
# ID3 WCOP URL frame itself); `copyright`: ID3 TCOP, Vorbis and FLAC COPYRIGHT, MP4 cprt, RIFF ICOP.
LICENCE_TAG_KEYS = ("license", "wcop", "copyright")

_CC_ELEMENTS = ("BY", "NC", "ND", "SA")
_CC_VERSIONS = ("1.0", "2.0", "2.1", "2.5", "3.0", "4.0")
# The jurisdictions Creative Commons ported its licences to: the name its licence titles give each
# -> the code its URLs end with. CC's "uk" port is England and Wales; Scotland has its own.
_CC_PORT_NAMES = dict(
    entry.split("=")
    for entry in (
        "argentina=ar; austria=at; australia=au; belgium=be; bulgaria=bg; brazil=br; canada=ca; switzerland=ch; "
        "chile=cl; china=cn; colombia=co; costa rica=cr; czech republic=cz; germany=de; denmark=dk; ecuador=ec; "
        "estonia=ee; egypt=eg; spain=es; finland=fi; france=fr; georgia=ge; greece=gr; guatemala=gt; hong kong=hk; "
        "croatia=hr; hungary=hu; ireland=ie; igo=igo; israel=il; india=in; italy=it; japan=jp; korea=kr; "
        "luxembourg=lu; macedonia=mk; malta=mt; mexico=mx; malaysia=my; netherlands=nl; norway=no; new zealand=nz; "
        "peru=pe; philippines=ph; poland=pl; puerto rico=pr; portugal=pt; romania=ro; serbia=rs; scotland=scotland; "
        "sweden=se; singapore=sg; slovenia=si; thailand=th; taiwan=tw; uganda=ug; england=uk; united kingdom=uk; "
        "united states=us; venezuela=ve; vietnam=vn; south africa=za"
    ).split("; ")
)
# Creative Commons URLs: a licence (elements, version, jurisdiction or a deed/legalcode page), a public-domain
# tool, or the 2004 Public Domain Dedication and Certification.
_CC_LICENCE_URL = re.compile(
    r"creativecommons\.org/licenses/([a-z]+(?:-[a-z]+)*)/(\d\.\d)(?:/([a-z]+)(?![a-z_]))?", re.IGNORECASE
)
_CC_PUBLIC_DOMAIN_URL = re.compile(r"creativecommons\.org/publicdomain/(zero|mark)/(\d\.\d)", re.IGNORECASE)
_CC_PDDC_URL = re.compile(r"creativecommons\.org/licenses/publicdomain(?![a-z])", re.IGNORECASE)
# Elements as CC's titles spell them (squashed: "Non-Commercial", "Share Alike", "No Derivative Works", "NoDerivs").
_CC_ELEMENT_NAMES = (("BY", "attribution"), ("NC", "noncommercial"), ("ND", "noderiv"), ("SA", "sharealike"))
# Short forms after "CC" ("CC BY-NC 4.0", "cc-by-sa"), or two or more joined by hyphens ("BY-SA"):
# a lone "by" is an English word ("released by ...").
_CC_SHORT_ELEMENTS = re.compile(
    r"(?:\bcc|creative\s*commons)[\s_-]*((?:by|nc|nd|sa)(?:[\s_-]+(?:by|nc|nd|sa))*)\b"
    r"|\b((?:by|nc|nd|sa)(?:-(?:by|nc|nd|sa))+)\b"
)
_LAL_URL = re.compile(r"artlibre\.org(/[^\s\"'<>?#]*)?", re.IGNORECASE)
_CC_ID = re.compile(
    r"(?:LicenseRef-)?CC-((?:BY|NC|ND|SA)(?:-(?:NC|ND|SA))*)(?:-(\d\.\d)(?:-([A-Z]+))?)?", re.IGNORECASE
)
_LAL_ID = re.compile(r"(?:LicenseRef-)?LAL(?:-(\d\.\d))?", re.IGNORECASE)
_LICENSE_REF = re.compile(r"LicenseRef-[A-Za-z0-9.\-]+", re.IGNORECASE)
_PATTERN = re.compile(r"[A-Za-z0-9.\-*?\[\]!]+")
_VERSION = re.compile(r"(?<![\d.])(\d+\.\d+)(?![\d.])")
_ALL_RIGHTS_RESERVED = re.compile(
    r"all\s+rights\s+reserved|tous\s+droits\s+r[ée]serv[ée]s|alle\s+rechte\s+vorbehalten"
    r"|todos\s+los\s+derechos\s+reservados|[©℗]|\([cp]\)|\bcopyright\s+\d{4}",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Licence:
    """A track's licence.

    Attributes:
      spdx: an SPDX license identifier or expression ('CC-BY-SA-3.0',
        'MIT OR CC-BY-4.0'), one of this module's LicenseRef- ids, or
        UNKNOWN.
      raw: the text the source gave, as found (kept when `spdx` is UNKNOWN).
      url: the licence's canonical deed or reference URL (https), or None
        when there is none (expressions, versionless names, all rights
        reserved, unknown).
    """

    spdx: str
    raw: str
    url: str | None = None


@dataclasses.dataclass(frozen=True)
class Terms:
    """What a licence asks of whoever uses the music.

    Attributes:
      known: False when the terms are not known (UNKNOWN, an expression, an id
        this module has no terms for); the other fields are then all False
        and say nothing.
      attribution: the author must be credited.
      share_alike: derived works must carry the same (or a compatible) licence.
      non_commercial: commercial use is not allowed.
      no_derivatives: derived works are not allowed (a model or a dataset of
        windows built from the music is one).
    """

    known: bool = False
    attribution: bool = False
    share_alike: bool = False
    non_commercial: bool = False
    no_derivatives: bool = False


def normalize(raw):
    """What a source says of a licence -> a Licence in standard form.

    Reads, in this order: a Creative Commons or Free Art License URL anywhere
    in the text (any scheme, with or without www., deed.xx or legalcode,
    jurisdiction ports); an SPDX id or expression (case-insensitive; this
    module's LicenseRef- ids included, so a recorded id reads back as
    itself); a Creative Commons, Free Art License or public-domain name in
    the usual spellings ("Attribution-Noncommercial-Share Alike 3.0 United
    States", "CC BY-NC-ND 4.0", "cc-by-sa", "CC0 1.0 Universal"); all rights
    reserved or a bare copyright notice. Anything else is UNKNOWN.

    Args:
      raw: str, as the site or the tag gave it.

    Returns:
      Licence with `raw` kept as given.
    """
    spdx = _from_url(raw) or _from_spdx(raw) or _from_name(raw) or UNKNOWN
    return Licence(spdx, raw, _url(spdx))


def parse_user_licence(text):
    """An SPDX id or expression a user typed -> Licence, validated.

    Ids are checked against the SPDX License List 3.27 (as license-expression
    ships it); LicenseRef- ids are accepted as SPDX allows (this module's are
    written in their standard form); operators AND, OR, WITH and parentheses
    as in SPDX specification 2.3, Annex D.

    Args:
      text: str, e.g. 'CC-BY-SA-4.0' or 'MIT OR CC-BY-4.0'.

    Returns:
      Licence with `spdx` in canonical case, `raw` the text as given.

    Raises:
      ValueError: the text is empty or not an expression, or names an id the
        list does not hold; the message names the id and a close match when
        there is one.
    """
    spdx, error = _parse_spdx(text)
    if error:
        raise ValueError(error)
    return Licence(spdx, text, _url(spdx))


def terms(spdx):
    """The terms of a licence id (see the module docstring for where each comes from).

    Args:
      spdx: an id as `normalize` returns it, or any SPDX License List id.

    Returns:
      Terms; `known` is False for UNKNOWN, for expressions (`LicenceFilter`
      reads their branches) and for ids whose terms are not known.
    """
    cc = _cc_parts(spdx)
    if cc is not None:
        elements = cc[0]
        return Terms(
            known=True,
            attribution="BY" in elements,
            share_alike="SA" in elements,
            non_commercial="NC" in elements,
            no_derivatives="ND" in elements,
        )
    if spdx == ALL_RIGHTS_RESERVED:
        return Terms(True, non_commercial=True, no_derivatives=True)
    if spdx == PUBLIC_DOMAIN:
        return Terms(True)
    if _LAL_ID.fullmatch(spdx):
        return Terms(True, attribution=True, share_alike=True)
    category = _categories().get(spdx.casefold())
    if category == "Public Domain":
        return Terms(True)
    if category == "Permissive":
        return Terms(True, attribution=True)
    if category in ("Copyleft", "Copyleft Limited"):
        return Terms(True, attribution=True, share_alike=True)
    return Terms()


@dataclasses.dataclass(frozen=True)
class LicenceFilter:
    """Which licences a run keeps.

    A licence passes when the policy admits it or it matches the allow list;
    UNKNOWN passes only with `allow_unknown`. An expression passes when any
    branch of an OR passes and every part of an AND does (an exception of a
    WITH only adds permissions, so the licence before it decides).

    Attributes:
      policy: one of POLICIES, or None.
      allow: tuple of SPDX ids (canonical case) and shell-style patterns
        (`fnmatch`, case-insensitive: 'CC-BY-*' admits every CC BY licence
        in the SPDX list, CC BY-NC ones included; ports without SPDX ids match
        'LicenseRef-CC-BY-*').
      allow_unknown: whether UNKNOWN passes.

    Raises (when built):
      ValueError: an unknown policy, or an allow-list entry that is not an
        SPDX id or a pattern matching one (see `parse_filter`).
    """

    policy: str | None = None
    allow: tuple = ()
    allow_unknown: bool = False

    def __post_init__(self):
        if self.policy is not None and self.policy not in POLICIES:
            raise ValueError(
                f"unknown licence policy {self.policy!r}{_did_you_mean(self.policy, POLICIES)}; "
                f"choose one of {', '.join(POLICIES)}"
            )
        object.__setattr__(self, "allow", tuple(_allow_entry(entry) for entry in self.allow))

    def check(self, licence):
        """Whether a licence passes.

        Args:
          licence: Licence.

        Returns:
          None when it passes, else the reason it does not, one line naming
          the licence ("CC-BY-NC-SA-3.0 does not allow commercial use
          (--licence_filter commercial-derivatives)").
        """
        if licence.spdx == UNKNOWN:
            if self.allow_unknown:
                return None
            said = f"the source says {licence.raw.strip()!r}" if licence.raw.strip() else "none was found"
            return f"licence unknown ({said}); unknown licences pass only when allowed explicitly"
        try:
            expression = _licensing().parse(licence.spdx, strict=True)
        except license_expression.ExpressionError as e:
            return f"{licence.spdx!r} is not an SPDX expression: {e}"
        return self._check_expression(expression)

    def _check_expression(self, expression):
        licensing = _licensing()
        if isinstance(expression, licensing.OR):
            reasons = [self._check_expression(branch) for branch in expression.args]
            if None in reasons:
                return None
            return f"no alternative of {expression.render()} passes: {'; '.join(reasons)}"
        if isinstance(expression, licensing.AND):
            return next(filter(None, (self._check_expression(part) for part in expression.args)), None)
        if isinstance(expression, license_expression.LicenseWithExceptionSymbol):
            return self._check_id(expression.license_symbol.key)
        return self._check_id(expression.key)

    def _check_id(self, spdx):
        if any(fnmatch.fnmatchcase(spdx.casefold(), pattern.casefold()) for pattern in self.allow):
            return None
        failures = []
        if self.policy is not None:
            failure = _policy_failure(self.policy, spdx)
            if failure is None:
                return None
            failures.append(f"{failure} ({POLICY_OPTION} {self.policy})")
        if self.allow:
            failures.append(f"matches none of the allowed licences ({', '.join(self.allow)})")
        return f"{spdx} {' and '.join(failures)}"


def parse_filter(policy=None, allow_list=(), allow_unknown=False):
    """A run's licence filter from what the user gave, validated.

    Args:
      policy: one of POLICIES, or None or '' for none.
      allow_list: SPDX ids and shell-style patterns ('CC-BY-*', 'CC0-1.0'),
        as an iterable of str, each of which may hold several separated by commas.
      allow_unknown: whether tracks whose licence is UNKNOWN pass.

    Returns:
      LicenceFilter, or None when neither a policy nor an allow list was
      given (nothing is filtered).

    Raises:
      ValueError: an unknown policy; an allow-list entry that is an
        expression, 'unknown', not an SPDX id (the message names it and a
        close match when there is one), or a pattern that matches no SPDX id;
        allow_unknown without a policy or an allow list to relax.
    """
    entries = [allow_list] if isinstance(allow_list, str) else allow_list
    allow = tuple(part.strip() for entry in entries for part in entry.split(",") if part.strip())
    if not policy and not allow:
        if allow_unknown:
            raise ValueError("allowing unknown licences needs a licence policy or an allow list to relax")
        return None
    return LicenceFilter(policy or None, allow, bool(allow_unknown))


def licence_from_tags(tags):
    """A file's licence from its metadata tags, or None when it has no licence tag.

    Reads LICENCE_TAG_KEYS (case-insensitive, so both FFmpeg's keys as
    written and lower-cased ones do). A Creative Commons or Free Art License
    URL in any of them wins (a copyright notice beside a licence URL does not
    reserve all rights); then a licence named in text, in the order of
    LICENCE_TAG_KEYS; then all rights reserved; then UNKNOWN with the first
    tag's text.

    Args:
      tags: dict key -> str, as PyAV gives a container's metadata merged with
        its audio stream's (`DecodeReport.tags`, `Track.tags`).

    Returns:
      Licence whose `raw` is the chosen tag's text as found, or None.
    """
    found = {}
    for key, value in tags.items():
        key = str(key).casefold()
        if key in LICENCE_TAG_KEYS and str(value).strip():
            found.setdefault(key, str(value))
    texts = [found[key] for key in LICENCE_TAG_KEYS if key in found]
    for text in texts:
        spdx = _from_url(text)
        if spdx:
            return Licence(spdx, text, _url(spdx))
    readings = [normalize(text) for text in texts]
    for licence in readings:
        if licence.spdx not in (UNKNOWN, ALL_RIGHTS_RESERVED):
            return licence
    for licence in readings:
        if licence.spdx == ALL_RIGHTS_RESERVED:
            return licence
    return readings[0] if readings else None


@functools.cache
def _licensing():
    return license_expression.get_spdx_licensing()


@functools.cache
def _spdx_ids():
    """casefold -> canonical id of every licence (not exception) in the SPDX list."""
    return {
        key.casefold(): key
        for key, symbol in _licensing().known_symbols.items()
        if not symbol.is_exception and not key.startswith("LicenseRef-")
    }


@functools.cache
def _spdx_exceptions():
    return {key.casefold() for key, symbol in _licensing().known_symbols.items() if symbol.is_exception}


@functools.cache
def _categories():
    """casefold SPDX id -> ScanCode LicenseDB category."""
    categories = {}
    for entry in license_expression.get_license_index():
        for key in [entry.get("spdx_license_key"), *entry.get("other_spdx_license_keys", [])]:
            if key:
                categories.setdefault(key.casefold(), entry["category"])
    return categories


def _spdx_or_ref(body):
    """'CC-BY-SA-2.0-UK' -> the SPDX list's id when it holds one, else 'LicenseRef-' + body."""
    return _spdx_ids().get(body.casefold()) or f"LicenseRef-{body}"


def _cc_id(elements, version=None, port=None):
    """Creative Commons elements, version and port -> id, or None when no such licence exists."""
    if not elements or not elements <= set(_CC_ELEMENTS) or {"ND", "SA"} <= elements:
        return None
    if version is not None and version not in _CC_VERSIONS:
        return None
    # Licences without Attribution existed in 1.0 only; a versionless name without it is too vague.
    if "BY" not in elements and version != "1.0":
        return None
    body = "-".join(["CC", *(e for e in _CC_ELEMENTS if e in elements)])
    if version:
        body += f"-{version}" + (f"-{port.upper()}" if port else "")
    return _spdx_or_ref(body)


def _cc_parts(spdx):
    """A Creative Commons licence id -> (frozenset of elements, version or None, port or None), else None."""
    match = _CC_ID.fullmatch(spdx)
    if match is None:
        return None
    names = match.group(1).upper().split("-")
    elements = frozenset(names)
    if len(elements) < len(names) or {"ND", "SA"} <= elements:
        return None
    return elements, match.group(2), match.group(3)


def _from_url(text):
    """The id of the first Creative Commons or Free Art License URL in a text, or None."""
    match = _CC_LICENCE_URL.search(text)
    if match:
        elements, version, port = match.group(1).upper().split("-"), match.group(2), match.group(3)
        if port and port.lower() in ("deed", "legalcode"):
            port = None  # deed.en, legalcode, legalcode.de: a language of the same licence.
        return _cc_id(frozenset(elements), version, port) if len(set(elements)) == len(elements) else None
    match = _CC_PUBLIC_DOMAIN_URL.search(text)
    if match:
        return {"zero/1.0": "CC0-1.0", "mark/1.0": "CC-PDM-1.0"}.get(f"{match.group(1).lower()}/{match.group(2)}")
    if _CC_PDDC_URL.search(text):
        return "CC-PDDC"
    match = _LAL_URL.search(text)
    if match:
        path = (match.group(1) or "").lower()
        # Before 1.3 (2007) the licence lived at /licence.php/...; 1.2 also at /licence/lal/licence-art-libre-12/.
        return "LAL-1.2" if "licence.php" in path or "licence-art-libre-12" in path else "LAL-1.3"
    return None


def _from_spdx(text):
    spdx, error = _parse_spdx(text)
    return None if error else spdx


def _parse_spdx(text):
    """text -> (canonical SPDX expression, None) or (None, why it is not one)."""
    if not text.strip():
        return None, "no licence given"
    unresolved = []

    def canonical_ref(match):
        spdx = _canonical_ref(match.group())
        if spdx is None:
            unresolved.append(match.group())
        return spdx or match.group()

    try:
        expression = _licensing().parse(_LICENSE_REF.sub(canonical_ref, text.strip()), strict=True)
    except license_expression.ExpressionError as e:
        return None, f"{text.strip()!r} is not an SPDX licence expression: {e}"
    for symbol in _licensing().license_symbols(expression, decompose=True):
        key = symbol.key
        if _LICENSE_REF.fullmatch(key) and key not in unresolved:
            continue
        if key.casefold() in _spdx_ids() or (symbol.is_exception and key.casefold() in _spdx_exceptions()):
            continue
        return None, f"{key!r} is not an SPDX licence id (SPDX License List {SPDX_LIST_VERSION}){_suggestion(key)}"
    return expression.render(), None


def _canonical_ref(ref):
    """A LicenseRef- id in any case -> its standard form (an SPDX id when the list holds it), or None if malformed."""
    body = ref[len("LicenseRef-") :]
    if not body:
        return None
    cc = _cc_parts(body) if body.upper().startswith("CC-") else None
    if cc is not None:
        return _cc_id(*cc)
    for spdx in (ALL_RIGHTS_RESERVED, PUBLIC_DOMAIN):
        if ref.casefold() == spdx.casefold():
            return spdx
    lal = _LAL_ID.fullmatch(ref)
    if lal:
        return _spdx_or_ref(f"LAL-{lal.group(1)}") if lal.group(1) else "LicenseRef-LAL"
    return f"LicenseRef-{body}"


def _from_name(text):
    """The id a licence's name or notice reads as, or None."""
    lowered = text.casefold()
    squashed = re.sub(r"[^a-z0-9]", "", lowered)
    words = re.findall(r"[a-z0-9]+(?:\.\d+)?", lowered)
    versions = sorted(set(_VERSION.findall(lowered)))
    if len(versions) > 1:
        return None  # Which one is meant is not ours to guess.
    version = versions[0] if versions else None
    creative_commons = "creativecommons" in squashed or "cc" in words
    if "cc0" in words or (creative_commons and "zero" in words):
        return "CC0-1.0" if version in (None, "1.0") else None
    if "publicdomainmark" in squashed:
        return "CC-PDM-1.0" if version in (None, "1.0") else None
    elements = {element for element, name in _CC_ELEMENT_NAMES if name in squashed}
    for match in _CC_SHORT_ELEMENTS.finditer(lowered):
        elements.update(re.split(r"[\s_-]+", (match.group(1) or match.group(2)).upper()))
    if elements and (creative_commons or "BY" in elements or version == "1.0"):
        return _cc_id(frozenset(elements), version, _port_from_name(text, version))
    if re.search(r"free\s*art\s*licen[cs]e|licence\s*art\s*libre", lowered) or (
        version and re.search(r"\b(?:fal|lal)\b", lowered)
    ):
        return _spdx_or_ref(f"LAL-{version}") if version else "LicenseRef-LAL"
    if "publicdomain" in squashed:
        return PUBLIC_DOMAIN
    if _ALL_RIGHTS_RESERVED.search(text):
        return ALL_RIGHTS_RESERVED
    return None


def _port_from_name(text, version):
    """The jurisdiction a Creative Commons title names ('... 3.0 United States', 'CC BY-SA 2.5 IT'), or None."""
    lowered = text.casefold()
    found = []
    for name, code in _CC_PORT_NAMES.items():
        match = re.search(rf"\b{re.escape(name)}\b", lowered)
        if match:
            found.append((match.start(), code))
    if version:
        # A code right after the version only when written in capitals: 'in', 'it', 'no' are also words.
        match = re.search(rf"{re.escape(version)}[\s(:-]*([A-Z]{{2,3}})\b", text)
        if match and match.group(1).lower() in _CC_PORT_NAMES.values():
            found.append((match.start(1), match.group(1).lower()))
    return min(found)[1] if found else None


def _url(spdx):
    """The canonical deed (Creative Commons, Free Art License) or SPDX reference URL of an id, or None."""
    cc = _cc_parts(spdx)
    if cc is not None:
        elements, version, port = cc
        if version is None:
            return None
        names = [e.lower() for e in _CC_ELEMENTS if e in elements]
        if version == "1.0" and "nc" in names and "nd" in names:
            names = [n for n in names if n != "nc"] + ["nc"]  # 1.0 wrote by-nd-nc and nd-nc.
        return f"https://creativecommons.org/licenses/{'-'.join(names)}/{version}/" + (
            f"{port.lower()}/" if port else ""
        )
    special = {
        "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
        "CC-PDM-1.0": "https://creativecommons.org/publicdomain/mark/1.0/",
        "CC-PDDC": "https://creativecommons.org/licenses/publicdomain/",
        "LAL-1.3": "https://artlibre.org/licence/lal/en/",
        "LAL-1.2": "https://artlibre.org/licence/lal/licence-art-libre-12/",
    }
    if spdx in special:
        return special[spdx]
    if spdx.casefold() in _spdx_ids():
        return f"https://spdx.org/licenses/{_spdx_ids()[spdx.casefold()]}.html"
    return None


def _policy_failure(policy, spdx):
    """Why a policy refuses one licence id (a phrase after the id), or None when it admits it."""
    if spdx == ALL_RIGHTS_RESERVED:
        return "reserves all rights"
    licence_terms = terms(spdx)
    if not licence_terms.known:
        return "has terms this toolkit does not know"
    if licence_terms.no_derivatives:
        return "does not allow derived works"
    if licence_terms.non_commercial and policy != POLICY_NONCOMMERCIAL:
        return "does not allow commercial use"
    if licence_terms.share_alike and policy == POLICY_PERMISSIVE:
        return "requires derived works to be shared alike"
    return None


def _allow_entry(entry):
    """An allow-list entry -> its canonical form; ValueError saying what is wrong with it."""
    entry = entry.strip()
    if entry.casefold() == UNKNOWN:
        raise ValueError("'unknown' is not a licence id: tracks of unknown licence pass with allow_unknown")
    if re.search(r"\s|[()]", entry):
        raise ValueError(f"the allowed licences are ids or patterns, not expressions: {entry!r}")
    if not any(c in entry for c in "*?["):
        spdx, error = _parse_spdx(entry)
        if error:
            raise ValueError(error)
        return spdx
    if not _PATTERN.fullmatch(entry):
        raise ValueError(f"licence pattern {entry!r} holds characters no SPDX id has")
    if not entry.casefold().startswith("licenseref-") and not fnmatch.filter(_spdx_ids(), entry.casefold()):
        raise ValueError(f"licence pattern {entry!r} matches no id of the SPDX License List {SPDX_LIST_VERSION}")
    return entry


def _suggestion(key):
    """'; did you mean X?' for an id that is not one, or ''."""
    reading = _from_name(key)
    if reading and _url(reading):
        return f"; did you mean {reading}?"  # A licence named with its version (and port): nothing closer.
    close = difflib.get_close_matches(key.casefold(), _spdx_ids(), n=1, cutoff=0.82)
    if close:
        return f"; did you mean {_spdx_ids()[close[0]]}?"
    return f"; did you mean {reading}?" if reading else ""


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class LicenceRules:
    """How a run finds each track's licence, and which licences it keeps.

    A track's licence is, in this order: the one the user stated for every
    input of the run (`stated`); what a listing site said of it, when that
    names a licence (scraped tracks: known before the audio is downloaded);
    what its file's tags say (`licence_from_tags`); else UNKNOWN, with the
    site's text kept when it said something unrecognised.

    Attributes:
      stated: the Licence the user gave for every input (--licence), or None.
      filter: the LicenceFilter tracks must pass, or None to keep every one.
    """

    stated: Licence = None
    filter: LicenceFilter = None

    def before_reading(self, source):
        """The licence known before a track is read, or None when its tags must tell.

        Args:
          source: the track's source record; a scraped one carries the site's text in "licence"
            (empty, or text naming no licence, when the site is silent or unclear: the tags tell then).
        """
        if self.stated is not None:
            return self.stated
        site = normalize(source.get("licence") or "")
        return None if site.spdx == UNKNOWN else site

    @staticmethod
    def after_reading(source, tags):
        """The licence of a track `before_reading` left open: its tags' (`licence_from_tags`), else UNKNOWN
        with the site's text as raw (empty when the site said nothing)."""
        return licence_from_tags(tags) or Licence(UNKNOWN, source.get("licence") or "")

    def exclusion(self, licence):
        """None when a track of this licence is kept, else the reason it is not (`LicenceFilter.check`)."""
        return None if self.filter is None else self.filter.check(licence)
