"""Bedrock's ChunkingConfiguration: validation with the service model's ranges, and splitting."""

from __future__ import annotations

import asyncio

import pytest

from outcrop.errors import InvalidRequestError
from outcrop.knowledge.chunking import ChunkPiece, chunk_semantic, chunk_text, validate_chunking


def words(s: str) -> int:
    return len(s.split())


def sentences(n: int, length: int = 10) -> str:
    return " ".join(
        f"Sentence {i} " + " ".join(f"w{i}x{j}" for j in range(length - 2)) + "." for i in range(n)
    )


def fixed(max_tokens: int, pct: int) -> dict:
    return {
        "chunkingStrategy": "FIXED_SIZE",
        "fixedSizeChunkingConfiguration": {"maxTokens": max_tokens, "overlapPercentage": pct},
    }


def hierarchical(parent: int, child: int, overlap: int) -> dict:
    return {
        "chunkingStrategy": "HIERARCHICAL",
        "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": parent}, {"maxTokens": child}],
            "overlapTokens": overlap,
        },
    }


def semantic(max_tokens: int = 300, buffer: int = 0, threshold: int = 95) -> dict:
    return {
        "chunkingStrategy": "SEMANTIC",
        "semanticChunkingConfiguration": {
            "maxTokens": max_tokens,
            "bufferSize": buffer,
            "breakpointPercentileThreshold": threshold,
        },
    }


@pytest.mark.parametrize(
    "config",
    [
        None,
        fixed(1, 1),
        fixed(8192, 99),
        {"chunkingStrategy": "NONE"},
        hierarchical(1500, 300, 60),
        semantic(),
    ],
)
def test_valid_configs(config: dict | None) -> None:
    validate_chunking(config)


@pytest.mark.parametrize(
    ("config", "field", "match"),
    [
        ({}, "chunkingConfiguration.chunkingStrategy", "is required; allowed: FIXED_SIZE, NONE"),
        ({"chunkingStrategy": "WORDS"}, "chunkingConfiguration.chunkingStrategy", "'WORDS' is not valid"),
        (
            {"chunkingStrategy": "FIXED_SIZE"},
            "chunkingConfiguration.fixedSizeChunkingConfiguration",
            "is required",
        ),
        (fixed(0, 20), "fixedSizeChunkingConfiguration.maxTokens", "0 is out of range; allowed: 1-8192"),
        (fixed(8193, 20), "fixedSizeChunkingConfiguration.maxTokens", "allowed: 1-8192"),
        (fixed(300, 0), "fixedSizeChunkingConfiguration.overlapPercentage", "allowed: 1-99"),
        (fixed(300, 100), "fixedSizeChunkingConfiguration.overlapPercentage", "allowed: 1-99"),
        (fixed("300", 20), "fixedSizeChunkingConfiguration.maxTokens", "must be an integer"),  # type: ignore[arg-type]
        (
            {"chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": 300}},
            "overlapPercentage",
            "is required",
        ),
        (
            {**fixed(300, 20), "semanticChunkingConfiguration": {}},
            "semanticChunkingConfiguration",
            "only allowed with chunkingStrategy SEMANTIC",
        ),
        (
            {"chunkingStrategy": "NONE", "fixedSizeChunkingConfiguration": {}},
            "fixedSize",
            "remove it for NONE",
        ),
        (semantic(buffer=2), "semanticChunkingConfiguration.bufferSize", "allowed: 0-1"),
        (semantic(threshold=49), "breakpointPercentileThreshold", "allowed: 50-99"),
        (semantic(max_tokens=0), "semanticChunkingConfiguration.maxTokens", "allowed: 1-8192"),
        (hierarchical(1500, 300, 0), "overlapTokens", "allowed: >= 1"),
        (hierarchical(9000, 300, 60), r"levelConfigurations\[0\].maxTokens", "allowed: 1-8192"),
        (hierarchical(100, 300, 10), "levelConfigurations", "larger than the parent's"),
        (hierarchical(1500, 300, 300), "overlapTokens", "must be smaller than the child"),
        (
            {
                "chunkingStrategy": "HIERARCHICAL",
                "hierarchicalChunkingConfiguration": {
                    "levelConfigurations": [{"maxTokens": 10}],
                    "overlapTokens": 1,
                },
            },
            "levelConfigurations",
            "needs exactly 2 entries",
        ),
        ({**fixed(300, 20), "extra": 1}, "chunkingConfiguration", "unknown field 'extra'"),
    ],
)
def test_invalid_configs_name_the_field(config: dict, field: str, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match) as info:
        validate_chunking(config)
    assert info.value.message.startswith("chunkingConfiguration")
    import re

    assert re.search(field, info.value.message)
    assert info.value.bedrock_name == "ValidationException"


def test_default_is_fixed_300_with_20_percent_overlap() -> None:
    text = sentences(200)  # 2000 words
    pieces = chunk_text(text, None, words)
    assert all(words(p.text) <= 300 for p in pieces)
    assert len(pieces) >= 2000 // 300
    # consecutive chunks share a tail of at most 60 tokens (20 %), at sentence boundaries
    first, second = pieces[0].text, pieces[1].text
    head = " ".join(second.split()[:2])  # "Sentence N"
    overlap = first[first.index(head) :]
    assert second.startswith(overlap)
    assert 0 < words(overlap) <= 60


def test_fixed_size_covers_everything_and_respects_max() -> None:
    text = sentences(57, length=7)
    pieces = chunk_text(text, fixed(50, 10), words)
    assert all(1 <= words(p.text) <= 50 for p in pieces)
    joined = " ".join(p.text for p in pieces)
    for i in range(57):
        assert f"Sentence {i} " in joined
    assert pieces[0].text.startswith("Sentence 0") and pieces[-1].text.endswith("w56x4.")
    assert all(p.text in text for p in pieces)  # slices of the original


def test_long_sentence_and_long_word_are_split() -> None:
    text = " ".join(f"word{i}" for i in range(100)) + " " + "x" * 500
    pieces = chunk_text(
        text, fixed(10, 10), lambda s: max(1, len(s) // 10) if " " not in s.strip() else words(s)
    )
    assert all(p.text for p in pieces)
    assert "word0" in pieces[0].text and pieces[-1].text.endswith("x")


def test_none_is_one_chunk_and_empty_text_none() -> None:
    assert chunk_text("  a b c  ", {"chunkingStrategy": "NONE"}, words) == [ChunkPiece("a b c")]
    assert chunk_text("   ", None, words) == []


def test_hierarchical_children_carry_their_parent() -> None:
    text = sentences(60)  # 600 words
    pieces = chunk_text(text, hierarchical(200, 40, 10), words)
    parents = {p.parent_text for p in pieces}
    assert len(parents) >= 3
    for p in pieces:
        assert p.parent_text is not None and words(p.parent_text) <= 200
        assert words(p.text) <= 40
        assert p.text in p.parent_text


def test_semantic_splits_where_topics_change() -> None:
    topics = ["granite rock mineral"] * 5 + ["ocean wave tide"] * 5 + ["violin music chord"] * 5
    text = " ".join(f"{t} number {i}." for i, t in enumerate(topics))
    axes = {"granite": [1.0, 0.0, 0.0], "ocean": [0.0, 1.0, 0.0], "violin": [0.0, 0.0, 1.0]}
    calls: list[int] = []

    async def embed(batch: list[str]) -> list[list[float]]:
        calls.append(len(batch))
        return [next(v for k, v in axes.items() if k in s) for s in batch]

    pieces = asyncio.run(chunk_semantic(text, semantic(threshold=80), words, embed))
    assert [p.text.split()[0] for p in pieces] == ["granite", "ocean", "violin"]
    assert sum(calls) == 15
    # a group over maxTokens is split again
    pieces = asyncio.run(chunk_semantic(text, semantic(max_tokens=10, threshold=80), words, embed))
    assert len(pieces) > 3 and all(words(p.text) <= 10 for p in pieces)


def test_semantic_entry_passes_other_strategies_on() -> None:
    async def embed(batch: list[str]) -> list[list[float]]:
        raise AssertionError("not called")

    assert asyncio.run(chunk_semantic("a b. c d.", None, words, embed)) == [ChunkPiece("a b. c d.")]
    with pytest.raises(InvalidRequestError, match="chunk_semantic"):
        chunk_text("a b", semantic(), words)
