"""Queries for import jobs, imported models and their files.

Jobs are claimed atomically (a conditional UPDATE that only one process can win), so
several server processes on one database never run the same import twice. A claim is a
lease: the holder refreshes ``heartbeat_at`` while it works; a claim whose heartbeat is
older than the lease (a crashed server) can be taken over.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from outcrop.errors import ConflictError, InvalidRequestError, NotFoundError, QuotaExceededError
from outcrop.store.db import Database
from outcrop.store.schema import import_jobs, imported_models, model_files, model_scaling

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A 12-character [a-z0-9] id, the form Bedrock uses in its ARNs."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


class ImportJobStatus(enum.StrEnum):
    """Bedrock's ModelImportJobStatus."""

    IN_PROGRESS = "InProgress"  # queued or running: files are fetched, validated, stored
    COMPLETED = "Completed"  # the imported model is registered and can be invoked
    FAILED = "Failed"  # failureMessage says why; nothing was registered

    def is_terminal(self) -> bool:
        return self is not ImportJobStatus.IN_PROGRESS


ALLOWED_TRANSITIONS: dict[ImportJobStatus, frozenset[ImportJobStatus]] = {
    ImportJobStatus.IN_PROGRESS: frozenset({ImportJobStatus.COMPLETED, ImportJobStatus.FAILED}),
    ImportJobStatus.COMPLETED: frozenset(),
    ImportJobStatus.FAILED: frozenset(),
}


class ImportPhase(enum.StrEnum):
    """Where an in-progress import is; shown by the CLI and the admin API."""

    QUEUED = "queued"  # waiting for a server to claim it
    FETCHING = "fetching"  # copying and hashing files from the source
    VALIDATING = "validating"  # checking config, headers, shapes, tokenizer
    STORING = "storing"  # moving blobs into the content-addressed store
    DONE = "done"  # terminal (see status)


class ModelKind(enum.StrEnum):
    """What an imported model serves; decides which worker its copies run."""

    TEXT = "text"  # text generation: completions, chat, Converse (outcrop.engine.worker)
    EMBEDDING = "embedding"  # sentence embeddings: /v1/embeddings, Titan/Cohere bodies (embedding_worker)


@dataclass
class ImportJob:
    id: str
    name: str
    imported_model_name: str
    source_uri: str
    role_arn: str | None = None
    status: ImportJobStatus = ImportJobStatus.IN_PROGRESS
    phase: ImportPhase = ImportPhase.QUEUED
    failure_message: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    client_request_token: str | None = None
    job_tags: list[dict[str, str]] = field(default_factory=list)
    model_tags: list[dict[str, str]] = field(default_factory=list)
    vpc_config: dict[str, Any] | None = None
    kms_key_id: str | None = None
    imported_model_id: str | None = None
    claimed_by: str | None = None
    heartbeat_at: float | None = None
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None


@dataclass
class ImportedModel:
    id: str
    name: str
    source_uri: str
    architecture: str
    model_type: str
    parameter_count: int
    dtype: str
    context_length: int
    size_bytes: int
    instruct_supported: bool
    memory_estimate_bytes: int
    job_id: str | None = None
    job_name: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    kms_key_id: str | None = None
    created_at: float = 0.0
    kind: str = "text"  # "text" | "embedding" (ModelKind)
    embedding_dimension: int | None = None  # embedding models: the vector's length
    embedding_pooling: str | None = None  # embedding models: mean | cls | lasttoken
    embedding_truncatable: bool = False  # embedding models: `dimensions` below the full length allowed

    @property
    def is_embedding(self) -> bool:
        return self.kind == ModelKind.EMBEDDING


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Page:
    """A page of a listing and the token for the next one (None at the end)."""

    items: list[Any]
    next_token: str | None


@dataclass(frozen=True)
class ListFilter:
    created_after: float | None = None
    created_before: float | None = None
    name_contains: str | None = None
    status: ImportJobStatus | None = None
    ascending: bool = False
    max_results: int = 1000
    next_token: str | None = None


_JSON_JOB_COLUMNS = ("job_tags", "model_tags", "vpc_config")


def _job_from_row(row: sa.Row[Any]) -> ImportJob:
    data = dict(row._mapping)
    for key in _JSON_JOB_COLUMNS:
        data[key] = json.loads(data[key]) if data[key] is not None else None
    data["job_tags"] = data["job_tags"] or []
    data["model_tags"] = data["model_tags"] or []
    data["status"] = ImportJobStatus(data["status"])
    data["phase"] = ImportPhase(data["phase"])
    return ImportJob(**data)


def _model_from_row(row: sa.Row[Any]) -> ImportedModel:
    data = dict(row._mapping)
    data["tags"] = json.loads(data["tags"] or "[]")
    data["instruct_supported"] = bool(data["instruct_supported"])
    data["embedding_truncatable"] = bool(data.get("embedding_truncatable"))
    return ImportedModel(**data)


def _encode_token(created_at: float, ident: str) -> str:
    raw = json.dumps([created_at, ident]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[float, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created_at, ident = json.loads(base64.urlsafe_b64decode(padded))
        return float(created_at), str(ident)
    except Exception:
        raise InvalidRequestError(
            f"nextToken {token[:40]!r} is not a token this server issued. Pass the nextToken from the "
            "previous response unchanged, or omit it to start from the first page.",
            param="nextToken",
        ) from None


def _page(
    conn: Connection, table: sa.Table, where: list[Any], flt: ListFilter
) -> tuple[list[Any], str | None]:
    """Keyset pagination on (created_at, id)."""
    created, ident = table.c.created_at, table.c.id
    conditions = list(where)
    if flt.created_after is not None:
        conditions.append(created > flt.created_after)
    if flt.created_before is not None:
        conditions.append(created < flt.created_before)
    if flt.name_contains:
        conditions.append(table.c.name.contains(flt.name_contains, autoescape=True))
    if flt.next_token:
        t_created, t_id = _decode_token(flt.next_token)
        if flt.ascending:
            conditions.append(sa.tuple_(created, ident) > sa.tuple_(sa.literal(t_created), sa.literal(t_id)))
        else:
            conditions.append(sa.tuple_(created, ident) < sa.tuple_(sa.literal(t_created), sa.literal(t_id)))
    order = (created.asc(), ident.asc()) if flt.ascending else (created.desc(), ident.desc())
    query = sa.select(table).where(*conditions).order_by(*order).limit(flt.max_results + 1)
    rows = list(conn.execute(query))
    token = None
    if len(rows) > flt.max_results:
        rows = rows[: flt.max_results]
        last = rows[-1]._mapping
        token = _encode_token(last["created_at"], last["id"])
    return rows, token


class ImportStore:
    """Import jobs and imported models in the metadata database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _one_by_id_or_name(self, table: sa.Table, identifier: str, kind: str, hint: str) -> sa.Row[Any]:
        """The row whose id or name is ``identifier``, or NotFoundError naming ``kind``."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.select(table).where(sa.or_(table.c.id == identifier, table.c.name == identifier))
            ).first()
        if row is None:
            raise NotFoundError(kind, identifier, hint)
        return row

    # -- jobs -------------------------------------------------------------------------

    def create_job(self, job: ImportJob, *, max_in_progress: int, max_models: int) -> ImportJob:
        """Insert a new InProgress job after the name and quota checks, in one transaction.

        A job with the same ``client_request_token`` and name as an existing one returns that
        job instead (Bedrock ignores the repeated request without an error).
        """
        now = time.time()
        job.created_at = job.updated_at = now
        with self.db.begin() as conn:
            existing = conn.execute(sa.select(import_jobs).where(import_jobs.c.name == job.name)).first()
            if existing is not None:
                found = _job_from_row(existing)
                if job.client_request_token and found.client_request_token == job.client_request_token:
                    return found
                raise ConflictError(
                    f"An import job named '{job.name}' already exists. Choose another jobName "
                    "(job names are unique, including finished jobs)."
                )
            if conn.execute(
                sa.select(imported_models.c.id).where(imported_models.c.name == job.imported_model_name)
            ).first():
                raise ConflictError(
                    f"An imported model named '{job.imported_model_name}' already exists. Choose another "
                    "importedModelName, or delete the existing model first."
                )
            running = list(
                conn.execute(
                    sa.select(import_jobs.c.name, import_jobs.c.imported_model_name).where(
                        import_jobs.c.status == ImportJobStatus.IN_PROGRESS.value
                    )
                )
            )
            for other_job, other_model in running:
                if other_model == job.imported_model_name:
                    raise ConflictError(
                        f"Import job '{other_job}' is already importing a model named "
                        f"'{job.imported_model_name}'. Wait for it to finish or choose another importedModelName."
                    )
            if len(running) >= max_in_progress:
                raise QuotaExceededError(
                    f"{len(running)} import job(s) are already in progress and the quota of concurrent import "
                    f"jobs is {max_in_progress}. Wait for one to finish, or raise "
                    "OUTCROP_REGISTRY__MAX_CONCURRENT_IMPORT_JOBS.",
                    quota="concurrent_import_jobs",
                    limit=max_in_progress,
                )
            n_models = conn.execute(sa.select(sa.func.count()).select_from(imported_models)).scalar_one()
            if n_models + len(running) >= max_models:
                raise QuotaExceededError(
                    f"There are {n_models} imported model(s) and {len(running)} import(s) in progress; the quota "
                    f"of imported models is {max_models}. Delete a model you no longer need, or raise "
                    "OUTCROP_REGISTRY__MAX_IMPORTED_MODELS.",
                    quota="imported_models",
                    limit=max_models,
                )
            values = {
                "id": job.id,
                "name": job.name,
                "imported_model_name": job.imported_model_name,
                "role_arn": job.role_arn,
                "source_uri": job.source_uri,
                "status": job.status.value,
                "phase": job.phase.value,
                "client_request_token": job.client_request_token,
                "job_tags": json.dumps(job.job_tags),
                "model_tags": json.dumps(job.model_tags),
                "vpc_config": json.dumps(job.vpc_config) if job.vpc_config is not None else None,
                "kms_key_id": job.kms_key_id,
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(import_jobs.insert().values(**values))
        return job

    def get_job(self, identifier: str) -> ImportJob:
        """A job by id or by name."""
        row = self._one_by_id_or_name(
            import_jobs,
            identifier,
            "Model import job",
            "List jobs with `outcrop jobs` or list_model_import_jobs.",
        )
        return _job_from_row(row)

    def list_jobs(self, flt: ListFilter) -> Page:
        where = []
        if flt.status is not None:
            where.append(import_jobs.c.status == flt.status.value)
        with self.db.engine.connect() as conn:
            rows, token = _page(conn, import_jobs, where, flt)
        return Page([_job_from_row(r) for r in rows], token)

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        """Take the job if nobody holds a live claim on it. Exactly one contender wins."""
        now = time.time()
        with self.db.begin() as conn:
            result = conn.execute(
                import_jobs.update()
                .where(
                    import_jobs.c.id == job_id,
                    import_jobs.c.status == ImportJobStatus.IN_PROGRESS.value,
                    sa.or_(
                        import_jobs.c.claimed_by.is_(None), import_jobs.c.heartbeat_at < now - lease_seconds
                    ),
                )
                .values(
                    claimed_by=worker, heartbeat_at=now, attempts=import_jobs.c.attempts + 1, updated_at=now
                )
            )
            return result.rowcount == 1

    def claimable_job_ids(self, lease_seconds: float) -> list[str]:
        """In-progress jobs that nobody holds a live claim on, oldest first."""
        now = time.time()
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(import_jobs.c.id)
                .where(
                    import_jobs.c.status == ImportJobStatus.IN_PROGRESS.value,
                    sa.or_(
                        import_jobs.c.claimed_by.is_(None), import_jobs.c.heartbeat_at < now - lease_seconds
                    ),
                )
                .order_by(import_jobs.c.created_at)
            )
            return [r[0] for r in rows]

    def update_progress(self, job_id: str, worker: str, **values: Any) -> bool:
        """Record progress and refresh the lease; False when this worker no longer holds the claim."""
        now = time.time()
        if "phase" in values and isinstance(values["phase"], ImportPhase):
            values["phase"] = values["phase"].value
        with self.db.begin() as conn:
            result = conn.execute(
                import_jobs.update()
                .where(
                    import_jobs.c.id == job_id,
                    import_jobs.c.claimed_by == worker,
                    import_jobs.c.status == ImportJobStatus.IN_PROGRESS.value,
                )
                .values(heartbeat_at=now, updated_at=now, **values)
            )
            return result.rowcount == 1

    def fail(self, job_id: str, message: str, *, worker: str | None = None) -> bool:
        """Mark the job Failed (only from InProgress; only by the claim holder when ``worker`` is given)."""
        now = time.time()
        conditions = [import_jobs.c.id == job_id, import_jobs.c.status == ImportJobStatus.IN_PROGRESS.value]
        if worker is not None:
            conditions.append(import_jobs.c.claimed_by == worker)
        with self.db.begin() as conn:
            result = conn.execute(
                import_jobs.update()
                .where(*conditions)
                .values(
                    status=ImportJobStatus.FAILED.value,
                    phase=ImportPhase.DONE.value,
                    failure_message=message[:2048],
                    updated_at=now,
                    ended_at=now,
                    claimed_by=None,
                )
            )
            return result.rowcount == 1

    def complete(self, job_id: str, worker: str, model: ImportedModel, files: Sequence[ModelFile]) -> None:
        """Register the model and its files and mark the job Completed, all in one transaction."""
        now = time.time()
        model.created_at = now
        with self.db.begin() as conn:
            if conn.execute(
                sa.select(imported_models.c.id).where(imported_models.c.name == model.name)
            ).first():
                raise ConflictError(
                    f"An imported model named '{model.name}' was created while this job ran. "
                    "Import again under another importedModelName."
                )
            result = conn.execute(
                import_jobs.update()
                .where(
                    import_jobs.c.id == job_id,
                    import_jobs.c.claimed_by == worker,
                    import_jobs.c.status == ImportJobStatus.IN_PROGRESS.value,
                )
                .values(
                    status=ImportJobStatus.COMPLETED.value,
                    phase=ImportPhase.DONE.value,
                    imported_model_id=model.id,
                    updated_at=now,
                    ended_at=now,
                    claimed_by=None,
                )
            )
            if result.rowcount != 1:
                raise ConflictError(f"Import job {job_id} is no longer held by this server; not registering.")
            values = {k: getattr(model, k) for k in model.__dataclass_fields__}
            values["tags"] = json.dumps(model.tags)
            conn.execute(imported_models.insert().values(**values))
            if files:
                conn.execute(
                    model_files.insert(),
                    [
                        {"model_id": model.id, "path": f.path, "sha256": f.sha256, "size_bytes": f.size_bytes}
                        for f in files
                    ],
                )

    # -- models -----------------------------------------------------------------------

    def get_model(self, identifier: str) -> ImportedModel:
        """A model by id or name."""
        row = self._one_by_id_or_name(
            imported_models,
            identifier,
            "Imported model",
            "List models with `outcrop models` or list_imported_models.",
        )
        return _model_from_row(row)

    def list_models(self, flt: ListFilter) -> Page:
        with self.db.engine.connect() as conn:
            rows, token = _page(conn, imported_models, [], flt)
        return Page([_model_from_row(r) for r in rows], token)

    def model_files(self, model_id: str) -> list[ModelFile]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(model_files.c.path, model_files.c.sha256, model_files.c.size_bytes)
                .where(model_files.c.model_id == model_id)
                .order_by(model_files.c.path)
            )
            return [ModelFile(*r) for r in rows]

    def delete_model(self, model_id: str) -> list[str]:
        """Delete the model; returns the sha256 of its blobs that no other model references."""
        with self.db.begin() as conn:
            shas = {
                r[0]
                for r in conn.execute(
                    sa.select(model_files.c.sha256).where(model_files.c.model_id == model_id)
                )
            }
            conn.execute(model_files.delete().where(model_files.c.model_id == model_id))
            conn.execute(model_scaling.delete().where(model_scaling.c.model_id == model_id))
            deleted = conn.execute(imported_models.delete().where(imported_models.c.id == model_id)).rowcount
            if deleted != 1:
                raise NotFoundError("Imported model", model_id)
            if not shas:
                return []
            still_used = {
                r[0]
                for r in conn.execute(sa.select(model_files.c.sha256).where(model_files.c.sha256.in_(shas)))
            }
        return sorted(shas - still_used)

    def blob_is_referenced(self, sha256: str) -> bool:
        with self.db.engine.connect() as conn:
            return (
                conn.execute(sa.select(model_files.c.model_id).where(model_files.c.sha256 == sha256)).first()
                is not None
            )
