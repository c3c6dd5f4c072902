"""Detectors: one kind of sensitive text each, found by a scan that streams.

Every detector answers one question, position by position from left to right:
does a match start here, and where does it end? (``match_at``). The answer may
read a bounded window only: up to ``CONTEXT_CHARS`` before the position, the
match itself (at most ``max_chars``) and ``lookahead_chars`` after it. A scan
takes the first match, goes on after its end, and otherwise tries the next
position. Because each answer is local, a stream can be judged piece by piece
and come out exactly as the whole text would (see ``stream.py``).

``candidate`` is a regular expression that matches wherever a real match could
start (a superset: validation follows). The scan uses it to jump to the next
possible start; the stream redactor uses its partial matching to know whether a
tail could still grow into a match. ``terminator`` matches a character no match
can contain: once one is seen, everything before it is decided.

Every detector reads the normalised view of the text (``normalise.py``): zero-width
characters and soft hyphens removed, full-width forms and confusable letters folded,
so ``j\u200bohn\uff20example.com`` is an email; matches map back to the original
characters for redaction.

What is detected
----------------
- ``email``: ``local@domain.tld`` (local part up to 64 characters, up to 8 domain labels).
- ``phone``: numbers the ``phonenumbers`` library (Google's libphonenumber) finds with
  its ``PhoneNumberMatcher`` and judges valid: international ``+`` numbers always,
  national numbers for the configured regions (``DEFAULT_PHONE_REGIONS`` by default)
  as people write them there, with the trunk prefix where the country has a 0 one
  (``030 1234567`` in Germany, ``06 12 34 56 78`` in France, ``020 7946 0958`` in the
  UK; US numbers with or without the leading 1). A number is read from digits,
  spaces and ``+()-./``, 7 to 17 digits; an extension written with letters (``x12``)
  is left in place. Only stretches of a possible length for a region reach the
  matcher, so a table of digits stays cheap.
- ``credit_card``: 13 to 19 digits, optionally grouped by single spaces, dashes or dots,
  passing the Luhn checksum (``python-stdnum``) and starting with a card network's
  prefix (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir).
- ``iban``: country code, check digits and account, in any case, with or without
  single spaces or dashes, validated by ``stdnum.iban`` (country format and mod-97 checksum).
- ``secret``: PEM private key blocks; JSON Web Tokens (``eyJ….eyJ….…``); API keys
  of OpenAI (``sk-``, ``sk-proj-``), Anthropic (``sk-ant-``), plugway (``pw_``,
  ``pwa_``), AWS access key ids (``AKIA``/``ASIA``), GitHub (``ghp_`` and the
  other ``gh?_``, ``github_pat_``), Slack (``xox?-``), Google (``AIza``), Stripe
  (``sk_live_``, ``rk_live_``, ``sk_test_``); and the token after ``Bearer``.
  Tokens must contain a letter and a digit, so a hyphenated slug is not a key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, get_args

import phonenumbers
import regex
from phonenumbers import Leniency, PhoneNumberMatcher
from stdnum import iban as stdnum_iban
from stdnum import luhn, numdb

from runtime.guardrails.normalise import Normalised, normalise_term
from runtime.guardrails.patterns import compile_pattern

# Characters kept before the unsent tail of a stream: the longest lookbehind of any detector.
CONTEXT_CHARS = 32

# The PII categories, named once (in the order the documentation lists them). ``PII`` below
# gives each its placeholder and detectors; an import-time check keeps the two in step.
PiiCategory = Literal["email", "phone", "credit_card", "iban", "secret"]
PII_CATEGORIES: tuple[PiiCategory, ...] = get_args(PiiCategory)
DENYLIST_PLACEHOLDER = "[REDACTED]"
_PLACEHOLDER_CHARS = 13

# National numbers are judged against these regions unless a guardrail names its own.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")


class Hit(NamedTuple):
    start: int
    end: int
    message: str


class Detector:
    category: str
    message: str
    candidate: regex.Pattern[str]
    max_chars: int
    lookahead_chars: int = 1
    terminator: regex.Pattern[str] | None = None
    # A complete match cannot change with more text (a lazy match up to an end marker).
    final_once_complete: bool = False
    # Ignore matches inside a placeholder an earlier guardrail wrote ("[SECRET]" is no secret).
    skip_placeholders: bool = False

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS[self.category]

    def match_at(self, text: str, position: int, end: int) -> Hit | None:
        found = self.candidate.match(text, position, end)
        if found is None or found.end() == position:
            return None
        if self.skip_placeholders and _inside_placeholder(text, position, found.end()):
            return None
        return Hit(position, found.end(), self.describe(found))

    def describe(self, found: regex.Match[str]) -> str:
        return self.message

    def first_possible_start(self, text: str, position: int, end: int) -> int | None:
        """The first place from ``position`` where a match could start once more text arrives.

        Conservative: it may name a place that never becomes a match, never skips one that can.
        """
        found = self.candidate.search(text, position, end, partial=True)
        return None if found is None else int(found.start())


def _inside_placeholder(text: str, start: int, end: int) -> bool:
    for found in _PLACEHOLDER.finditer(
        text, max(0, start - _PLACEHOLDER_CHARS), end + _PLACEHOLDER_CHARS
    ):
        if found.start() <= start and end <= found.end():
            return True
    return False


def in_original(view: Normalised, hits: list[Hit]) -> list[Hit]:
    """Hits found in a normalised view, as spans of the original text (left to right, disjoint)."""
    if view.starts is None:
        return hits
    mapped: list[Hit] = []
    previous_end = 0
    for hit in hits:
        start, end = view.span(hit.start, hit.end)
        start = max(start, previous_end)  # two hits inside one ligature: the first takes it
        if start < end:
            mapped.append(Hit(start, end, hit.message))
            previous_end = end
    return mapped


def find(detector: Detector, view: Normalised) -> list[Hit]:
    """The detector's matches in the whole text, read on its normalised view, as original spans."""
    return in_original(view, scan(detector, view.text, 0, len(view.text)))


def scan(detector: Detector, text: str, start: int, end: int) -> list[Hit]:
    """The detector's matches in ``text[start:end]``, left to right (earlier text is context only)."""
    hits: list[Hit] = []
    position = start
    while position < end:
        found = detector.candidate.search(text, position, end)
        if found is None:
            break
        hit = detector.match_at(text, found.start(), end)
        if hit is None:
            position = found.start() + 1
        else:
            hits.append(hit)
            position = hit.end
    return hits


# ---------------------------------------------------------------- email


class EmailDetector(Detector):
    category = "email"
    message = "email address"
    candidate = regex.compile(
        r"(?<![\w.%+\-@])[\w%+\-][\w.%+\-]{0,63}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}"
        r"(?![\w\-@]|\.[\w\-])"
    )
    max_chars = 64 + 1 + 8 * 64 + 24
    lookahead_chars = 2
    terminator = regex.compile(r"[^\w.%+\-@]")


# ---------------------------------------------------------------- phone


class PhoneDetector(Detector):
    category = "phone"
    message = "phone number"
    # A start: "+", "(" or a digit not glued to a word; the run of phone characters after it.
    candidate = regex.compile(r"(?<![0-9A-Za-z+])(?:\+|\()?\d[0-9 ()\-./\u00a0]{0,45}")
    max_chars = 47
    terminator = regex.compile(r"[^0-9 ()\-./+\u00a0]")

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(regions)
        self._lengths = {region: _national_lengths(region) for region in self.regions}

    def match_at(self, text: str, position: int, end: int) -> Hit | None:
        run = self.candidate.match(text, position, end)
        if run is None:
            return None
        window = run.group()
        # Where the number may end (after a group of digits) and how many digits it has there.
        ends: list[tuple[int, int]] = []
        digits = ""
        for group in _DIGIT_GROUP.finditer(window):
            digits += group.group()
            if len(digits) > _MAX_PHONE_DIGITS:
                break
            ends.append((group.end(), len(digits)))
        # Only a stretch of a possible length reaches phonenumbers (its matcher costs ~0.1 ms a
        # call), and the matcher reads no further than the longest one: a table of digits costs little.
        stretch: dict[str, int] = {}
        for region in self.regions[:1] if window.startswith("+") else self.regions:
            counts = (
                _INTERNATIONAL_COUNTS
                if window.startswith("+")
                else _national_counts(digits, *self._lengths[region])
            )
            stop = max((stop for stop, count in ends if count in counts), default=0)
            if stop:
                stretch[region] = stop
        length = max(
            (_phone_at_start(window[:stop], region) for region, stop in stretch.items()), default=0
        )
        return Hit(position, position + length, self.message) if length else None


_MAX_PHONE_DIGITS = 17  # E.164's 15, a written trunk prefix, a "(0)"
_INTERNATIONAL_COUNTS = frozenset(range(7, 17))
_DIGIT_GROUP = regex.compile(r"\d+")


def _national_lengths(region: str) -> tuple[str, frozenset[int]]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.general_desc is None:
        return "", frozenset()
    return metadata.national_prefix or "", frozenset(metadata.general_desc.possible_length or ())


def _national_counts(digits: str, prefix: str, lengths: frozenset[int]) -> frozenset[int]:
    """How many digits a national number of the region starting with these digits may have,
    as people write it there: where the trunk prefix is 0 (030… in Germany, 06… in France,
    020… in the UK) it is written; elsewhere (the US's optional 1, none in Spain) it may not be."""
    counts: set[int] = set()
    if prefix and digits.startswith(prefix):
        counts |= {length + len(prefix) for length in lengths}
    if not prefix.startswith("0"):
        counts |= lengths
    return frozenset(counts)


@functools.lru_cache(maxsize=4096)
def _phone_at_start(window: str, region: str) -> int:
    """Length of the valid phone number (for the region) that starts the window; 0: none."""
    for match in PhoneNumberMatcher(window, region, leniency=Leniency.VALID):
        return int(match.end) if match.start == 0 else 0
    return 0


def valid_phone_region(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


# ---------------------------------------------------------------- credit card

# (first digits low, high, how many digits compared, allowed lengths)
_CARD_NETWORKS: tuple[tuple[int, int, int, range], ...] = (
    (4, 4, 1, range(13, 20)),  # Visa
    (51, 55, 2, range(16, 17)),  # Mastercard
    (2221, 2720, 4, range(16, 17)),  # Mastercard 2-series
    (34, 34, 2, range(15, 16)),  # American Express
    (37, 37, 2, range(15, 16)),
    (6011, 6011, 4, range(16, 20)),  # Discover
    (644, 649, 3, range(16, 20)),
    (65, 65, 2, range(16, 20)),
    (3528, 3589, 4, range(16, 20)),  # JCB
    (300, 305, 3, range(14, 20)),  # Diners Club
    (36, 36, 2, range(14, 20)),
    (38, 39, 2, range(16, 20)),
    (62, 62, 2, range(16, 20)),  # UnionPay
    (2200, 2204, 4, range(16, 20)),  # Mir
    (50, 50, 2, range(13, 20)),  # Maestro
    (56, 69, 2, range(13, 20)),
)


def plausible_card(digits: str) -> bool:
    for low, high, width, lengths in _CARD_NETWORKS:
        if len(digits) in lengths and low <= int(digits[:width]) <= high:
            return luhn.is_valid(digits)
    return False


def _group_ends(
    run: regex.Match[str], text: str, end: int, separators: str
) -> list[tuple[int, int]]:
    """Where a run of groups may end (before a separator, or at its end when no letter or
    digit follows), with how many characters (separators left out) it holds then; longest first."""
    value = run.group()
    stops = [index for index, char in enumerate(value) if char in separators]
    ends = [(run.start() + stop, stop - count) for count, stop in enumerate(stops)]
    after = text[run.end()] if run.end() < end else ""
    if not (after.isascii() and after.isalnum()):
        ends.append((run.end(), len(value) - len(stops)))
    return ends[::-1]


_NO_SEPARATORS = str.maketrans("", "", " -.")


def _glued_to_word(text: str, position: int) -> bool:
    return position > 0 and text[position - 1].isascii() and text[position - 1].isalnum()


class CardDetector(Detector):
    category = "credit_card"
    message = "credit card number"
    # Groups separated by a space, a dash or a dot (4111.1111.1111.1111), as people write them.
    candidate = regex.compile(r"(?<![0-9A-Za-z])\d(?:[ \-.]?\d){12,18}(?![0-9A-Za-z])")
    max_chars = 19 + 18
    terminator = regex.compile(r"[^0-9 \-.]")
    _RUN = regex.compile(r"\d(?:[ \-.]?\d){0,18}")

    def match_at(self, text: str, position: int, end: int) -> Hit | None:
        run = self._RUN.match(text, position, end)
        if run is None or _glued_to_word(text, position):
            return None
        for stop, count in _group_ends(run, text, end, " -."):
            if count >= 13 and plausible_card(text[position:stop].translate(_NO_SEPARATORS)):
                return Hit(position, stop, self.message)
        return None


# ---------------------------------------------------------------- IBAN


@functools.lru_cache(maxsize=512)
def _iban_length(country: str) -> int:
    """The length of the country's IBANs (0: not an IBAN country), from stdnum's registry."""
    found = _IBAN_REGISTRY.info(country)
    structure = found[0][1].get("bban", "") if found and found[0][0] == country else ""
    return 4 + sum(int(size) for size in regex.findall(r"(\d+)!", structure)) if structure else 0


_IBAN_REGISTRY = numdb.get("iban")


class IbanDetector(Detector):
    category = "iban"
    message = "IBAN"
    # Any case (people and forms write "de89 3704 …" too), in groups split by a space or a dash.
    candidate = regex.compile(
        r"(?<![0-9A-Za-z])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,30}(?![0-9A-Za-z])"
    )
    max_chars = 34 + 33
    terminator = regex.compile(r"[^A-Za-z0-9 \-]")
    _RUN = regex.compile(r"[A-Za-z0-9](?:[ \-]?[A-Za-z0-9]){0,33}")

    def match_at(self, text: str, position: int, end: int) -> Hit | None:
        length = _iban_length(text[position : position + 2].upper())
        run = self._RUN.match(text, position, end)
        if not length or run is None or _glued_to_word(text, position):
            return None
        for stop, count in _group_ends(run, text, end, " -"):
            if count == length:
                valid = stdnum_iban.is_valid(text[position:stop].translate(_NO_SEPARATORS).upper())
                return Hit(position, stop, self.message) if valid else None
        return None


# ---------------------------------------------------------------- secrets

_TOKEN_FORMATS: tuple[tuple[str, str, str], ...] = (
    ("anthropic", "Anthropic API key", r"sk-ant-[A-Za-z0-9_\-]{20,200}"),
    ("openai", "OpenAI API key", r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}"),
    ("stripe", "Stripe secret key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}"),
    ("plugway_admin", "plugway admin key", r"pwa_[A-Za-z0-9_\-]{32,64}"),
    ("plugway", "plugway gateway key", r"pw_[A-Za-z0-9_\-]{32,64}"),
    ("aws", "AWS access key id", r"(?:AKIA|ASIA)[A-Z0-9]{16}"),
    ("github", "GitHub token", r"gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,247}"),
    ("slack", "Slack token", r"xox[abposr]-[A-Za-z0-9\-]{10,250}"),
    ("google", "Google API key", r"AIza[A-Za-z0-9_\-]{35}"),
)
_TOKEN_MESSAGES = {name: message for name, message, _ in _TOKEN_FORMATS}


def _looks_random(token: str) -> bool:
    return any(char.isdigit() for char in token) and any(char.isalpha() for char in token)


class ApiKeyDetector(Detector):
    category = "secret"
    message = "API key"
    candidate = regex.compile(
        r"(?<![A-Za-z0-9_\-])(?:"
        + "|".join(f"(?P<{name}>{pattern})" for name, _, pattern in _TOKEN_FORMATS)
        + r")(?![A-Za-z0-9_\-])"
    )
    max_chars = 11 + 251
    terminator = regex.compile(r"[^A-Za-z0-9_\-]")

    def match_at(self, text: str, position: int, end: int) -> Hit | None:
        found = self.candidate.match(text, position, end)
        if found is None or not _looks_random(found.group()):
            return None
        return Hit(position, found.end(), self.describe(found))

    def describe(self, found: regex.Match[str]) -> str:
        return _TOKEN_MESSAGES.get(found.lastgroup or "", self.message)


class JwtDetector(Detector):
    category = "secret"
    message = "JSON Web Token"
    candidate = regex.compile(
        r"(?<![A-Za-z0-9_\-.])eyJ[A-Za-z0-9_\-]{5,2000}\.eyJ[A-Za-z0-9_\-]{5,6000}\.[A-Za-z0-9_\-]{0,1000}"
        r"(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])"
    )
    max_chars = 3 + 2000 + 4 + 6000 + 1 + 1000
    lookahead_chars = 2
    terminator = regex.compile(r"[^A-Za-z0-9_\-.]")


class BearerTokenDetector(Detector):
    category = "secret"
    message = "bearer token"
    candidate = regex.compile(
        r"(?<=(?<![A-Za-z0-9])(?i:bearer)[ \t]{1,3})"
        r"[A-Za-z0-9\-._~+/]{15,1023}[A-Za-z0-9\-_~+/]=*(?![A-Za-z0-9\-_~+/=])"
    )
    max_chars = 1024 + 2
    terminator = regex.compile(r"[^A-Za-z0-9\-._~+/=]")

    def match_at(self, text: str, position: int, end: int) -> Hit | None:
        found = self.candidate.match(text, position, end)
        if found is None or not any(char.isdigit() for char in found.group()):
            return None
        return Hit(position, found.end(), self.message)


class PrivateKeyDetector(Detector):
    category = "secret"
    message = "private key"
    candidate = regex.compile(
        r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----"
        r"[A-Za-z0-9+/=\s:,.\-]{1,10000}?"
        # A block cut short (no END line) is still a key: it ends where its characters do.
        r"(?:-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----|(?=[^A-Za-z0-9+/=\s:,.\-])|\Z)"
    )
    max_chars = 10000 + 2 * 100
    terminator = regex.compile(r"[^A-Za-z0-9+/=\s:,.\-]")
    final_once_complete = True


# ---------------------------------------------------------------- denylist


class DenylistTermsDetector(Detector):
    """Terms as whole words or phrases, any case; a space in a term matches 1 to 4 whitespace characters."""

    category = "denylist"
    message = "denylisted term"
    skip_placeholders = True
    lookahead_chars = _PLACEHOLDER_CHARS  # to tell a match inside a placeholder
    _GAP = r"\s{1,4}"

    def __init__(self, terms: Sequence[str]) -> None:
        # Written as the text they are matched against is read (full-width, confusable letters).
        terms = [normalise_term(term) for term in terms]
        words = [term.split() for term in terms]
        alternatives = sorted(
            (self._GAP.join(regex.escape(word) for word in term) for term in words),
            key=len,
            reverse=True,
        )
        self.candidate = regex.compile(
            r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", regex.IGNORECASE
        )
        self.max_chars = max(sum(len(word) + 4 for word in term) for term in words)
        alphabet = {regex.escape(char) for term in terms for char in term if not char.isspace()}
        self.terminator = regex.compile("[^" + "".join(sorted(alphabet)) + r"\s]", regex.IGNORECASE)


class DenylistPatternDetector(Detector):
    category = "denylist"
    message = "text matching a denylisted pattern"
    skip_placeholders = True
    lookahead_chars = _PLACEHOLDER_CHARS

    def __init__(self, source: str) -> None:
        compiled = compile_pattern(source)
        self.candidate = compiled.pattern
        self.max_chars = compiled.max_chars
        self.terminator = compiled.terminator


# ---------------------------------------------------------------- building

class Category(NamedTuple):
    placeholder: str
    # Its detectors, given the regions national phone numbers are read for.
    detectors: Callable[[tuple[str, ...]], tuple[Detector, ...]]


# In the order detectors run: secrets first (a key may hold digits and an "@"), the most
# permissive (phone) last.
PII: dict[PiiCategory, Category] = {
    "secret": Category(
        "[SECRET]",
        lambda _: (PrivateKeyDetector(), JwtDetector(), ApiKeyDetector(), BearerTokenDetector()),
    ),
    "email": Category("[EMAIL]", lambda _: (EmailDetector(),)),
    "iban": Category("[IBAN]", lambda _: (IbanDetector(),)),
    "credit_card": Category("[CREDIT_CARD]", lambda _: (CardDetector(),)),
    "phone": Category("[PHONE]", lambda regions: (PhoneDetector(regions),)),
}
if set(PII) != set(PII_CATEGORIES):
    raise RuntimeError("PII must describe every PiiCategory")

PLACEHOLDERS: dict[str, str] = {
    **{name: category.placeholder for name, category in PII.items()},
    "denylist": DENYLIST_PLACEHOLDER,
}
_PLACEHOLDER = regex.compile("|".join(regex.escape(text) for text in PLACEHOLDERS.values()))


@functools.lru_cache(maxsize=256)
def pii_detectors(
    categories: tuple[str, ...], phone_regions: tuple[str, ...]
) -> tuple[Detector, ...]:
    return tuple(
        detector
        for name, category in PII.items()
        if name in categories
        for detector in category.detectors(phone_regions)
    )


@functools.lru_cache(maxsize=256)
def denylist_detectors(terms: tuple[str, ...], patterns: tuple[str, ...]) -> tuple[Detector, ...]:
    detectors: list[Detector] = []
    if terms:
        detectors.append(DenylistTermsDetector(terms))
    detectors += [DenylistPatternDetector(source) for source in patterns]
    return tuple(detectors)
