"""Knowledge bases, data sources, ingestion jobs and indexed documents in the metadata store.

Four tables (migration 16): ``knowledge_bases`` and ``kb_data_sources`` keep the validated wire
configuration as JSON (``spec``); ``kb_ingestion_jobs`` are queued and claimed like batch jobs
(``claimed_by`` + ``heartbeat_at``: a claim whose heartbeat is older than
``store.job_lease_seconds`` belongs to a dead server and is taken over); ``kb_documents`` holds,
per data source and document URI, the content hash that was indexed. A group of documents is
recorded together with the job's statistics in one transaction (:meth:`KBStore.record`), after
its chunks are in the vector store: a job that dies in between finds those documents unrecorded
when it resumes and writes their chunks again under the same ids (an idempotent upsert), and no
document is ever counted twice.

Every operation is one transaction and works on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import enum
import json
import secrets
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictError
from outcrop.store.db import Database
from outcrop.store.schema import kb_data_sources, kb_documents, kb_ingestion_jobs, knowledge_bases

# Bedrock's ids of knowledge bases, data sources and ingestion jobs: [0-9a-zA-Z]{10}.
_ID_ALPHABET = string.ascii_uppercase + string.digits
ID_LENGTH = 10
# failureReasons kept on a job: the first ones name the problem; a count says how many more.
MAX_FAILURE_REASONS = 100

STATISTICS_KEYS = (
    "numberOfDocumentsScanned",
    "numberOfMetadataDocumentsScanned",
    "numberOfNewDocumentsIndexed",
    "numberOfModifiedDocumentsIndexed",
    "numberOfMetadataDocumentsModified",
    "numberOfDocumentsDeleted",
    "numberOfDocumentsFailed",
)


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


class KnowledgeBaseStatus(enum.StrEnum):
    CREATING = "CREATING"  # the row exists, its vector table is being made
    ACTIVE = "ACTIVE"  # ready: data sources may sync, Retrieve answers
    DELETING = "DELETING"  # DeleteKnowledgeBase was accepted; vectors and rows go in the background
    FAILED = "FAILED"  # the vector table could not be made; failureReasons says why


class DataSourceStatus(enum.StrEnum):
    AVAILABLE = "AVAILABLE"  # ready to sync
    DELETING = "DELETING"  # DeleteDataSource was accepted; its vectors go (policy DELETE) in the background


class IngestionJobStatus(enum.StrEnum):
    STARTING = "STARTING"  # queued: waits for a runner (a free ingestion slot)
    IN_PROGRESS = "IN_PROGRESS"  # claimed by a server; documents are being indexed
    STOPPING = "STOPPING"  # StopIngestionJob: in-flight documents finish, then STOPPED
    COMPLETE = "COMPLETE"  # every document was scanned; failures are counted, not fatal
    FAILED = "FAILED"  # the job itself could not run (source unreadable, model gone)
    STOPPED = "STOPPED"  # stopped by a user; what was recorded stays indexed

    def is_terminal(self) -> bool:
        return self in (IngestionJobStatus.COMPLETE, IngestionJobStatus.FAILED, IngestionJobStatus.STOPPED)


ACTIVE_JOB_STATUSES = (
    IngestionJobStatus.STARTING.value,
    IngestionJobStatus.IN_PROGRESS.value,
    IngestionJobStatus.STOPPING.value,
)
# Allowed moves (a job never leaves a terminal status).
TRANSITIONS: dict[IngestionJobStatus, frozenset[IngestionJobStatus]] = {
    IngestionJobStatus.STARTING: frozenset(
        {IngestionJobStatus.IN_PROGRESS, IngestionJobStatus.STOPPED, IngestionJobStatus.FAILED}
    ),
    IngestionJobStatus.IN_PROGRESS: frozenset(
        {IngestionJobStatus.STOPPING, IngestionJobStatus.COMPLETE, IngestionJobStatus.FAILED}
    ),
    IngestionJobStatus.STOPPING: frozenset({IngestionJobStatus.STOPPED, IngestionJobStatus.FAILED}),
    IngestionJobStatus.COMPLETE: frozenset(),
    IngestionJobStatus.FAILED: frozenset(),
    IngestionJobStatus.STOPPED: frozenset(),
}


@dataclass(frozen=True)
class KnowledgeBase:
    id: str
    name: str
    status: str
    embedding_model_id: str
    dimensions: int
    spec: dict[str, Any]  # description, roleArn, knowledgeBaseConfiguration, storageConfiguration
    failure_reasons: list[str]
    created_at: float
    updated_at: float
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSource:
    id: str
    knowledge_base_id: str
    name: str
    status: str
    # description, dataSourceConfiguration, dataDeletionPolicy, vectorIngestionConfiguration,
    # serverSideEncryptionConfiguration
    spec: dict[str, Any]
    failure_reasons: list[str]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class IngestionJob:
    id: str
    knowledge_base_id: str
    data_source_id: str
    description: str | None
    status: str
    statistics: dict[str, int]
    failure_reasons: list[str]
    started_at: float
    updated_at: float
    ended_at: float | None = None
    claimed_by: str | None = None
    heartbeat_at: float | None = None
    attempts: int = 0


class DocumentState(enum.StrEnum):
    INDEXED = "INDEXED"  # its chunks are in the vector store
    FAILED = "FAILED"  # it could not be parsed; retried by the next job if still there


@dataclass(frozen=True)
class DocumentRecord:
    uri: str
    content_hash: str
    metadata_hash: str | None
    status: str
    chunk_count: int
    job_id: str | None


@dataclass(frozen=True)
class Indexed:
    """A document whose chunks were written; ``change`` is the statistic it counts in."""

    uri: str
    content_hash: str
    metadata_hash: str | None
    chunk_count: int
    change: str  # numberOfNewDocumentsIndexed | numberOfModifiedDocumentsIndexed | numberOfMetadataDocumentsModified


@dataclass(frozen=True)
class Failed:
    uri: str
    content_hash: str
    metadata_hash: str | None
    reason: str


def _kb(row: Any) -> KnowledgeBase:
    return KnowledgeBase(
        id=row.id,
        name=row.name,
        status=row.status,
        embedding_model_id=row.embedding_model_id,
        dimensions=int(row.dimensions),
        spec=json.loads(row.spec),
        failure_reasons=json.loads(row.failure_reasons or "[]"),
        created_at=row.created_at,
        updated_at=row.updated_at,
        tags=json.loads(row.tags or "{}"),
    )


def _ds(row: Any) -> DataSource:
    return DataSource(
        id=row.id,
        knowledge_base_id=row.knowledge_base_id,
        name=row.name,
        status=row.status,
        spec=json.loads(row.spec),
        failure_reasons=json.loads(row.failure_reasons or "[]"),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _job(row: Any) -> IngestionJob:
    return IngestionJob(
        id=row.id,
        knowledge_base_id=row.knowledge_base_id,
        data_source_id=row.data_source_id,
        description=row.description,
        status=row.status,
        statistics={k: int(v) for k, v in json.loads(row.statistics or "{}").items()},
        failure_reasons=json.loads(row.failure_reasons or "[]"),
        started_at=row.started_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
        claimed_by=row.claimed_by,
        heartbeat_at=row.heartbeat_at,
        attempts=int(row.attempts or 0),
    )


def empty_statistics() -> dict[str, int]:
    return {k: 0 for k in STATISTICS_KEYS}


def _kb_name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"A knowledge base named '{name}' already exists. Choose another name, or change that one with "
        "UpdateKnowledgeBase (ListKnowledgeBases shows its id)."
    )


def _ds_name_taken(name: str, kb_id: str) -> ConflictError:
    return ConflictError(
        f"Knowledge base {kb_id} already has a data source named '{name}'. Choose another name, or change "
        "that one with UpdateDataSource (ListDataSources shows its id)."
    )


class _LostClaim(Exception):
    """Internal: the job's claim moved to another server; the transaction is rolled back."""


class KBStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self, table: sa.Table, values: dict[str, Any], taken: Callable[[], ConflictError]) -> None:
        """Insert one row; a unique name already taken raises ``taken()``."""
        try:
            with self.db.begin() as conn:
                conn.execute(table.insert().values(**values))
        except IntegrityError:
            raise taken() from None

    def _update(
        self, table: sa.Table, where: list[Any], values: dict[str, Any], taken: Callable[[], ConflictError]
    ) -> bool:
        """Update the rows ``where`` selects; whether any did. A unique name taken raises ``taken()``."""
        try:
            with self.db.begin() as conn:
                return bool(conn.execute(table.update().where(*where).values(**values)).rowcount)
        except IntegrityError:
            raise taken() from None

    def _first(self, query: sa.Select[Any]) -> Any:
        with self.db.engine.connect() as conn:
            return conn.execute(query).first()

    # -- knowledge bases -----------------------------------------------------------------

    def create_kb(self, kb: KnowledgeBase, *, client_token: str | None) -> KnowledgeBase:
        values = {
            "id": kb.id,
            "name": kb.name,
            "status": kb.status,
            "embedding_model_id": kb.embedding_model_id,
            "dimensions": kb.dimensions,
            "spec": json.dumps(kb.spec),
            "failure_reasons": json.dumps(kb.failure_reasons),
            "client_token": client_token,
            "tags": json.dumps(kb.tags),
            "created_at": kb.created_at,
            "updated_at": kb.updated_at,
        }
        self._insert(knowledge_bases, values, lambda: _kb_name_taken(kb.name))
        return kb

    def kb_by_client_token(self, token: str) -> KnowledgeBase | None:
        row = self._first(sa.select(knowledge_bases).where(knowledge_bases.c.client_token == token))
        return _kb(row) if row else None

    def get_kb(self, kb_id: str) -> KnowledgeBase | None:
        row = self._first(sa.select(knowledge_bases).where(knowledge_bases.c.id == kb_id))
        return _kb(row) if row else None

    def list_kbs(self, statuses: Iterable[str] | None = None) -> list[KnowledgeBase]:
        """Oldest first."""
        query = sa.select(knowledge_bases).order_by(knowledge_bases.c.created_at, knowledge_bases.c.id)
        if statuses is not None:
            query = query.where(knowledge_bases.c.status.in_(list(statuses)))
        with self.db.engine.connect() as conn:
            return [_kb(r) for r in conn.execute(query)]

    def update_kb(self, kb_id: str, *, name: str, spec: dict[str, Any], now: float) -> KnowledgeBase | None:
        found = self._update(
            knowledge_bases,
            [knowledge_bases.c.id == kb_id],
            {"name": name, "spec": json.dumps(spec), "updated_at": now},
            lambda: _kb_name_taken(name),
        )
        return self.get_kb(kb_id) if found else None

    def set_kb_status(self, kb_id: str, status: str, failure_reasons: list[str] | None = None) -> bool:
        values: dict[str, Any] = {"status": status, "updated_at": time.time()}
        if failure_reasons is not None:
            values["failure_reasons"] = json.dumps(failure_reasons)
        with self.db.begin() as conn:
            return bool(
                conn.execute(
                    knowledge_bases.update().where(knowledge_bases.c.id == kb_id).values(**values)
                ).rowcount
            )

    def delete_kb(self, kb_id: str) -> None:
        """The knowledge base and everything recorded under it (its vectors are the caller's to drop)."""
        with self.db.begin() as conn:
            conn.execute(kb_documents.delete().where(kb_documents.c.knowledge_base_id == kb_id))
            conn.execute(kb_ingestion_jobs.delete().where(kb_ingestion_jobs.c.knowledge_base_id == kb_id))
            conn.execute(kb_data_sources.delete().where(kb_data_sources.c.knowledge_base_id == kb_id))
            conn.execute(knowledge_bases.delete().where(knowledge_bases.c.id == kb_id))

    # -- data sources --------------------------------------------------------------------

    def create_ds(self, ds: DataSource, *, client_token: str | None) -> DataSource:
        values = {
            "id": ds.id,
            "knowledge_base_id": ds.knowledge_base_id,
            "name": ds.name,
            "status": ds.status,
            "spec": json.dumps(ds.spec),
            "failure_reasons": json.dumps(ds.failure_reasons),
            "client_token": client_token,
            "created_at": ds.created_at,
            "updated_at": ds.updated_at,
        }
        self._insert(kb_data_sources, values, lambda: _ds_name_taken(ds.name, ds.knowledge_base_id))
        return ds

    def ds_by_client_token(self, kb_id: str, token: str) -> DataSource | None:
        row = self._first(
            sa.select(kb_data_sources).where(
                kb_data_sources.c.knowledge_base_id == kb_id, kb_data_sources.c.client_token == token
            )
        )
        return _ds(row) if row else None

    def get_ds(self, kb_id: str, ds_id: str) -> DataSource | None:
        row = self._first(
            sa.select(kb_data_sources).where(
                kb_data_sources.c.id == ds_id, kb_data_sources.c.knowledge_base_id == kb_id
            )
        )
        return _ds(row) if row else None

    def list_ds(self, kb_id: str | None = None, statuses: Iterable[str] | None = None) -> list[DataSource]:
        query = sa.select(kb_data_sources).order_by(kb_data_sources.c.created_at, kb_data_sources.c.id)
        if kb_id is not None:
            query = query.where(kb_data_sources.c.knowledge_base_id == kb_id)
        if statuses is not None:
            query = query.where(kb_data_sources.c.status.in_(list(statuses)))
        with self.db.engine.connect() as conn:
            return [_ds(r) for r in conn.execute(query)]

    def update_ds(
        self, kb_id: str, ds_id: str, *, name: str, spec: dict[str, Any], now: float
    ) -> DataSource | None:
        found = self._update(
            kb_data_sources,
            [kb_data_sources.c.id == ds_id, kb_data_sources.c.knowledge_base_id == kb_id],
            {"name": name, "spec": json.dumps(spec), "updated_at": now},
            lambda: _ds_name_taken(name, kb_id),
        )
        return self.get_ds(kb_id, ds_id) if found else None

    def set_ds_status(self, ds_id: str, status: str) -> bool:
        with self.db.begin() as conn:
            return bool(
                conn.execute(
                    kb_data_sources.update()
                    .where(kb_data_sources.c.id == ds_id)
                    .values(status=status, updated_at=time.time())
                ).rowcount
            )

    def delete_ds(self, ds_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(kb_documents.delete().where(kb_documents.c.data_source_id == ds_id))
            conn.execute(kb_ingestion_jobs.delete().where(kb_ingestion_jobs.c.data_source_id == ds_id))
            conn.execute(kb_data_sources.delete().where(kb_data_sources.c.id == ds_id))

    # -- ingestion jobs ------------------------------------------------------------------

    def active_job(self, ds_id: str, conn: Connection | None = None) -> IngestionJob | None:
        query = sa.select(kb_ingestion_jobs).where(
            kb_ingestion_jobs.c.data_source_id == ds_id, kb_ingestion_jobs.c.status.in_(ACTIVE_JOB_STATUSES)
        )
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.db.engine.connect() as c:
                row = c.execute(query).first()
        return _job(row) if row else None

    def create_job(self, job: IngestionJob, *, client_token: str | None) -> IngestionJob:
        """Queue ``job`` (STARTING); ConflictError while another job of its data source is not finished.
        A retry with the same client token answers the job it made."""
        with self.db.begin() as conn:
            if client_token:
                row = conn.execute(
                    sa.select(kb_ingestion_jobs).where(
                        kb_ingestion_jobs.c.data_source_id == job.data_source_id,
                        kb_ingestion_jobs.c.client_token == client_token,
                    )
                ).first()
                if row is not None:
                    return _job(row)
            running = self.active_job(job.data_source_id, conn)
            if running is not None:
                raise ConflictError(
                    f"Data source {job.data_source_id} already has ingestion job {running.id} "
                    f"({running.status}). Wait for it to finish (GetIngestionJob), or stop it with "
                    "StopIngestionJob, then start another."
                )
            conn.execute(
                kb_ingestion_jobs.insert().values(
                    id=job.id,
                    knowledge_base_id=job.knowledge_base_id,
                    data_source_id=job.data_source_id,
                    description=job.description,
                    status=job.status,
                    statistics=json.dumps(job.statistics),
                    failure_reasons=json.dumps(job.failure_reasons),
                    client_token=client_token,
                    attempts=0,
                    started_at=job.started_at,
                    updated_at=job.updated_at,
                )
            )
        return job

    def get_job(self, job_id: str) -> IngestionJob | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(kb_ingestion_jobs).where(kb_ingestion_jobs.c.id == job_id)).first()
        return _job(row) if row else None

    def list_jobs(self, ds_id: str) -> list[IngestionJob]:
        """Oldest first."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(kb_ingestion_jobs)
                .where(kb_ingestion_jobs.c.data_source_id == ds_id)
                .order_by(kb_ingestion_jobs.c.started_at, kb_ingestion_jobs.c.id)
            ).all()
        return [_job(r) for r in rows]

    def claimable_jobs(self, lease_seconds: float) -> list[IngestionJob]:
        """Unfinished jobs nobody holds a live claim on (queued ones, and those of dead servers), oldest first."""
        stale = time.time() - lease_seconds
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(kb_ingestion_jobs)
                .where(
                    kb_ingestion_jobs.c.status.in_(ACTIVE_JOB_STATUSES),
                    sa.or_(
                        kb_ingestion_jobs.c.claimed_by.is_(None), kb_ingestion_jobs.c.heartbeat_at < stale
                    ),
                )
                .order_by(kb_ingestion_jobs.c.started_at, kb_ingestion_jobs.c.id)
            ).all()
        return [_job(r) for r in rows]

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> IngestionJob | None:
        """Take the job (STARTING becomes IN_PROGRESS); None if another server holds a live claim."""
        now = time.time()
        with self.db.begin() as conn:
            found = conn.execute(
                kb_ingestion_jobs.update()
                .where(
                    kb_ingestion_jobs.c.id == job_id,
                    kb_ingestion_jobs.c.status.in_(ACTIVE_JOB_STATUSES),
                    sa.or_(
                        kb_ingestion_jobs.c.claimed_by.is_(None),
                        kb_ingestion_jobs.c.heartbeat_at < now - lease_seconds,
                    ),
                )
                .values(
                    claimed_by=worker,
                    heartbeat_at=now,
                    attempts=kb_ingestion_jobs.c.attempts + 1,
                    updated_at=now,
                    status=sa.case(
                        (
                            kb_ingestion_jobs.c.status == IngestionJobStatus.STARTING.value,
                            IngestionJobStatus.IN_PROGRESS.value,
                        ),
                        else_=kb_ingestion_jobs.c.status,
                    ),
                )
            ).rowcount
            if not found:
                return None
            row = conn.execute(sa.select(kb_ingestion_jobs).where(kb_ingestion_jobs.c.id == job_id)).one()
        return _job(row)

    def heartbeat(self, job_id: str, worker: str, *, release: bool = False) -> str | None:
        """Refresh the claim (or hand it back); the job's status, or None if the claim was lost."""
        now = time.time()
        values: dict[str, Any] = {"heartbeat_at": now}
        if release:
            values = {"claimed_by": None, "heartbeat_at": None}
        with self.db.begin() as conn:
            found = conn.execute(
                kb_ingestion_jobs.update()
                .where(kb_ingestion_jobs.c.id == job_id, kb_ingestion_jobs.c.claimed_by == worker)
                .values(**values)
            ).rowcount
            if not found:
                return None
            return str(
                conn.execute(
                    sa.select(kb_ingestion_jobs.c.status).where(kb_ingestion_jobs.c.id == job_id)
                ).scalar_one()
            )

    def request_stop(self, job_id: str) -> IngestionJob | None:
        """StopIngestionJob: a queued job is STOPPED at once, a running one STOPPING; None if not found.
        A finished job is answered as it is (the caller decides whether that is a conflict)."""
        now = time.time()
        with self.db.begin() as conn:
            conn.execute(
                kb_ingestion_jobs.update()
                .where(
                    kb_ingestion_jobs.c.id == job_id,
                    kb_ingestion_jobs.c.status == IngestionJobStatus.STARTING.value,
                    kb_ingestion_jobs.c.claimed_by.is_(None),
                )
                .values(status=IngestionJobStatus.STOPPED.value, updated_at=now, ended_at=now)
            )
            conn.execute(
                kb_ingestion_jobs.update()
                .where(
                    kb_ingestion_jobs.c.id == job_id,
                    kb_ingestion_jobs.c.status.in_(
                        (IngestionJobStatus.STARTING.value, IngestionJobStatus.IN_PROGRESS.value)
                    ),
                )
                .values(status=IngestionJobStatus.STOPPING.value, updated_at=now)
            )
        return self.get_job(job_id)

    def finish(
        self, job_id: str, worker: str | None, status: IngestionJobStatus, reason: str | None = None
    ) -> bool:
        """Move the job to a terminal status and release it (``worker``: only while it holds the claim)."""
        assert status.is_terminal()
        now = time.time()
        with self.db.begin() as conn:
            conditions = [
                kb_ingestion_jobs.c.id == job_id,
                kb_ingestion_jobs.c.status.in_(ACTIVE_JOB_STATUSES),
            ]
            if worker is not None:
                conditions.append(kb_ingestion_jobs.c.claimed_by == worker)
            row = conn.execute(sa.select(kb_ingestion_jobs).where(*conditions)).first()
            if row is None:
                return False
            reasons = json.loads(row.failure_reasons or "[]")
            if reason:
                reasons.insert(0, reason)
            conn.execute(
                kb_ingestion_jobs.update()
                .where(*conditions)
                .values(
                    status=status.value,
                    failure_reasons=json.dumps(reasons),
                    claimed_by=None,
                    heartbeat_at=None,
                    updated_at=now,
                    ended_at=now,
                )
            )
        return True

    def set_scanned(self, job_id: str, worker: str, *, documents: int, metadata_documents: int) -> str | None:
        """Record what this scan found (a resumed job scans again: the figures are set, not added)."""
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(kb_ingestion_jobs)
                .where(kb_ingestion_jobs.c.id == job_id, kb_ingestion_jobs.c.claimed_by == worker)
                .with_for_update()
            ).first()
            if row is None:
                return None
            stats = {**empty_statistics(), **json.loads(row.statistics or "{}")}
            stats["numberOfDocumentsScanned"] = documents
            stats["numberOfMetadataDocumentsScanned"] = metadata_documents
            conn.execute(
                kb_ingestion_jobs.update()
                .where(kb_ingestion_jobs.c.id == job_id)
                .values(statistics=json.dumps(stats), heartbeat_at=time.time(), updated_at=time.time())
            )
            return str(row.status)

    # -- documents -----------------------------------------------------------------------

    def documents(self, ds_id: str) -> dict[str, DocumentRecord]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(kb_documents).where(kb_documents.c.data_source_id == ds_id)).all()
        return {
            r.uri: DocumentRecord(
                r.uri, r.content_hash, r.metadata_hash, r.status, int(r.chunk_count), r.job_id
            )
            for r in rows
        }

    def chunk_total(self, ds_id: str) -> int:
        with self.db.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(kb_documents.c.chunk_count), 0)).where(
                    kb_documents.c.data_source_id == ds_id,
                    kb_documents.c.status == DocumentState.INDEXED.value,
                )
            ).scalar_one()
        return int(total)

    def record(
        self,
        job_id: str,
        worker: str,
        *,
        knowledge_base_id: str,
        data_source_id: str,
        indexed: Sequence[Indexed] = (),
        failed: Sequence[Failed] = (),
        deleted: Sequence[str] = (),
        forgotten: Sequence[str] = (),
    ) -> str | None:
        """Record a group of finished documents and count them in the job's statistics, in one
        transaction, while ``worker`` holds the job. Returns the job's status (STOPPING tells the
        runner to stop), or None if the claim was lost (nothing is recorded then). ``deleted``
        documents are counted as deleted; ``forgotten`` ones (failed before, gone now) are not."""
        now = time.time()
        try:
            with self.db.begin() as conn:
                row = conn.execute(
                    sa.select(kb_ingestion_jobs)
                    .where(kb_ingestion_jobs.c.id == job_id, kb_ingestion_jobs.c.claimed_by == worker)
                    .with_for_update()
                ).first()
                if row is None:
                    raise _LostClaim
                uris = [d.uri for d in indexed] + [d.uri for d in failed] + list(deleted) + list(forgotten)
                for start in range(0, len(uris), 500):
                    conn.execute(
                        kb_documents.delete().where(
                            kb_documents.c.data_source_id == data_source_id,
                            kb_documents.c.uri.in_(uris[start : start + 500]),
                        )
                    )
                rows = [
                    {
                        "data_source_id": data_source_id,
                        "uri": d.uri,
                        "knowledge_base_id": knowledge_base_id,
                        "content_hash": d.content_hash,
                        "metadata_hash": d.metadata_hash,
                        "status": DocumentState.INDEXED.value,
                        "chunk_count": d.chunk_count,
                        "job_id": job_id,
                        "updated_at": now,
                    }
                    for d in indexed
                ] + [
                    {
                        "data_source_id": data_source_id,
                        "uri": d.uri,
                        "knowledge_base_id": knowledge_base_id,
                        "content_hash": d.content_hash,
                        "metadata_hash": d.metadata_hash,
                        "status": DocumentState.FAILED.value,
                        "chunk_count": 0,
                        "job_id": job_id,
                        "updated_at": now,
                    }
                    for d in failed
                ]
                if rows:
                    conn.execute(kb_documents.insert(), rows)
                stats = {**empty_statistics(), **json.loads(row.statistics or "{}")}
                for d in indexed:
                    stats[d.change] = stats.get(d.change, 0) + 1
                stats["numberOfDocumentsFailed"] += len(failed)
                stats["numberOfDocumentsDeleted"] += len(deleted)
                reasons = json.loads(row.failure_reasons or "[]")
                for bad in failed:
                    if len(reasons) < MAX_FAILURE_REASONS:
                        reasons.append(bad.reason)
                conn.execute(
                    kb_ingestion_jobs.update()
                    .where(kb_ingestion_jobs.c.id == job_id)
                    .values(
                        statistics=json.dumps(stats),
                        failure_reasons=json.dumps(reasons),
                        heartbeat_at=now,
                        updated_at=now,
                    )
                )
                return str(row.status)
        except _LostClaim:
            return None
