"""What finds things in text: PII entities, custom regexes, words and phrases, denied topics.

Pure and fast (a word + PII guardrail must add <= 5 ms p50 to a 2,000-character request:
benchmarks/guardrails_overhead.py). Nothing here reads the network or a model file.

**PII.** Microsoft Presidio's pattern recognizers (``presidio-analyzer``) do the entity types
they cover well: their regexes plus checksum validation (Luhn for cards, IBAN check digits, the
invalid SSN blocks, IP parsing). Presidio's ``AnalyzerEngine`` is not used: it loads a spaCy
model, which would have to be downloaded. Each recognizer is called directly with no NLP
artifacts, and Presidio's context boost (a context word near a weak match raises its score) is
done here the same way: +0.35 when one of the recognizer's context words is within
:data:`CONTEXT_WINDOW_CHARS` before the match; a match is kept at :data:`MIN_SCORE` or above.
The email recognizer's domain check uses tldextract's bundled suffix list, never the network.

Outcrop's own patterns (:data:`OWN_PATTERNS`) cover what Presidio lacks (AWS keys, passwords,
user names, ages, card CVV/expiry, PINs, US street addresses, SWIFT codes, VINs) and two it has
but too slowly for the budget: PHONE (Presidio's phonenumbers-based matcher took 28 ms on 2,000
characters here) and URL (its 400-TLD alternation took 2.3 ms). NAME is detected only where the
text says so ("my name is ...", "Mr./Dr. ..."): without an NER model, free-standing names are not
found, and docs/guardrails.md says so.

**Words.** Custom words/phrases and the managed profanity list are matched on whole words,
case-insensitively: the text is split into word tokens once and every n-gram up to the longest
phrase is looked up in a dict (O(tokens x longest phrase), whatever the list's size).

**Denied topics.** :class:`TopicClassifier`, method ``lexical-overlap-v1``: content-word stems of
each example (and of the topic's name and definition) are compared with each sentence of the
text; a topic is detected when a sentence covers at least :data:`EXAMPLE_COVERAGE` of an
example's stems (two at least), holds every stem of the topic's name, or shares at least
:data:`DEFINITION_MIN_SHARED` stems with the definition making up half its content words. The
matched terms and the score are kept with the result so every decision can be explained. It
is lexical, not an embedding model: paraphrases with no shared words are missed (documented).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import regex

from outcrop.guardrails.profanity import PROFANITY

# Presidio's defaults for its context enhancer (LemmaContextAwareEnhancer).
CONTEXT_BOOST = 0.35
MIN_SCORE = 0.4
# How far before a match a context word counts (Presidio looks 5 words back; ~40 characters).
CONTEXT_WINDOW_CHARS = 40
# A custom regex gets this long per text block before it is stopped (catastrophic backtracking).
REGEX_TIMEOUT_SECONDS = 0.05


@dataclass(frozen=True)
class Span:
    """One finding: [start, end) of the text, what it is, and the text matched."""

    start: int
    end: int
    kind: str  # PII entity type, regex name, word text
    match: str


# -- PII: Presidio's recognizers --------------------------------------------------------------------


def _offline_email_recognizer() -> Any:
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    # suffix_list_urls=(): the public suffix list bundled with tldextract; never fetched at run time.
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn)

    return OfflineEmailRecognizer()


def _presidio(name: str) -> Callable[[], Any]:
    def build() -> Any:
        from presidio_analyzer import predefined_recognizers

        return getattr(predefined_recognizers, name)()

    return build


# Bedrock entity type -> a builder of the Presidio recognizer that detects it.
PRESIDIO_TYPES: dict[str, Callable[[], Any]] = {
    "EMAIL": _offline_email_recognizer,
    "CREDIT_DEBIT_CARD_NUMBER": _presidio("CreditCardRecognizer"),
    "US_SOCIAL_SECURITY_NUMBER": _presidio("UsSsnRecognizer"),
    "IP_ADDRESS": _presidio("IpRecognizer"),
    "MAC_ADDRESS": _presidio("MacAddressRecognizer"),
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": _presidio("IbanRecognizer"),
    "US_PASSPORT_NUMBER": _presidio("UsPassportRecognizer"),
    "US_BANK_ACCOUNT_NUMBER": _presidio("UsBankRecognizer"),
    "US_BANK_ROUTING_NUMBER": _presidio("AbaRoutingRecognizer"),
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER": _presidio("UsItinRecognizer"),
    "UK_NATIONAL_INSURANCE_NUMBER": _presidio("UkNinoRecognizer"),
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": _presidio("NhsRecognizer"),
    "CA_SOCIAL_INSURANCE_NUMBER": _presidio("CaSinRecognizer"),
    "DRIVER_ID": _presidio("UsLicenseRecognizer"),
}


@functools.cache
def presidio_recognizer(entity_type: str) -> Any:
    """Built once per process (building compiles the recognizer's patterns)."""
    return PRESIDIO_TYPES[entity_type]()


# -- PII: Outcrop's own patterns -------------------------------------------------------------------


@dataclass(frozen=True)
class OwnPattern:
    """A compiled pattern; ``group`` is the part that is the entity (0: the whole match).
    ``context``: if given, one of these words must be within CONTEXT_WINDOW_CHARS before the match."""

    pattern: re.Pattern[str]
    group: int = 0
    context: tuple[str, ...] = ()
    check: Callable[[str], bool] | None = None


def _mixed_secret(value: str) -> bool:
    return (
        any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq)"
)

OWN_PATTERNS: dict[str, tuple[OwnPattern, ...]] = {
    # NANP ((206) 555-0100, 206-555-0100, +1 206 555 0100) and international +CC forms.
    "PHONE": (
        OwnPattern(
            re.compile(
                r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)"
                r"|(?<![\w+])\+\d{1,3}[\s.-]?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}(?!\w)"
            )
        ),
    ),
    "URL": (OwnPattern(re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()]+[^\s<>\"'().,;:!?]", re.IGNORECASE)),),
    "AWS_ACCESS_KEY": (
        OwnPattern(re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")),
    ),
    "AWS_SECRET_KEY": (
        OwnPattern(
            re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
            check=_mixed_secret,
        ),
    ),
    "PASSWORD": (
        OwnPattern(
            re.compile(
                r"(?i)\b(?:password|passwd|passphrase|pwd)\b\s*(?:is\s*|[:=]\s*)[\"']?([^\s\"']{3,})",
            ),
            group=1,
        ),
    ),
    "USERNAME": (
        OwnPattern(
            re.compile(r"(?i)\b(?:user\s?name|user\s?id|login)\b\s*(?:is\s*|[:=]\s*)[\"']?([\w.@+-]{2,})"),
            group=1,
        ),
    ),
    "NAME": (
        OwnPattern(
            re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+([A-Z][a-z]+(?:[ -][A-Z][a-z]+)?)"), group=1
        ),
        OwnPattern(
            re.compile(r"(?i:\bmy name is|\bname\s*:)\s+([A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2})"),
            group=1,
        ),
    ),
    "ADDRESS": (
        OwnPattern(
            re.compile(
                r"\b\d{1,6}\s+(?:[A-Z][a-z]+\s+){1,3}" + _STREET + r"\b\.?"
                r"(?:,?\s+(?:Apt|Suite|Unit)\.?\s*\w+)?"
                r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)*)?(?:,\s*[A-Z]{2})?(?:\s+\d{5}(?:-\d{4})?)?"
            )
        ),
    ),
    "AGE": (
        OwnPattern(re.compile(r"(?i)\b(\d{1,3})[\s-]*(?:years?|yrs?)[\s-]*old\b"), group=1),
        OwnPattern(re.compile(r"(?i)\b(?:aged?|age\s*:)\s*(\d{1,3})\b"), group=1),
    ),
    "CREDIT_DEBIT_CARD_CVV": (
        OwnPattern(
            re.compile(r"(?i)\b(?:cvv2?|cvc2?|security code)\b\s*(?:is\s*|[:=#]\s*)?(\d{3,4})\b"), group=1
        ),
    ),
    "CREDIT_DEBIT_CARD_EXPIRY": (
        OwnPattern(
            re.compile(
                r"(?i)\b(?:exp(?:iry|iration|ires)?(?:\s*date)?)\b\s*(?:is\s*|[:=]\s*)?"
                r"((?:0[1-9]|1[0-2])\s*/\s*(?:\d{4}|\d{2}))\b"
            ),
            group=1,
        ),
    ),
    "PIN": (
        OwnPattern(
            re.compile(r"(?i)\bpin(?:\s*(?:code|number))?\b\s*(?:is\s*|[:=#]\s*)?(\d{4,8})\b"), group=1
        ),
    ),
    "SWIFT_CODE": (
        OwnPattern(re.compile(r"\b[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b"), context=("swift", "bic")),
    ),
    "VEHICLE_IDENTIFICATION_NUMBER": (
        OwnPattern(re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b"), context=("vin", "vehicle", "chassis")),
    ),
    "LICENSE_PLATE": (
        OwnPattern(
            re.compile(
                r"(?i)\b(?:license|licence|number|registration)\s+plate\b\s*(?:is\s*|[:=#]\s*)?([A-Z0-9][A-Z0-9 -]{1,7}[A-Z0-9])\b"
            ),
            group=1,
        ),
    ),
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER": (
        OwnPattern(
            re.compile(r"\b\d{5}\s?\d{5}\b"), context=("utr", "taxpayer reference", "unique taxpayer")
        ),
    ),
}

SUPPORTED_PII_TYPES = frozenset(PRESIDIO_TYPES) | frozenset(OWN_PATTERNS)


def warm(entity_types: Iterable[str] = PRESIDIO_TYPES) -> None:
    """Import Presidio and build its recognizers now (seconds on a busy machine), not on a request."""
    for kind in entity_types:
        if kind in PRESIDIO_TYPES:
            presidio_recognizer(kind)


def _has_context(lowered: str, start: int, words: Iterable[str]) -> bool:
    window = lowered[max(0, start - CONTEXT_WINDOW_CHARS) : start]
    return any(w in window for w in words)


# Cheap necessary conditions, checked before a recognizer runs: most text has no '@' and few digits,
# and skipping the recognizers that cannot match is what keeps a clean 2,000 characters fast.
# Digits: the fewest any match of the type holds (a card 12+, an SSN 9, an IPv4 address 4, ...).
MIN_DIGITS = {
    "CREDIT_DEBIT_CARD_NUMBER": 12,
    "US_SOCIAL_SECURITY_NUMBER": 9,
    "PHONE": 7,
    "US_BANK_ACCOUNT_NUMBER": 8,
    "US_BANK_ROUTING_NUMBER": 9,
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER": 9,
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": 10,
    "CA_SOCIAL_INSURANCE_NUMBER": 9,
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER": 10,
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": 2,
    "US_PASSPORT_NUMBER": 1,
    "DRIVER_ID": 1,
    "UK_NATIONAL_INSURANCE_NUMBER": 6,
    "AGE": 1,
    "CREDIT_DEBIT_CARD_CVV": 3,
    "CREDIT_DEBIT_CARD_EXPIRY": 3,
    "PIN": 4,
    "ADDRESS": 1,
}


def _may_hold(kind: str, text: str, lowered: str, digits: int) -> bool:
    if digits < MIN_DIGITS.get(kind, 0):
        return False
    if kind == "EMAIL":
        return "@" in text
    if kind == "IP_ADDRESS":  # IPv4 has 4+ digits; IPv6 has 2+ colons
        return digits >= 4 or text.count(":") >= 2
    if kind == "URL":
        return "http" in lowered or "www." in lowered
    return True


def find_pii(text: str, entity_types: Iterable[str], lowered: str | None = None) -> list[Span]:
    """Every entity of ``entity_types`` in ``text`` (overlaps possible; see :func:`non_overlapping`)."""
    lowered = text.lower() if lowered is None else lowered
    digits = sum(map(str.isdigit, text))
    spans: list[Span] = []
    for kind in entity_types:
        if not _may_hold(kind, text, lowered, digits):
            continue
        if kind in PRESIDIO_TYPES:
            recognizer = presidio_recognizer(kind)
            context = [c.lower() for c in (recognizer.context or [])]
            for result in recognizer.analyze(text, recognizer.supported_entities, None):
                score = result.score
                if score < MIN_SCORE and context and _has_context(lowered, result.start, context):
                    score += CONTEXT_BOOST
                if score >= MIN_SCORE - 1e-9:
                    spans.append(Span(result.start, result.end, kind, text[result.start : result.end]))
            continue
        for own in OWN_PATTERNS[kind]:
            for m in own.pattern.finditer(text):
                start, end = m.span(own.group)
                value = m.group(own.group)
                if own.context and not _has_context(lowered, m.start(), own.context):
                    continue
                if own.check is not None and not own.check(value):
                    continue
                spans.append(Span(start, end, kind, value))
    return spans


def find_regexes(text: str, patterns: Iterable[tuple[str, regex.Pattern[str]]]) -> list[Span]:
    spans: list[Span] = []
    for name, compiled in patterns:
        try:
            for m in compiled.finditer(text, timeout=REGEX_TIMEOUT_SECONDS):
                if m.end() > m.start():
                    spans.append(Span(m.start(), m.end(), name, m.group(0)))
        except TimeoutError:
            # A pattern that backtracks catastrophically on this text: what it found so far stands.
            continue
    return spans


def non_overlapping(spans: list[Span]) -> list[Span]:
    """Earliest first; of overlapping spans the longer wins (so a card number is not also a phone)."""
    ordered = sorted(spans, key=lambda s: (s.start, -(s.end - s.start)))
    kept: list[Span] = []
    for span in ordered:
        if kept and span.start < kept[-1].end:
            continue
        kept.append(span)
    return kept


# -- words ----------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\w+(?:'\w+)*")


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


@dataclass
class WordMatcher:
    """Whole-word, case-insensitive matching of words and phrases: phrase tokens -> (kind, original text)."""

    phrases: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)
    firsts: set[str] = field(default_factory=set)  # first token of every phrase: most texts share none
    substrings: list[tuple[str, str, str]] = field(default_factory=list)  # entries with no word characters
    longest: int = 0

    def add(self, text: str, kind: str) -> None:
        key = tuple(tokens(text))
        if not key:
            self.substrings.append((text.lower(), kind, text))
            return
        self.phrases.setdefault(key, (kind, text))
        self.firsts.add(key[0])
        self.longest = max(self.longest, len(key))

    def find(self, text: str, lowered: str | None = None, words: set[str] | None = None) -> list[Span]:
        """``words``: the set of ``lowered``'s tokens, when the caller has it (one tokenization per text)."""
        lowered = text.lower() if lowered is None else lowered
        found: list[Span] = []
        if self.phrases:
            present = set(_TOKEN_RE.findall(lowered)) if words is None else words
            if not self.firsts.isdisjoint(present):  # only then find where (the common case stops here)
                toks = list(_TOKEN_RE.finditer(lowered))
                seq = [t.group(0) for t in toks]
                n = len(seq)
                for i in range(n):
                    if seq[i] not in self.firsts:
                        continue
                    for length in range(1, min(self.longest, n - i) + 1):
                        hit = self.phrases.get(tuple(seq[i : i + length]))
                        if hit is not None:
                            start, end = toks[i].start(), toks[i + length - 1].end()
                            found.append(Span(start, end, hit[0], text[start:end]))
        for needle, kind, _original in self.substrings:
            at = lowered.find(needle)
            while at >= 0:
                found.append(Span(at, at + len(needle), kind, text[at : at + len(needle)]))
                at = lowered.find(needle, at + len(needle))
        return found


def word_set(lowered: str) -> set[str]:
    return set(_TOKEN_RE.findall(lowered))


@functools.cache
def profanity_matcher() -> WordMatcher:
    matcher = WordMatcher()
    for word in PROFANITY:
        matcher.add(word, "PROFANITY")
    return matcher


# -- denied topics --------------------------------------------------------------------------------

TOPIC_METHOD = "lexical-overlap-v1"
# A sentence that covers this share of an example's content-word stems (and at least
# EXAMPLE_MIN_SHARED of them) is on the topic: examples are short questions of 3-10 content words.
EXAMPLE_COVERAGE = 0.6
EXAMPLE_MIN_SHARED = 2
# Against the (longer, descriptive) definition: at least this many shared stems, and half of the
# sentence's content words among them.
DEFINITION_MIN_SHARED = 3

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "tell",
        "give",
        "get",
        "want",
        "need",
        "please",
        "like",
        "also",
        "any",
        "anything",
        "something",
        "about",
        "whether",
        "can't",
        "don't",
        "i'm",
        "it's",
        "let's",
        "should've",
    ]
)
_SUFFIXES = (
    "ations",
    "ation",
    "ings",
    "ing",
    "ments",
    "ment",
    "ies",
    "ied",
    "ers",
    "er",
    "ed",
    "es",
    "s",
    "ly",
)
_SENTENCE_RE = re.compile(r"[^.!?\n]+")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                word += "y"
            break
    return word


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in tokens(text) if w not in STOPWORDS and len(w) > 2 and not w.isdigit()}


@dataclass
class TopicHit:
    name: str
    score: float
    matched_terms: list[str]
    method: str = TOPIC_METHOD


@dataclass
class _Topic:
    name: str
    name_stems: set[str]
    definition: set[str]
    examples: list[set[str]]


class TopicClassifier:
    """Denied topics by lexical overlap (method ``lexical-overlap-v1``; see the module docstring)."""

    def __init__(self, topics: list[dict[str, Any]]) -> None:
        self.topics = [
            _Topic(
                name=t["name"],
                name_stems=content_stems(t["name"]),
                definition=content_stems(t["definition"]),
                examples=[s for s in (content_stems(e) for e in t.get("examples") or []) if s],
            )
            for t in topics
        ]

    def classify(self, text: str, names: set[str] | None = None) -> list[TopicHit]:
        sentences = [content_stems(s) for s in _SENTENCE_RE.findall(text)]
        sentences = [s for s in sentences if s]
        hits = []
        for topic in self.topics:
            if names is not None and topic.name not in names:
                continue
            best: TopicHit | None = None
            for words in sentences:
                candidates: list[tuple[float, set[str]]] = []
                for example in topic.examples:
                    shared = example & words
                    coverage = len(shared) / len(example)
                    if coverage >= EXAMPLE_COVERAGE and len(shared) >= min(EXAMPLE_MIN_SHARED, len(example)):
                        candidates.append((coverage, shared))
                if topic.name_stems and topic.name_stems <= words:
                    candidates.append((1.0, set(topic.name_stems)))
                shared_def = topic.definition & words
                if len(shared_def) >= DEFINITION_MIN_SHARED and len(shared_def) * 2 >= len(words):
                    candidates.append((len(shared_def) / len(words), shared_def))
                for score, shared in candidates:
                    if best is None or score > best.score:
                        best = TopicHit(topic.name, round(score, 3), sorted(shared))
            if best is not None:
                hits.append(best)
        return hits
