"""Text to chunks with Bedrock's ``ChunkingConfiguration`` (botocore ``bedrock-agent`` model).

Strategies, with the service model's ranges (checked by :func:`validate_chunking`):

- ``FIXED_SIZE``: ``fixedSizeChunkingConfiguration.maxTokens`` 1-8192 and ``overlapPercentage``
  1-99. No configuration at all means Bedrock's default: FIXED_SIZE, 300 tokens, 20 % overlap.
- ``HIERARCHICAL``: ``hierarchicalChunkingConfiguration.levelConfigurations`` exactly two
  ``{"maxTokens": 1-8192}`` (parent, then child) and ``overlapTokens`` >= 1. Each child carries
  its parent's text (Retrieve returns the parent, as Bedrock does).
- ``SEMANTIC``: ``semanticChunkingConfiguration.maxTokens`` 1-8192, ``bufferSize`` 0-1 and
  ``breakpointPercentileThreshold`` 50-99: adjacent sentences (each with ``bufferSize``
  neighbours on both sides) are embedded, and the text is split where the cosine distance of a
  pair is above that percentile of all pairs; groups over ``maxTokens`` are split again.
- ``NONE``: each document is one chunk.

Chunks are cut at sentence boundaries where they can be (then at words, then inside a word that
alone is longer than a chunk), and each chunk is a slice of the original text, so spans and
citations point at text the user wrote. Token counts come from the knowledge base's own
embedding model's tokenizer (``count_tokens``), counted per sentence and summed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from outcrop.errors import InvalidRequestError

# Bedrock's default when a data source has no chunking configuration.
DEFAULT_MAX_TOKENS = 300
DEFAULT_OVERLAP_PERCENTAGE = 20
# Sentences embedded per call when chunking semantically (one request to the embedding copy).
SEMANTIC_EMBED_BATCH = 64

STRATEGIES = ("FIXED_SIZE", "NONE", "HIERARCHICAL", "SEMANTIC")
_CONFIG_KEYS = {
    "FIXED_SIZE": "fixedSizeChunkingConfiguration",
    "HIERARCHICAL": "hierarchicalChunkingConfiguration",
    "SEMANTIC": "semanticChunkingConfiguration",
}
_PREFIX = "chunkingConfiguration"


@dataclass(frozen=True)
class ChunkPiece:
    text: str
    parent_text: str | None = None


CountTokens = Callable[[str], int]
Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


# ---------------------------------------------------------------- validation


def _bad(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{_PREFIX}.{field}: {message}", param=f"{_PREFIX}.{field}")


def _int_field(obj: dict[str, Any], parent: str, name: str, low: int, high: int | None) -> int:
    field = f"{parent}.{name}"
    if name not in obj:
        raise _bad(field, "is required.")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, f"must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        allowed = f"{low}-{high}" if high is not None else f">= {low}"
        raise _bad(field, f"{value} is out of range; allowed: {allowed}.")
    return value


def _only_keys(obj: dict[str, Any], parent: str, allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            where = f"{_PREFIX}.{parent}" if parent else _PREFIX
            raise InvalidRequestError(
                f"{where}: unknown field '{key}'; allowed: {', '.join(sorted(allowed))}.",
                param=f"{where}.{key}",
            )


def validate_chunking(config: dict[str, Any] | None) -> None:
    """Check a ``ChunkingConfiguration``; raises :class:`InvalidRequestError` naming the field."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise InvalidRequestError(f"{_PREFIX} must be an object.", param=_PREFIX)
    _only_keys(config, "", {"chunkingStrategy", *_CONFIG_KEYS.values()})
    strategy = config.get("chunkingStrategy")
    if strategy is None:
        raise _bad("chunkingStrategy", f"is required; allowed: {', '.join(STRATEGIES)}.")
    if strategy not in STRATEGIES:
        raise _bad("chunkingStrategy", f"'{strategy}' is not valid; allowed: {', '.join(STRATEGIES)}.")
    for other_strategy, key in _CONFIG_KEYS.items():
        if key in config and other_strategy != strategy:
            raise _bad(
                key, f"is only allowed with chunkingStrategy {other_strategy}; remove it for {strategy}."
            )
    if strategy == "NONE":
        return
    key = _CONFIG_KEYS[strategy]
    sub = config.get(key)
    if not isinstance(sub, dict):
        raise _bad(key, f"is required (an object) when chunkingStrategy is {strategy}.")
    if strategy == "FIXED_SIZE":
        _only_keys(sub, key, {"maxTokens", "overlapPercentage"})
        _int_field(sub, key, "maxTokens", 1, 8192)
        _int_field(sub, key, "overlapPercentage", 1, 99)
    elif strategy == "SEMANTIC":
        _only_keys(sub, key, {"maxTokens", "bufferSize", "breakpointPercentileThreshold"})
        _int_field(sub, key, "maxTokens", 1, 8192)
        _int_field(sub, key, "bufferSize", 0, 1)
        _int_field(sub, key, "breakpointPercentileThreshold", 50, 99)
    else:
        _only_keys(sub, key, {"levelConfigurations", "overlapTokens"})
        levels = sub.get("levelConfigurations")
        if not isinstance(levels, list) or len(levels) != 2:
            raise _bad(
                f"{key}.levelConfigurations",
                'needs exactly 2 entries, parent then child: [{"maxTokens": 1500}, {"maxTokens": 300}].',
            )
        sizes = []
        for i, level in enumerate(levels):
            lkey = f"{key}.levelConfigurations[{i}]"
            if not isinstance(level, dict):
                raise _bad(lkey, "must be an object with maxTokens.")
            _only_keys(level, lkey, {"maxTokens"})
            sizes.append(_int_field(level, lkey, "maxTokens", 1, 8192))
        overlap = _int_field(sub, key, "overlapTokens", 1, None)
        if sizes[1] > sizes[0]:
            raise _bad(
                f"{key}.levelConfigurations",
                f"the child's maxTokens ({sizes[1]}) is larger than the parent's ({sizes[0]}); "
                "put the larger level first.",
            )
        if overlap >= sizes[1]:
            raise _bad(
                f"{key}.overlapTokens",
                f"{overlap} must be smaller than the child level's maxTokens ({sizes[1]}).",
            )


# ---------------------------------------------------------------- splitting

# A sentence ends at . ! ? (with closing quotes/brackets) followed by space, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


def _sentence_spans(text: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    hi = len(text) if hi is None else hi
    spans = []
    start = lo
    for m in _SENTENCE_END.finditer(text, lo, hi):
        if m.end() > start:
            spans.append((start, m.end()))
            start = m.end()
    if start < hi:
        spans.append((start, hi))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _units(
    text: str, spans: Sequence[tuple[int, int]], max_tokens: int, count_tokens: CountTokens
) -> list[_Unit]:
    """Sentences, broken into words (and words into slices) where one is longer than a chunk."""
    out: list[_Unit] = []
    for start, end in spans:
        n = count_tokens(text[start:end])
        if n <= max_tokens:
            out.append(_Unit(start, end, n))
            continue
        for m in _WORD.finditer(text, start, end):
            wn = count_tokens(m.group())
            if wn <= max_tokens:
                out.append(_Unit(m.start(), m.end(), wn))
                continue
            # One "word" longer than a chunk (a URL, a base64 blob): slice it by characters.
            step = max(1, (m.end() - m.start()) * max_tokens // max(wn, 1))
            for s in range(m.start(), m.end(), step):
                e = min(s + step, m.end())
                out.append(_Unit(s, e, max(1, count_tokens(text[s:e]))))
    return out


def _pack(text: str, units: Sequence[_Unit], max_tokens: int, overlap_tokens: int) -> list[tuple[int, int]]:
    """Greedy windows of whole units up to ``max_tokens``; each next window starts with the last
    units of the previous one that fit in ``overlap_tokens``. Returns character spans."""
    spans: list[tuple[int, int]] = []
    i = 0
    n = len(units)
    while i < n:
        total = 0
        j = i
        while j < n and (j == i or total + units[j].tokens <= max_tokens):
            total += units[j].tokens
            j += 1
        spans.append((units[i].start, units[j - 1].end))
        if j >= n:
            break
        # Step back over the tail that fits in the overlap, never back to (or before) i.
        k = j
        back = 0
        while overlap_tokens > 0 and k - 1 > i and back + units[k - 1].tokens <= overlap_tokens:
            back += units[k - 1].tokens
            k -= 1
        i = k
    return spans


def _slice(text: str, start: int, end: int) -> str:
    return text[start:end].strip()


def _fixed(
    text: str, max_tokens: int, overlap_tokens: int, count_tokens: CountTokens
) -> list[tuple[int, int]]:
    units = _units(text, _sentence_spans(text), max_tokens, count_tokens)
    return _pack(text, units, max_tokens, overlap_tokens)


def chunk_text(text: str, config: dict[str, Any] | None, count_tokens: CountTokens) -> list[ChunkPiece]:
    """Split ``text`` by FIXED_SIZE, HIERARCHICAL, NONE or the default (FIXED_SIZE 300/20 %).
    SEMANTIC needs the embedder: use :func:`chunk_semantic`."""
    validate_chunking(config)
    if not text.strip():
        return []
    strategy = (config or {}).get("chunkingStrategy", "FIXED_SIZE")
    if strategy == "NONE":
        return [ChunkPiece(text.strip())]
    if strategy == "SEMANTIC":
        raise InvalidRequestError(
            "SEMANTIC chunking embeds sentences: call chunk_semantic with the embedding model.",
            param=f"{_PREFIX}.chunkingStrategy",
        )
    if strategy == "HIERARCHICAL":
        sub = config["hierarchicalChunkingConfiguration"]  # type: ignore[index]
        parent_max = sub["levelConfigurations"][0]["maxTokens"]
        child_max = sub["levelConfigurations"][1]["maxTokens"]
        overlap = sub["overlapTokens"]
        pieces: list[ChunkPiece] = []
        for ps, pe in _fixed(text, parent_max, min(overlap, parent_max - 1), count_tokens):
            parent = _slice(text, ps, pe)
            units = _units(text, _sentence_spans(text, ps, pe), child_max, count_tokens)
            for cs, ce in _pack(text, units, child_max, overlap):
                pieces.append(ChunkPiece(_slice(text, cs, ce), parent_text=parent))
        return [p for p in pieces if p.text]
    if config is None:
        max_tokens, pct = DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP_PERCENTAGE
    else:
        sub = config["fixedSizeChunkingConfiguration"]
        max_tokens, pct = sub["maxTokens"], sub["overlapPercentage"]
    overlap_tokens = max_tokens * pct // 100
    return [
        ChunkPiece(t)
        for s, e in _fixed(text, max_tokens, overlap_tokens, count_tokens)
        if (t := _slice(text, s, e))
    ]


def _cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 1.0
    return 1.0 - dot / (na * nb)


def _percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolation percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


async def chunk_semantic(
    text: str, config: dict[str, Any] | None, count_tokens: CountTokens, embed: Embed
) -> list[ChunkPiece]:
    """SEMANTIC chunking (other strategies are passed on to :func:`chunk_text`)."""
    validate_chunking(config)
    if config is None or config.get("chunkingStrategy") != "SEMANTIC":
        return chunk_text(text, config, count_tokens)
    if not text.strip():
        return []
    sub = config["semanticChunkingConfiguration"]
    max_tokens = sub["maxTokens"]
    buffer = sub["bufferSize"]
    threshold = sub["breakpointPercentileThreshold"]
    sentences = _sentence_spans(text)
    groups: list[tuple[int, int]] = []
    if len(sentences) <= 1:
        groups = [(sentences[0][0], sentences[0][1])] if sentences else []
    else:
        windows = [
            text[sentences[max(0, i - buffer)][0] : sentences[min(len(sentences) - 1, i + buffer)][1]]
            for i in range(len(sentences))
        ]
        vectors: list[list[float]] = []
        for b in range(0, len(windows), SEMANTIC_EMBED_BATCH):
            vectors.extend(await embed(windows[b : b + SEMANTIC_EMBED_BATCH]))
        distances = [_cosine_distance(vectors[i], vectors[i + 1]) for i in range(len(vectors) - 1)]
        cut = _percentile(distances, threshold)
        start = 0
        for i, d in enumerate(distances):
            if d > cut:
                groups.append((sentences[start][0], sentences[i][1]))
                start = i + 1
        groups.append((sentences[start][0], sentences[-1][1]))
    pieces: list[ChunkPiece] = []
    for gs, ge in groups:
        units = _units(text, _sentence_spans(text, gs, ge), max_tokens, count_tokens)
        for s, e in _pack(text, units, max_tokens, 0):
            if t := _slice(text, s, e):
                pieces.append(ChunkPiece(t))
    return pieces
