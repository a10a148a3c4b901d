"""Queries for batch jobs, their input files and their finished records.

Every state change is a conditional UPDATE whose WHERE names the statuses the change is
allowed from (:data:`outcrop.batch.status.ALLOWED_TRANSITIONS`), so two servers never both
win. Claims are leases, as for import jobs: the holder refreshes ``heartbeat_at``; a claim
older than ``store.job_lease_seconds`` (a crashed server) can be taken over.

Slot starts are one transaction under a lock (SQLite's write lock; a PostgreSQL advisory
lock), so servers sharing a store never start more jobs of a model than its limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outcrop.batch import slots
from outcrop.batch.status import BatchJobStatus, sources_of
from outcrop.errors import ConflictError, NotFoundError
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter, Page, _page
from outcrop.store.schema import batch_files, batch_jobs, batch_records, batch_watch

# Any fixed 64-bit number: the PostgreSQL advisory lock all slot allocators agree on.
SLOT_LOCK_KEY = 0x0C7C0_0B47
MESSAGE_MAX_CHARS = 2048

S = BatchJobStatus


@dataclass
class BatchJob:
    id: str
    name: str
    model_id: str  # as the request gave it (name or ARN)
    model_key: str  # the imported model's id
    input_uri: str
    output_uri: str
    invocation_type: str = "InvokeModel"
    role_arn: str | None = None
    status: BatchJobStatus = S.SUBMITTED
    message: str | None = None
    client_request_token: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    vpc_config: dict[str, Any] | None = None
    timeout_hours: int = 24
    total_records: int = 0
    processed_records: int = 0
    success_records: int = 0
    error_records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    claimed_by: str | None = None
    heartbeat_at: float | None = None
    attempts: int = 0
    crashes: int = 0  # claims taken over in a row from a server that died holding them (crashed_too_often)
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    expires_at: float = 0.0
    owner_id: str | None = None  # the principal that created it; None: the server (watched folder, auth off)


@dataclass(frozen=True)
class BatchFile:
    file_index: int
    name: str
    size_bytes: int
    sha256: str
    record_count: int
    output_bytes: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """Finished records and where each output file now ends, stored in one transaction."""

    records: list[tuple[int, int, bool]]  # (file_index, line_no, ok)
    output_bytes: dict[int, int]  # file_index -> bytes of its .out file that hold complete lines
    input_tokens: int = 0
    output_tokens: int = 0


def crashed_too_often(job: BatchJob, max_crashes: int) -> str | None:
    """The failure message for a job that died with its server ``max_crashes`` times, else None.

    A crash is a claim that lapsed without being released (the server process died, or its task
    for the job did); a clean shutdown hands claims back and is no crash. ``crashes`` counts them
    in a row: a checkpoint that stores finished records resets it, so a long job that survives
    unrelated restarts while making progress runs on, and one that takes its server down at the
    same point every time ends.
    """
    if job.crashes < max_crashes:
        return None
    return (
        f"The job crashed its server {job.crashes} times in a row while {job.status.value}, finishing no "
        "record in between, and is not retried again "
        f"(OUTCROP_BATCH__MAX_CRASHES={max_crashes}). Look in the server log for 'batch job' lines with "
        f"job_id {job.id}, and in the system log for an out-of-memory kill; fix the input, then submit "
        "the job again."
    )


def _job_from_row(row: sa.Row[Any]) -> BatchJob:
    data = dict(row._mapping)
    data["tags"] = json.loads(data["tags"] or "[]")
    data["vpc_config"] = json.loads(data["vpc_config"]) if data["vpc_config"] else None
    data["status"] = BatchJobStatus(data["status"])
    return BatchJob(**data)


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- create / read ------------------------------------------------------------------

    def create_job(self, job: BatchJob) -> tuple[BatchJob, bool]:
        """Insert a Submitted job; returns (job, created). A repeat of the same request (same
        name and clientRequestToken) returns the existing job, as Bedrock's idempotency does."""
        now = time.time()
        job.created_at = job.updated_at = now
        job.expires_at = now + job.timeout_hours * 3600
        with self.db.begin() as conn:
            existing = conn.execute(sa.select(batch_jobs).where(batch_jobs.c.name == job.name)).first()
            if existing is not None:
                found = _job_from_row(existing)
                if job.client_request_token and found.client_request_token == job.client_request_token:
                    return found, False
                raise ConflictError(
                    f"A batch inference job named '{job.name}' already exists. Choose another jobName "
                    "(job names are unique, including finished jobs)."
                )
            values = {k: getattr(job, k) for k in job.__dataclass_fields__}
            values["status"] = job.status.value
            values["tags"] = json.dumps(job.tags)
            values["vpc_config"] = json.dumps(job.vpc_config) if job.vpc_config is not None else None
            conn.execute(batch_jobs.insert().values(**values))
        return job, True

    def get_job(self, identifier: str) -> BatchJob:
        """A job by id or name."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.select(batch_jobs).where(
                    sa.or_(batch_jobs.c.id == identifier, batch_jobs.c.name == identifier)
                )
            ).first()
        if row is None:
            raise NotFoundError(
                "Model invocation job",
                identifier,
                "List jobs with `outcrop batch ls` or list_model_invocation_jobs.",
            )
        return _job_from_row(row)

    def list_jobs(
        self, flt: ListFilter, status: BatchJobStatus | None = None, *, owner_id: str | None = None
    ) -> Page:
        """A page of jobs; only those ``owner_id`` created, when given."""
        where = [batch_jobs.c.status == status.value] if status is not None else []
        if owner_id is not None:
            where.append(batch_jobs.c.owner_id == owner_id)
        with self.db.engine.connect() as conn:
            rows, token = _page(conn, batch_jobs, where, flt)
        return Page([_job_from_row(r) for r in rows], token)

    def files(self, job_id: str) -> list[BatchFile]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    batch_files.c.file_index,
                    batch_files.c.name,
                    batch_files.c.size_bytes,
                    batch_files.c.sha256,
                    batch_files.c.record_count,
                    batch_files.c.output_bytes,
                )
                .where(batch_files.c.job_id == job_id)
                .order_by(batch_files.c.file_index)
            )
            return [BatchFile(*r) for r in rows]

    def done_records(self, job_id: str) -> set[tuple[int, int]]:
        """(file_index, line_no) of every checkpointed record."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(batch_records.c.file_index, batch_records.c.line_no).where(
                    batch_records.c.job_id == job_id
                )
            )
            return {(int(a), int(b)) for a, b in rows}

    # -- transitions --------------------------------------------------------------------

    def _move(
        self,
        conn: sa.Connection,
        job_id: str,
        target: BatchJobStatus,
        *,
        worker: str | None = None,
        **values: Any,
    ) -> bool:
        now = time.time()
        conditions = [batch_jobs.c.id == job_id, batch_jobs.c.status.in_(sources_of(target))]
        if worker is not None:
            conditions.append(batch_jobs.c.claimed_by == worker)
        if target.is_terminal():
            values.setdefault("ended_at", now)
            values.setdefault("claimed_by", None)
        if values.get("message"):
            values["message"] = str(values["message"])[:MESSAGE_MAX_CHARS]
        result = conn.execute(
            batch_jobs.update().where(*conditions).values(status=target.value, updated_at=now, **values)
        )
        return result.rowcount == 1

    def move(self, job_id: str, target: BatchJobStatus, *, worker: str | None = None, **values: Any) -> bool:
        """Move the job to ``target`` if its status allows it (and ``worker`` holds it, when given)."""
        with self.db.begin() as conn:
            return self._move(conn, job_id, target, worker=worker, **values)

    def claim_for_validation(self, worker: str, lease_seconds: float) -> list[str]:
        """Claim Submitted jobs, and Validating jobs whose validator died; returns the claimed ids."""
        now = time.time()
        stale = now - lease_seconds
        claimed: list[str] = []
        with self.db.engine.connect() as conn:
            candidates = [
                r[0]
                for r in conn.execute(
                    sa.select(batch_jobs.c.id)
                    .where(
                        sa.or_(
                            batch_jobs.c.status == S.SUBMITTED.value,
                            sa.and_(
                                batch_jobs.c.status == S.VALIDATING.value, batch_jobs.c.heartbeat_at < stale
                            ),
                        )
                    )
                    .order_by(batch_jobs.c.created_at)
                )
            ]
        for job_id in candidates:
            with self.db.begin() as conn:
                result = conn.execute(
                    batch_jobs.update()
                    .where(
                        batch_jobs.c.id == job_id,
                        sa.or_(
                            batch_jobs.c.status == S.SUBMITTED.value,
                            sa.and_(
                                batch_jobs.c.status == S.VALIDATING.value, batch_jobs.c.heartbeat_at < stale
                            ),
                        ),
                    )
                    .values(
                        status=S.VALIDATING.value,
                        claimed_by=worker,
                        heartbeat_at=now,
                        updated_at=now,
                        # Taking over a validator that never released its claim: it died.
                        crashes=batch_jobs.c.crashes
                        + sa.case(
                            (
                                sa.and_(
                                    batch_jobs.c.status == S.VALIDATING.value,
                                    batch_jobs.c.claimed_by.is_not(None),
                                ),
                                1,
                            ),
                            else_=0,
                        ),
                    )
                )
                if result.rowcount == 1:
                    claimed.append(job_id)
        return claimed

    def release_validation(self, job_id: str, worker: str) -> bool:
        """Hand a Validating job back (a clean shutdown): any server may validate it again at once,
        and it does not count as a crash."""
        with self.db.begin() as conn:
            result = conn.execute(
                batch_jobs.update()
                .where(
                    batch_jobs.c.id == job_id,
                    batch_jobs.c.claimed_by == worker,
                    batch_jobs.c.status == S.VALIDATING.value,
                )
                .values(claimed_by=None, heartbeat_at=0.0, updated_at=time.time())
            )
            return result.rowcount == 1

    def finish_validation(self, job_id: str, worker: str, files: list[BatchFile]) -> bool:
        """Record the validated files and move the job to Scheduled (releasing the claim)."""
        with self.db.begin() as conn:
            ok = self._move(
                conn,
                job_id,
                S.SCHEDULED,
                worker=worker,
                total_records=sum(f.record_count for f in files),
                claimed_by=None,
                heartbeat_at=None,
            )
            if not ok:
                return False
            conn.execute(batch_files.delete().where(batch_files.c.job_id == job_id))
            conn.execute(
                batch_files.insert(),
                [
                    {
                        "job_id": job_id,
                        "file_index": f.file_index,
                        "name": f.name,
                        "size_bytes": f.size_bytes,
                        "sha256": f.sha256,
                        "record_count": f.record_count,
                        "output_bytes": 0,
                    }
                    for f in files
                ],
            )
            return True

    def allocate_slots(self, worker: str, limit_per_model: int) -> tuple[list[str], list[str]]:
        """Expire Scheduled jobs past their timeout and start the ones that have a slot; one
        transaction under the slot lock. Returns (started ids, expired ids); started ones are
        claimed by ``worker``."""
        now = time.time()
        with self.db.begin() as conn:
            if not self.db.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SLOT_LOCK_KEY})
            rows = conn.execute(
                sa.select(
                    batch_jobs.c.id,
                    batch_jobs.c.model_key,
                    batch_jobs.c.status,
                    batch_jobs.c.created_at,
                    batch_jobs.c.expires_at,
                ).where(batch_jobs.c.status.in_([s.value for s in S if not s.is_terminal()]))
            )
            jobs = [slots.SlotJob(r[0], r[1], BatchJobStatus(r[2]), r[3], r[4]) for r in rows]
            expired = slots.jobs_to_expire(jobs, now)
            for job_id in expired:
                self._move(
                    conn,
                    job_id,
                    S.EXPIRED,
                    message="The job stayed Scheduled past its timeoutDurationInHours without a free slot. "
                    "Submit it again, or raise OUTCROP_BATCH__MAX_RUNNING_JOBS_PER_MODEL.",
                )
            live = [j for j in jobs if j.id not in set(expired)]
            started = slots.jobs_to_start(live, limit_per_model)
            for job_id in started:
                conn.execute(
                    batch_jobs.update()
                    .where(batch_jobs.c.id == job_id, batch_jobs.c.status == S.SCHEDULED.value)
                    .values(
                        status=S.IN_PROGRESS.value,
                        claimed_by=worker,
                        heartbeat_at=now,
                        started_at=now,
                        updated_at=now,
                        attempts=batch_jobs.c.attempts + 1,
                    )
                )
        return started, expired

    def claimable_running(self, lease_seconds: float) -> list[str]:
        """InProgress or Stopping jobs nobody holds a live claim on (their server died), oldest first."""
        stale = time.time() - lease_seconds
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(batch_jobs.c.id)
                .where(
                    batch_jobs.c.status.in_([S.IN_PROGRESS.value, S.STOPPING.value]),
                    sa.or_(batch_jobs.c.claimed_by.is_(None), batch_jobs.c.heartbeat_at < stale),
                )
                .order_by(batch_jobs.c.created_at)
            )
            return [r[0] for r in rows]

    def claim_running(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        """Take over an abandoned running job. Exactly one contender wins."""
        now = time.time()
        with self.db.begin() as conn:
            result = conn.execute(
                batch_jobs.update()
                .where(
                    batch_jobs.c.id == job_id,
                    batch_jobs.c.status.in_([S.IN_PROGRESS.value, S.STOPPING.value]),
                    sa.or_(
                        batch_jobs.c.claimed_by.is_(None), batch_jobs.c.heartbeat_at < now - lease_seconds
                    ),
                )
                .values(
                    claimed_by=worker,
                    heartbeat_at=now,
                    updated_at=now,
                    attempts=batch_jobs.c.attempts + 1,
                    # A claim nobody released: its holder died (a clean stop releases it first).
                    crashes=batch_jobs.c.crashes
                    + sa.case((batch_jobs.c.claimed_by.is_not(None), 1), else_=0),
                )
            )
            return result.rowcount == 1

    def heartbeat(self, job_id: str, worker: str, *, release: bool = False) -> BatchJobStatus | None:
        """Refresh the lease (or give it up); returns the job's status, None if the claim was lost."""
        now = time.time()
        values: dict[str, Any] = {"heartbeat_at": now}
        if release:
            values = {"claimed_by": None, "heartbeat_at": None}
        with self.db.begin() as conn:
            result = conn.execute(
                batch_jobs.update()
                .where(batch_jobs.c.id == job_id, batch_jobs.c.claimed_by == worker)
                .values(**values)
            )
            if result.rowcount != 1:
                return None
            status = conn.execute(
                sa.select(batch_jobs.c.status).where(batch_jobs.c.id == job_id)
            ).scalar_one()
            return BatchJobStatus(status)

    def checkpoint(self, job_id: str, worker: str, cp: Checkpoint) -> BatchJobStatus | None:
        """Store finished records, output offsets and counters, refreshing the lease; one transaction.
        Returns the job's status (Stopping = a user asked to stop), None if the claim was lost."""
        now = time.time()
        ok = sum(1 for _, _, good in cp.records if good)
        with self.db.begin() as conn:
            result = conn.execute(
                batch_jobs.update()
                .where(
                    batch_jobs.c.id == job_id,
                    batch_jobs.c.claimed_by == worker,
                    batch_jobs.c.status.in_([S.IN_PROGRESS.value, S.STOPPING.value]),
                )
                .values(
                    heartbeat_at=now,
                    updated_at=now,
                    processed_records=batch_jobs.c.processed_records + len(cp.records),
                    success_records=batch_jobs.c.success_records + ok,
                    error_records=batch_jobs.c.error_records + (len(cp.records) - ok),
                    input_tokens=batch_jobs.c.input_tokens + cp.input_tokens,
                    output_tokens=batch_jobs.c.output_tokens + cp.output_tokens,
                    # Progress: the crashes before it were not this job's doing (see crashed_too_often).
                    **({"crashes": 0} if cp.records else {}),
                )
            )
            if result.rowcount != 1:
                return None
            if cp.records:
                conn.execute(
                    batch_records.insert(),
                    [
                        {"job_id": job_id, "file_index": f, "line_no": n, "ok": good}
                        for f, n, good in cp.records
                    ],
                )
            for index, size in cp.output_bytes.items():
                conn.execute(
                    batch_files.update()
                    .where(batch_files.c.job_id == job_id, batch_files.c.file_index == index)
                    .values(output_bytes=size)
                )
            status = conn.execute(
                sa.select(batch_jobs.c.status).where(batch_jobs.c.id == job_id)
            ).scalar_one()
            return BatchJobStatus(status)

    def request_stop(self, job_id: str) -> BatchJobStatus:
        """Stop a job: one that has not started is Stopped at once; a running one becomes Stopping."""
        job = self.get_job(job_id)
        if job.status.is_terminal() or job.status is S.STOPPING:
            raise ConflictError(
                f"Batch job '{job.name}' is {job.status.value}; only a job that has not finished can be stopped."
            )
        target = S.STOPPING if job.status is S.IN_PROGRESS else S.STOPPED
        with self.db.begin() as conn:
            values: dict[str, Any] = (
                {"message": "Stopped by a user before it started."} if target is S.STOPPED else {}
            )
            if not self._move(conn, job.id, target, **values):
                # It moved under us (validated, started, finished): look again.
                current = BatchJobStatus(
                    conn.execute(sa.select(batch_jobs.c.status).where(batch_jobs.c.id == job.id)).scalar_one()
                )
                if current is S.IN_PROGRESS and self._move(conn, job.id, S.STOPPING):
                    return S.STOPPING
                raise ConflictError(f"Batch job '{job.name}' is {current.value} and cannot be stopped now.")
        return target

    def active_jobs(self) -> list[BatchJob]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(batch_jobs).where(
                    batch_jobs.c.status.in_([s.value for s in S if not s.is_terminal()])
                )
            )
            return [_job_from_row(r) for r in rows]

    # -- watched folder -----------------------------------------------------------------

    def watched(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(batch_watch.c.source_key).where(batch_watch.c.source_key.in_(keys)))
            return {r[0] for r in rows}

    def mark_watched(self, key: str) -> bool:
        """Claim a dropped file for submission; False if some server already did (never twice)."""
        with self.db.begin() as conn:
            if conn.execute(
                sa.select(batch_watch.c.source_key).where(batch_watch.c.source_key == key)
            ).first():
                return False
            conn.execute(batch_watch.insert().values(source_key=key, job_id=None, created_at=time.time()))
            return True

    def set_watch_job(self, key: str, job_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(batch_watch.update().where(batch_watch.c.source_key == key).values(job_id=job_id))
