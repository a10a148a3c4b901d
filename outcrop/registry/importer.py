"""Runs import jobs in the background: fetch + hash -> validate -> store -> register.

Every server process runs one ``ImportWorker``. It claims in-progress jobs nobody holds
(new ones, and ones whose server died: their lease ran out), runs them, and keeps the
lease fresh while it works. Registration is one transaction, so a crash at any point
leaves either no model or a complete one; a job that was interrupted is run again from
the start (blobs already stored are not copied twice) up to ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from outcrop.envs import worker_id_hint
from outcrop.errors import ConflictError, InternalError, ModelValidationError, OutcropError
from outcrop.registry.service import Registry
from outcrop.registry.sources import open_source
from outcrop.registry.validation import ModelFacts, validate_model_folder, warm_up_validation
from outcrop.store.imports import ImportedModel, ImportJob, ImportPhase, ModelFile, new_id

log = logging.getLogger("outcrop.import")

# An import interrupted this many times (server crashes mid-import) is failed rather than
# retried forever: something about it (size, a hanging source) is likely to blame.
MAX_ATTEMPTS = 3
# Progress is written at most this often: often enough for a live progress bar, rare
# enough that a 1 GB import does a handful of database writes, not thousands.
PROGRESS_INTERVAL_SECONDS = 0.5
FAILURE_MESSAGE_MAX_CHARS = 2048


# A model tag that allows `dimensions` truncation of an embedding model whose sentence-transformers
# config does not say it was trained for it (Matryoshka): {"key": "outcrop:matryoshka", "value": "true"}.
MATRYOSHKA_TAG = "outcrop:matryoshka"


def _truncatable(facts: ModelFacts, tags: list[dict[str, str]]) -> bool:
    if facts.embedding is None:
        return False
    tagged = {t.get("key"): str(t.get("value", "")).lower() for t in tags}.get(MATRYOSHKA_TAG)
    if tagged is not None:
        return tagged in ("true", "1", "yes")
    return facts.embedding.truncatable


class LostClaimError(Exception):
    """This process no longer holds the job (another server took it over); stop quietly."""


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, OutcropError):
        text = exc.message
    elif isinstance(exc, OSError):
        text = (
            f"Could not read or write a model file: {exc.strerror or exc} ({exc.filename or 'unknown file'})."
        )
    else:
        text = f"Import failed unexpectedly ({type(exc).__name__}: {exc}). This is a bug; please report it."
    if len(text) > FAILURE_MESSAGE_MAX_CHARS:
        text = text[: FAILURE_MESSAGE_MAX_CHARS - 40].rsplit("\n", 1)[0] + "\n- ... (more problems truncated)"
    return text


class ImportWorker:
    """Claims and runs import jobs on a small thread pool."""

    def __init__(
        self, registry: Registry, *, poll_seconds: float = 1.0, worker_id: str | None = None
    ) -> None:
        self.registry = registry
        self.config = registry.config
        self.worker_id = worker_id or worker_id_hint()
        self.poll_seconds = poll_seconds
        self.lease_seconds = self.config.store.job_lease_seconds
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.registry.max_concurrent_import_jobs, thread_name_prefix="import"
        )
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="import-worker", daemon=True)
        self._thread.start()
        threading.Thread(target=self._heartbeat_loop, name="import-heartbeat", daemon=True).start()
        # Validation needs transformers' model classes; importing them takes seconds, so do it now
        # rather than inside the first import a user waits on.
        threading.Thread(target=warm_up_validation, name="import-warmup", daemon=True).start()

    def _heartbeat_loop(self) -> None:
        """Keep the leases of running jobs fresh, also through long steps that report no progress."""
        while not self._stop.wait(self.lease_seconds / 3):
            with self._lock:
                running = list(self._running)
            for job_id in running:
                try:
                    self.registry.jobs.update_progress(job_id, self.worker_id)
                except Exception:
                    log.exception("import heartbeat failed", extra={"job_id": job_id})

    def wake(self) -> None:
        """Look for work now (a job was just created)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("import worker poll failed; retrying")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def poll_once(self) -> list[str]:
        """Claim every claimable job there is room for and start it; returns the claimed ids."""
        started = []
        for job_id in self.registry.jobs.claimable_job_ids(self.lease_seconds):
            with self._lock:
                if (
                    len(self._running) >= self.config.registry.max_concurrent_import_jobs
                    or job_id in self._running
                ):
                    continue
            if not self.registry.jobs.claim(job_id, self.worker_id, self.lease_seconds):
                continue
            with self._lock:
                self._running.add(job_id)
            self._pool.submit(self._run_guarded, job_id)
            started.append(job_id)
        return started

    def _run_guarded(self, job_id: str) -> None:
        try:
            self.run(job_id)
        finally:
            with self._lock:
                self._running.discard(job_id)

    # -- the pipeline -----------------------------------------------------------------

    def run(self, job_id: str) -> None:
        """Run a job this worker has claimed, to Completed or Failed."""
        jobs = self.registry.jobs
        job = jobs.get_job(job_id)
        # One folder per attempt: an earlier holder that lost its claim may still be cleaning up its own.
        for stale in self.registry.store.staging_root.glob(f"{job.id}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = self.registry.store.staging_root / f"{job.id}.{job.attempts}.{uuid.uuid4().hex[:8]}"
        log.info("import started", extra={"job": job.name, "job_id": job.id, "attempt": job.attempts})
        try:
            if job.attempts > MAX_ATTEMPTS:
                raise InternalError(
                    f"The import was interrupted {job.attempts - 1} times (server restarts) and is not retried "
                    "again. Create a new import job."
                )
            model = self._import(job, staging)
            log.info("import completed", extra={"job": job.name, "job_id": job.id, "model_id": model.id})
        except LostClaimError:
            log.warning("import job taken over by another server", extra={"job_id": job.id})
        except Exception as exc:
            message = _failure_message(exc)
            if not isinstance(exc, OutcropError | OSError):
                log.exception("import crashed", extra={"job_id": job.id})
            jobs.fail(job.id, message, worker=self.worker_id)
            log.info("import failed", extra={"job": job.name, "job_id": job.id, "reason": message})
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _progress(self, job: ImportJob, **values: object) -> None:
        if not self.registry.jobs.update_progress(job.id, self.worker_id, **values):
            raise LostClaimError(job.id)
        if self._stop.is_set():
            raise LostClaimError(job.id)

    def _import(self, job: ImportJob, staging: Path) -> ImportedModel:
        source = open_source(job.source_uri, self.config)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)

        files = source.list_files()
        total = sum(f.size_bytes for f in files)
        limit = self.config.registry.max_model_bytes
        if total > limit:
            raise ModelValidationError(
                [
                    f"The model folder holds {total:,} bytes; the limit is {limit:,} (OUTCROP_REGISTRY__MAX_MODEL_BYTES)."
                ]
            )
        self._progress(
            job,
            phase=ImportPhase.FETCHING,
            bytes_total=total,
            files_total=len(files),
            bytes_done=0,
            files_done=0,
        )

        done = 0
        last_write = time.monotonic()
        hashes: dict[str, str] = {}

        def on_bytes(n: int) -> None:
            nonlocal done, last_write
            done += n
            now = time.monotonic()
            if now - last_write >= PROGRESS_INTERVAL_SECONDS:
                last_write = now
                self._progress(job, bytes_done=done)

        for index, f in enumerate(files):
            hashes[f.path] = source.fetch(f.path, staging / f.path, on_bytes)
            self._progress(job, bytes_done=done, files_done=index + 1)

        self._progress(job, phase=ImportPhase.VALIDATING)
        facts = validate_model_folder(staging, self.config.registry, files=[f.path for f in files])

        self._progress(job, phase=ImportPhase.STORING)
        sizes = {f.path: f.size_bytes for f in files}
        kept = [ModelFile(path, hashes[path], sizes[path]) for path in facts.files]
        for entry in kept:
            self.registry.store.put(staging / entry.path, entry.sha256)

        model = ImportedModel(
            id=new_id(),
            name=job.imported_model_name,
            source_uri=job.source_uri,
            architecture=facts.architecture,
            model_type=facts.model_type,
            parameter_count=facts.parameter_count,
            dtype=facts.dtype,
            context_length=facts.context_length,
            size_bytes=sum(e.size_bytes for e in kept),
            instruct_supported=facts.instruct_supported,
            memory_estimate_bytes=facts.memory_estimate_bytes,
            job_id=job.id,
            job_name=job.name,
            tags=job.model_tags,
            kms_key_id=job.kms_key_id,
            kind=facts.kind,
            embedding_dimension=facts.embedding.dimension if facts.embedding else None,
            embedding_pooling=facts.embedding.pooling if facts.embedding else None,
            embedding_truncatable=_truncatable(facts, job.model_tags),
        )
        # A blob may have been garbage-collected by a concurrent delete since put(): re-check.
        missing = [e for e in kept if not self.registry.store.has_blob(e.sha256)]
        if missing:
            raise ConflictError(
                f"{len(missing)} stored file(s) vanished during the import (a concurrent delete); run the import again."
            )
        try:
            self.registry.jobs.complete(job.id, self.worker_id, model, kept)
        except BaseException:
            # Nothing was registered: drop the blobs this import added that no model uses.
            jobs = self.registry.jobs
            self.registry.store.delete_blobs(e.sha256 for e in kept if not jobs.blob_is_referenced(e.sha256))
            raise
        self.registry.store.write_manifest(model.id, model.name, kept)
        return model

    def release_claims(self) -> None:
        """On graceful shutdown: let another server (or our restart) pick our jobs up at once."""
        with self._lock:
            running = list(self._running)
        for job_id in running:
            self.registry.jobs.update_progress(
                job_id, self.worker_id, claimed_by=None, phase=ImportPhase.QUEUED
            )
