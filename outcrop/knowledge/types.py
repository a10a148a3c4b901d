"""The shapes the knowledge-base modules pass to each other (the seams between them).

Metadata values are what Bedrock's ``.metadata.json`` sidecars and filters allow: strings,
numbers, booleans and lists of strings. Every chunk also carries Bedrock's reserved keys
``x-amz-bedrock-kb-source-uri`` and ``x-amz-bedrock-kb-data-source-id`` (and
``x-amz-bedrock-kb-chunk-id``), so filters on them work as on Bedrock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

MetadataValue = str | int | float | bool | list[str]
SearchType = Literal["SEMANTIC", "HYBRID"]

SOURCE_URI_KEY = "x-amz-bedrock-kb-source-uri"
DATA_SOURCE_ID_KEY = "x-amz-bedrock-kb-data-source-id"
CHUNK_ID_KEY = "x-amz-bedrock-kb-chunk-id"


@dataclass(frozen=True)
class Chunk:
    """One indexed piece of a document. ``chunk_id`` is stable for (data source, document, index)
    so that writing the same chunk twice replaces it (ingestion resumes by re-writing)."""

    chunk_id: str
    data_source_id: str
    source_uri: str  # as the user's data source names it: s3://bucket/key or file:///path
    text: str
    vector: Sequence[float]
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    # HIERARCHICAL chunking: the parent chunk's text, returned by Retrieve instead of the child's.
    parent_text: str | None = None


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    data_source_id: str
    source_uri: str
    text: str  # the parent's text for hierarchical chunks
    score: float  # higher is better, in [0, 1] as Bedrock's
    metadata: dict[str, MetadataValue]


class VectorStore(Protocol):
    """One store holds every knowledge base's chunks, partitioned by ``kb_id``. Blocking calls:
    async callers run them with ``asyncio.to_thread``."""

    def create(self, kb_id: str, dimensions: int) -> None: ...

    def drop(self, kb_id: str) -> None: ...

    def upsert(self, kb_id: str, chunks: Sequence[Chunk]) -> None: ...

    def delete_documents(self, kb_id: str, data_source_id: str, source_uris: Sequence[str]) -> int: ...

    def delete_data_source(self, kb_id: str, data_source_id: str) -> int: ...

    def count(self, kb_id: str) -> int: ...

    def search(
        self,
        kb_id: str,
        *,
        vector: Sequence[float],
        text: str,
        k: int,
        filter: dict[str, Any] | None = None,
        search_type: SearchType = "SEMANTIC",
    ) -> list[Hit]: ...
