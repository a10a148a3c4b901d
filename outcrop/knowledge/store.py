"""The vector store: LanceDB, embedded (a local folder) or on S3-compatible storage.

Why LanceDB: it runs in-process with no server (the embedded default needs nothing), keeps its
data as Lance files that a ``kill -9`` cannot corrupt (each write commits a new manifest
atomically), has a real approximate-nearest-neighbour index (IVF partitions with an HNSW graph
and scalar quantisation per partition), SQL filters over a JSON metadata column, a native BM25
full-text index, and hybrid search fused by reciprocal-rank. The same folder can live in an
S3-compatible bucket (``s3://bucket/prefix``) that several gateways share: that is the scale-out
choice, as pgvector cannot be installed on these machines (no Debian package for PostgreSQL 15
here, no source in a registry we reach). docs/vector-store.md has the operator's view.

One table per knowledge base (``kb_<id>``): columns ``chunk_id`` (the upsert key),
``data_source_id``, ``source_uri``, ``text`` (what is embedded and full-text indexed),
``parent_text`` (hierarchical chunking: returned instead of the child), ``vector`` and
``metadata`` (JSON). Below :data:`INDEX_MIN_ROWS` rows a search is exact (a flat scan is both
exact and fast there); from then on the ANN index is built, and rows added later are indexed by
``optimize()`` once :data:`REINDEX_UNINDEXED_ROWS` of them (or :data:`REINDEX_SHARE` of the table,
whichever is more) wait (until then they are scanned
exactly beside the index, so a new chunk is found at once). Each fold-in adds a small delta
index that every search also visits; after :data:`MAX_INDEX_DELTAS` of them the index is rebuilt
(which also re-sizes it for the table's new size).

Searches reuse the open table: this process's own writes are visible to it at once, and other
gateways' writes are picked up by a version check at most every :data:`REFRESH_SECONDS` (counts,
deletes and writes always check).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from outcrop.config import S3Config
from outcrop.knowledge.filters import FilterError, to_sql
from outcrop.knowledge.types import (
    CHUNK_ID_KEY,
    DATA_SOURCE_ID_KEY,
    SOURCE_URI_KEY,
    Chunk,
    Hit,
    SearchType,
)

__all__ = ["FilterError", "LanceVectorStore", "open_store", "s3_storage_options"]

# Lance warns (on stderr, from Rust) that index statistics will stop including the IVF centroids;
# we never read them, so opt in to the new behaviour and keep the server's output clean.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

INDEX_MIN_ROWS = 20_000
REINDEX_UNINDEXED_ROWS = 1_000
# In a big table a fold waits for 1 % of its rows, so the rebuilds below come at geometric steps
# (O(rows) work in all) instead of every MAX_INDEX_DELTAS x 1,000 rows.
REINDEX_SHARE = 0.01
# Unindexed rows cost a flat scan beside the index (~3 ms for 1,000 rows at 100k); each delta
# index a fold-in adds costs ~0.25 ms, so past this many the index is rebuilt in one piece.
MAX_INDEX_DELTAS = 8
# The ANN index: IVF partitions of HNSW graphs over 8-bit scalar-quantised vectors. Embeddings
# spread over many topics gain little from IVF partitioning (a query's neighbours land in many
# partitions), so a partition holds up to PARTITION_ROWS rows (one graph at 100k chunks) and a
# search visits NPROBES of them; HNSW_EF is the graph search's candidate list and REFINE_FACTOR
# re-ranks that many times k candidates by their exact distances. Tuned with
# benchmarks/retrieval.py for recall@10 >= 0.95 at 100k chunks (benchmarks/RESULTS.md).
PARTITION_ROWS = 100_000
HNSW_EF_CONSTRUCTION = 100
NPROBES = 4
HNSW_EF = 64
REFINE_FACTOR: int | None = 2
# How stale a search may see another gateway's writes (this process's own are seen at once).
REFRESH_SECONDS = 1.0
# Reciprocal-rank fusion's constant (as LanceDB's RRFReranker and the literature): a hit at rank
# r in one list scores 1 / (RRF_K + r).
RRF_K = 60
VECTOR_INDEX = "vector_idx"
# What a search reads back for a Hit (never the vector).
HIT_COLUMNS = ["chunk_id", "data_source_id", "source_uri", "text", "parent_text", "metadata"]


def _schema(dimensions: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("data_source_id", pa.string(), nullable=False),
            pa.field("source_uri", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("parent_text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimensions), nullable=False),
            pa.field("metadata", pa.json_(pa.utf8())),
        ]
    )


def _table_name(kb_id: str) -> str:
    if not kb_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"not a knowledge base id: {kb_id!r}")
    return f"kb_{kb_id}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceVectorStore:
    """:class:`~outcrop.knowledge.types.VectorStore` on LanceDB. Thread-safe: writes to one
    knowledge base are serialised by a lock of its own; reads run freely."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None) -> None:
        import lancedb

        self.uri = uri
        self._db = lancedb.connect(uri, storage_options=storage_options)
        self._tables: dict[str, Any] = {}
        self._checked: dict[str, float] = {}  # table -> monotonic time of its last version check
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    # -- tables ------------------------------------------------------------------------------

    def _lock(self, kb_id: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(kb_id, threading.RLock())

    def _table(self, kb_id: str, *, max_age: float = 0.0) -> Any:
        """The open table, brought to the latest version unless it was checked within
        ``max_age`` seconds (writes through this object are always visible to it)."""
        name = _table_name(kb_id)
        table = self._tables.get(name)
        now = time.monotonic()
        if table is None:
            try:
                table = self._db.open_table(name)
            except (FileNotFoundError, ValueError):
                raise KeyError(kb_id) from None
            self._tables[name] = table
            self._checked[name] = now
        elif now - self._checked.get(name, 0.0) >= max_age:
            try:
                table.checkout_latest()  # another gateway may have written since
            except (FileNotFoundError, ValueError):  # dropped by another gateway
                self._tables.pop(name, None)
                raise KeyError(kb_id) from None
            self._checked[name] = now
        return table

    def create(self, kb_id: str, dimensions: int) -> None:
        with self._lock(kb_id):
            table = self._db.create_table(_table_name(kb_id), schema=_schema(dimensions), exist_ok=True)
            self._tables[_table_name(kb_id)] = table

    def drop(self, kb_id: str) -> None:
        with self._lock(kb_id):
            self._tables.pop(_table_name(kb_id), None)
            try:
                self._db.drop_table(_table_name(kb_id))
            except (FileNotFoundError, ValueError):
                pass  # never created, or dropped by another gateway

    def _open_or_create(self, kb_id: str, dimensions: int) -> Any:
        try:
            return self._table(kb_id)
        except KeyError:
            self.create(kb_id, dimensions)
            return self._table(kb_id)

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, kb_id: str, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        dimensions = len(chunks[0].vector)
        data = pa.table(
            {
                "chunk_id": [c.chunk_id for c in chunks],
                "data_source_id": [c.data_source_id for c in chunks],
                "source_uri": [c.source_uri for c in chunks],
                "text": [c.text for c in chunks],
                "parent_text": [c.parent_text for c in chunks],
                "vector": pa.array(
                    [[float(x) for x in c.vector] for c in chunks], type=pa.list_(pa.float32(), dimensions)
                ),
                "metadata": pa.array(
                    [json.dumps(dict(c.metadata), ensure_ascii=False) for c in chunks],
                    type=pa.json_(pa.utf8()),
                ),
            },
            schema=_schema(dimensions),
        )
        with self._lock(kb_id):
            table = self._open_or_create(kb_id, dimensions)
            (
                table.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(data)
            )
            self._maintain(table)

    def delete_documents(self, kb_id: str, data_source_id: str, source_uris: Sequence[str]) -> int:
        if not source_uris:
            return 0
        members = ", ".join(_quote(u) for u in source_uris)
        return self._delete(kb_id, f"data_source_id = {_quote(data_source_id)} AND source_uri IN ({members})")

    def delete_data_source(self, kb_id: str, data_source_id: str) -> int:
        return self._delete(kb_id, f"data_source_id = {_quote(data_source_id)}")

    def _delete(self, kb_id: str, where: str) -> int:
        with self._lock(kb_id):
            try:
                table = self._table(kb_id)
            except KeyError:
                return 0
            before = table.count_rows()
            table.delete(where)
            return int(before - table.count_rows())

    def count(self, kb_id: str) -> int:
        try:
            return int(self._table(kb_id).count_rows())
        except KeyError:
            return 0

    def _maintain(self, table: Any) -> None:
        """Build the ANN and full-text indexes once the table is big enough; fold new rows in."""
        rows = table.count_rows()
        names = {ix.name for ix in table.list_indices()}
        if "text_idx" not in names:
            with warnings.catch_warnings():  # deprecated in favour of create_index(config=FTS()),
                warnings.simplefilter("ignore")  # which LanceTable does not take for a text column yet
                table.create_fts_index("text", replace=True, name="text_idx")
        if rows >= INDEX_MIN_ROWS and VECTOR_INDEX not in names:
            self._create_vector_index(table, rows)
            names.add(VECTOR_INDEX)
        fold_at = max(REINDEX_UNINDEXED_ROWS, int(rows * REINDEX_SHARE))
        for name in sorted(names & {VECTOR_INDEX, "text_idx"}):
            stats = table.index_stats(name)
            if stats is not None and stats.num_unindexed_rows >= fold_at:
                vector = table.index_stats(VECTOR_INDEX) if VECTOR_INDEX in names else None
                if vector is not None and vector.num_indices >= MAX_INDEX_DELTAS:
                    self._create_vector_index(table, rows)  # one piece again, sized for today
                table.optimize()  # folds the new rows into every index (and compacts small files)
                return

    @staticmethod
    def _create_vector_index(table: Any, rows: int) -> None:
        with warnings.catch_warnings():  # the keyword form is deprecated for the config form
            warnings.simplefilter("ignore")
            table.create_index(
                metric="cosine",
                vector_column_name="vector",
                index_type="IVF_HNSW_SQ",
                num_partitions=max(1, math.ceil(rows / PARTITION_ROWS)),
                ef_construction=HNSW_EF_CONSTRUCTION,
                name=VECTOR_INDEX,
                replace=True,
            )

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        kb_id: str,
        *,
        vector: Sequence[float],
        text: str,
        k: int,
        filter: dict[str, Any] | None = None,
        search_type: SearchType = "SEMANTIC",
    ) -> list[Hit]:
        where = to_sql(filter)
        try:
            table = self._table(kb_id, max_age=REFRESH_SECONDS)
        except KeyError:
            return []
        query = [float(x) for x in vector]
        semantic = self._semantic(table, query, k if search_type == "SEMANTIC" else 2 * k, where)
        if not semantic and (search_type == "SEMANTIC" or table.count_rows() == 0):
            return []  # an empty table has no text index to search either
        if search_type == "SEMANTIC":
            return [_hit(row, 1.0 - float(row["_distance"]) / 2.0) for row in semantic[:k]]
        keyword = self._keyword(table, text, 2 * k, where)
        return _fuse(semantic, keyword, k)

    def _semantic(self, table: Any, vector: list[float], k: int, where: str | None) -> list[dict[str, Any]]:
        q = table.search(vector, vector_column_name="vector").distance_type("cosine").limit(k)
        q = q.nprobes(NPROBES).ef(HNSW_EF).select([*HIT_COLUMNS, "_distance"])
        if REFINE_FACTOR:
            q = q.refine_factor(REFINE_FACTOR)
        if where:
            q = q.where(where, prefilter=True)
        try:
            return list(q.to_arrow().to_pylist())
        except Exception as exc:  # a filter Lance's planner refuses (a type it cannot compare)
            if where:
                raise FilterError(f"The filter cannot be applied: {_first_line(exc)}") from None
            raise

    def _keyword(self, table: Any, text: str, k: int, where: str | None) -> list[dict[str, Any]]:
        if not text.strip():
            return []
        q = table.search(text, query_type="fts", fts_columns="text").limit(k)
        q = q.select([*HIT_COLUMNS, "_score"])
        if where:
            q = q.where(where, prefilter=True)
        try:
            return list(q.to_arrow().to_pylist())
        except Exception as exc:
            if where:
                raise FilterError(f"The filter cannot be applied: {_first_line(exc)}") from None
            raise


def _fuse(semantic: list[dict[str, Any]], keyword: list[dict[str, Any]], k: int) -> list[Hit]:
    """Reciprocal-rank fusion of the two lists, scaled to [0, 1] (1: first in both)."""
    scores: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for ranked in (semantic, keyword):
        for rank, row in enumerate(ranked, start=1):
            cid = row["chunk_id"]
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank)
            rows.setdefault(cid, row)
    best = 2.0 / (RRF_K + 1)
    order = sorted(scores, key=lambda cid: scores[cid], reverse=True)[:k]
    return [_hit(rows[cid], min(1.0, scores[cid] / best)) for cid in order]


def _hit(row: dict[str, Any], score: float) -> Hit:
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k not in (CHUNK_ID_KEY,)}
    metadata.setdefault(SOURCE_URI_KEY, row["source_uri"])
    metadata.setdefault(DATA_SOURCE_ID_KEY, row["data_source_id"])
    metadata[CHUNK_ID_KEY] = row["chunk_id"]
    return Hit(
        chunk_id=row["chunk_id"],
        data_source_id=row["data_source_id"],
        source_uri=row["source_uri"],
        text=row.get("parent_text") or row["text"],
        score=max(0.0, min(1.0, score)),
        metadata=metadata,
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def s3_storage_options(s3: S3Config) -> dict[str, str]:
    """Lance's S3 options from the server's ``s3`` section (the same endpoint and keys imports and
    batch jobs use), so one setting points every ``s3://`` the server touches at one store."""
    options: dict[str, str] = {}
    if s3.endpoint_url:
        options["aws_endpoint"] = s3.endpoint_url
        if s3.endpoint_url.startswith("http://"):
            options["allow_http"] = "true"
    if s3.access_key_id:
        options["aws_access_key_id"] = s3.access_key_id
    if s3.secret_access_key:
        options["aws_secret_access_key"] = s3.secret_access_key
    if s3.region:
        options["aws_region"] = s3.region
    return options


def open_store(uri: str, storage_options: dict[str, str] | None = None) -> LanceVectorStore:
    """The store at ``uri``: a local folder (created if missing) or ``s3://bucket/prefix``.

    For S3 the endpoint and credentials come from ``storage_options`` or the usual environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``)."""
    if uri.startswith("s3://"):
        options = dict(storage_options or {})
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "aws_endpoint" not in options:
            options["aws_endpoint"] = endpoint
            if endpoint.startswith("http://"):
                options.setdefault("allow_http", "true")
        for env, key in (
            ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
            ("AWS_REGION", "aws_region"),
        ):
            if os.environ.get(env) and key not in options:
                options[key] = os.environ[env]
        options.setdefault("aws_region", "us-east-1")
        return LanceVectorStore(uri, options)
    os.makedirs(uri, mode=0o700, exist_ok=True)
    return LanceVectorStore(uri, storage_options)
