"""Runs batch jobs in the background: validate -> wait for a slot -> run the records -> finish.

Every server process runs one ``BatchRunner`` on the event loop that serves requests (its
records go through :class:`~outcrop.serving.service.Serving` with the batch priority). It

- claims Submitted jobs and validates them (a thread; the lease is kept fresh meanwhile);
- starts Scheduled jobs that have a slot (:func:`outcrop.batch.slots.jobs_to_start`, one
  locked transaction in the store), and expires those past their timeout;
- takes over running jobs whose server died (their lease ran out) and resumes them.

It wakes at once on every state change made in this process (a job created, validated,
stopped or finished), and every ``batch.poll_seconds`` for changes made by other servers.

A running job keeps up to ``(max_concurrency_per_copy - online_reserved_slots_per_copy) x
max_copies`` records of its model in flight (one semaphore per model, shared by that model's
jobs), so the copies' continuous batches stay full while online requests still find a free
slot (the router never gives batch records a copy's reserved slots), go first when they
wait, and, inside the copy, run ahead of batch sequences (the ``priority`` field: see
:mod:`outcrop.serving.routing`). Finished records are checkpointed (output lines fsynced first, then the
store) every ``checkpoint_interval_seconds`` or ``checkpoint_records``; on resume the
output files are truncated to the checkpoint and only unrecorded records run again, so
the outputs hold every input record exactly once.

Before it hands out a record, the runner asks ``record_denial`` (the batch service's) whether
the job's creator may still invoke the model, at most every ``ACCESS_RECHECK_SECONDS``: a
record of a creator who lost that right, or whose key was deleted, is not sent to a copy; its
output line is an AccessDenied error (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop.auth.keys import KEY_CACHE_SECONDS
from outcrop.batch import events
from outcrop.batch.inputs import LineCheck, Record, list_inputs, parse_location, read_records, snapshot
from outcrop.batch.outputs import OutputWriter, dumps_line
from outcrop.batch.records import Outcome, RecordCall
from outcrop.batch.status import BatchJobStatus
from outcrop.batch.store import BatchFile, BatchJob, BatchStore, Checkpoint, crashed_too_often
from outcrop.config import OutcropConfig
from outcrop.envs import worker_id_hint
from outcrop.errors import (
    ConflictError,
    InternalError,
    InvalidRequestError,
    NotFoundError,
    OutcropError,
    QuotaExceededError,
)
from outcrop.registry.service import Registry
from outcrop.serving.service import ColdStartPolicy, Serving
from outcrop.wakeup import set_event

log = logging.getLogger("outcrop.batch")
S = BatchJobStatus

# How long stop() lets running jobs checkpoint and hand their claims back.
STOP_GRACE_SECONDS = 10.0
# How often a running job re-reads its creator's policy: as long as a gateway caches a key, so a
# deleted key or a narrowed policy stops batch records as soon as it stops online requests.
ACCESS_RECHECK_SECONDS = KEY_CACHE_SECONDS


class _LostClaim(Exception):
    """This server no longer holds the job (another one took it over); stop quietly."""


@dataclass(eq=False)
class _Run:
    """One job being run by this server."""

    job: BatchJob
    writer: OutputWriter
    pending: list[Outcome] = field(default_factory=list)
    in_flight: set[asyncio.Task[Outcome]] = field(default_factory=set)
    flush_now: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopping: bool = False  # a user asked to stop: finish in-flight records, then Stopped
    expired: bool = False  # the job's timeout passed: PartiallyCompleted
    lost: bool = False
    dispatched: bool = False  # every record was handed out and finished: the checkpointer's last round
    first_error: str | None = None


class BatchRunner:
    def __init__(
        self,
        config: OutcropConfig,
        store: BatchStore,
        registry: Registry,
        serving: Serving,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.settings = config.batch
        self.store = store
        self.registry = registry
        self.serving = serving
        self.guardrails: Any = None  # outcrop.guardrails.service.GuardrailService, set by the app factory
        self.worker_id = worker_id or worker_id_hint()
        self.lease_seconds = config.store.job_lease_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._validating: dict[str, asyncio.Task[None]] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._closing = False
        # Called (in a thread) on every poll: the watched folder's scan.
        self.on_poll: Callable[[], object] | None = None
        # (job, model ARN) -> why its records may not run now, or None; called in a thread.
        self.record_denial: Callable[[BatchJob, str], str | None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._closing = False
        self._main = asyncio.create_task(self._main_loop(), name="outcrop-batch-runner")

    def wake(self) -> None:
        """Look for work now; safe to call from any thread."""
        set_event(self._loop, self._wake)

    async def stop(self) -> None:
        """Checkpoint running jobs and hand their claims back, so a restart resumes them at once."""
        self._closing = True
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        tasks = [*self._jobs.values(), *self._validating.values()]
        for run_task in tasks:
            run_task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)

    async def _main_loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                await self.poll_once()
            except Exception:
                log.exception("batch runner poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            self._wake.clear()

    async def poll_once(self) -> None:
        if self.on_poll is not None:
            try:
                await asyncio.to_thread(self.on_poll)
            except Exception:
                log.exception("watched folder scan failed; retrying at the next poll")
        for job_id in await asyncio.to_thread(
            self.store.claim_for_validation, self.worker_id, self.lease_seconds
        ):
            self._spawn(self._validating, job_id, self._validate(job_id))
        started, expired = await asyncio.to_thread(
            self.store.allocate_slots, self.worker_id, self.settings.max_running_jobs_per_model
        )
        for job_id in expired:
            await self._publish(job_id, S.EXPIRED)
        for job_id in started:
            await self._publish(job_id, S.IN_PROGRESS)
            self._spawn(self._jobs, job_id, self._run_job(job_id))
        for job_id in await asyncio.to_thread(self.store.claimable_running, self.lease_seconds):
            if job_id in self._jobs:
                continue
            if await asyncio.to_thread(self.store.claim_running, job_id, self.worker_id, self.lease_seconds):
                log.info("resuming a batch job whose server stopped", extra={"job_id": job_id})
                self._spawn(self._jobs, job_id, self._run_job(job_id))

    def _spawn(self, registry: dict[str, asyncio.Task[None]], job_id: str, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"outcrop-batch-{job_id}")  # type: ignore[arg-type]
        registry[job_id] = task

        def done(_t: asyncio.Task[None]) -> None:
            registry.pop(job_id, None)
            self.wake()  # a slot may have freed, or a validated job may start

        task.add_done_callback(done)

    async def _publish(self, job_id: str, status: BatchJobStatus) -> None:
        try:
            job = await asyncio.to_thread(self.store.get_job, job_id)
        except NotFoundError:
            return
        events.publish(self.config, job, status.value)

    # -- validation ---------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        return self.config.resolved_data_dir / "batch" / job_id

    async def _validate(self, job_id: str) -> None:
        await self._publish(job_id, S.VALIDATING)
        beat = asyncio.create_task(self._heartbeat(job_id))
        try:
            job = await asyncio.to_thread(self.store.get_job, job_id)
            if crashed := crashed_too_often(job, self.settings.max_crashes):
                raise InternalError(crashed)
            files = await asyncio.to_thread(self._validate_sync, job)
        except asyncio.CancelledError:
            # Server shutdown: hand the job back so the restart validates it at once (no crash).
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(self.store.release_validation, job_id, self.worker_id))
            raise
        except Exception as exc:
            # Every failure ends the job: a validation that dies leaves a claim that is retried forever.
            beat.cancel()
            if isinstance(exc, OutcropError):
                message = exc.message
            elif isinstance(exc, OSError):
                message = (
                    f"Could not read the input: {exc.strerror or exc} ({exc.filename or 'unknown file'})."
                )
            else:
                log.exception("batch job validation crashed", extra={"job_id": job_id})
                message = (
                    f"Validating the input failed unexpectedly ({type(exc).__name__}: {str(exc)[:300]}). "
                    "This is a bug; please report it with the server log."
                )
            if await asyncio.to_thread(
                self.store.move, job_id, S.FAILED, worker=self.worker_id, message=message
            ):
                await self._publish(job_id, S.FAILED)
            return
        finally:
            beat.cancel()
        if await asyncio.to_thread(self.store.finish_validation, job_id, self.worker_id, files):
            await self._publish(job_id, S.SCHEDULED)
        self.wake()

    async def _heartbeat(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 4)
            await asyncio.to_thread(self.store.heartbeat, job_id, self.worker_id)

    def _validate_sync(self, job: BatchJob) -> list[BatchFile]:
        """Snapshot and check every file and line; raises OutcropError with every problem found."""
        limits = self.settings
        location = parse_location(job.input_uri, self.config, "inputDataConfig.s3InputDataConfig.s3Uri")
        items = list_inputs(location, self.config)
        problems = LineCheck(limits, job.id)
        total_bytes = sum(i.size_bytes for i in items)
        if total_bytes > limits.max_job_bytes:
            raise QuotaExceededError(
                f"The input holds {total_bytes:,} bytes in {len(items)} file(s); the limit per job is "
                f"{limits.max_job_bytes:,} (OUTCROP_BATCH__MAX_JOB_BYTES). Split it into several jobs.",
                quota="max_job_bytes",
                limit=limits.max_job_bytes,
            )
        folder = self._job_dir(job.id) / "input"
        files: list[BatchFile] = []
        for index, item in enumerate(items):
            if item.size_bytes > limits.max_file_bytes:
                problems.problem(
                    f"{item.name}: {item.size_bytes:,} bytes; the limit per file is {limits.max_file_bytes:,} "
                    "(OUTCROP_BATCH__MAX_FILE_BYTES). Split the file."
                )
                continue
            dest = folder / f"{index}.jsonl"
            sha = snapshot(location, item, dest, self.config)
            count = problems.check_file(item.name, dest, index)
            files.append(BatchFile(index, item.name, item.size_bytes, sha, count))
        total = sum(f.record_count for f in files)
        if total > limits.max_records_per_job:
            problems.problem(
                f"The input has {total:,} records; the limit per job is {limits.max_records_per_job:,} "
                "(OUTCROP_BATCH__MAX_RECORDS_PER_JOB). Split it into several jobs."
            )
        if not problems.problem_count and total < limits.min_records_per_job:
            problems.problem(
                f"The input has {total} record(s); a job needs at least {limits.min_records_per_job} "
                "(OUTCROP_BATCH__MIN_RECORDS_PER_JOB)."
            )
        if problems.problem_count:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidRequestError(problems.message())
        return files

    def _ensure_snapshots(self, job: BatchJob, files: list[BatchFile]) -> dict[int, Path]:
        """The validated input of each file; fetched again (and checked by sha256) if this server lacks it."""
        folder = self._job_dir(job.id) / "input"
        paths = {f.file_index: folder / f"{f.file_index}.jsonl" for f in files}
        missing = [f for f in files if not paths[f.file_index].exists()]
        if missing:
            location = parse_location(job.input_uri, self.config, "inputDataConfig.s3InputDataConfig.s3Uri")
            items = {i.name: i for i in list_inputs(location, self.config)}
            for f in missing:
                item = items.get(f.name)
                sha = snapshot(location, item, paths[f.file_index], self.config) if item else None
                if sha != f.sha256:
                    paths[f.file_index].unlink(missing_ok=True)
                    raise ConflictError(
                        f"The input file {f.name} changed (or vanished) since the job was validated, and this "
                        "server has no copy of the validated one. Submit the job again."
                    )
        return paths

    # -- running ------------------------------------------------------------------------

    def _semaphore(self, model_key: str, limit: int) -> asyncio.Semaphore:
        sem = self._semaphores.get(model_key)
        if sem is None:
            sem = self._semaphores[model_key] = asyncio.Semaphore(limit)
        return sem

    async def _run_job(self, job_id: str) -> None:
        run: _Run | None = None
        try:
            run = await self._prepare(job_id)
            if run is not None:
                await self._run_records(run)
                await self._finish(run)
        except _LostClaim:
            log.warning("batch job taken over by another server", extra={"job_id": job_id})
        except asyncio.CancelledError:
            # Server shutdown: keep what finished, hand the claim back for the restart.
            if run is not None and not run.lost:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._checkpoint(run))
                run.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.heartbeat, job_id, self.worker_id, release=True)
            raise
        except Exception as exc:
            if isinstance(exc, OutcropError):
                message = exc.message
            else:
                log.exception("batch job crashed", extra={"job_id": job_id})
                message = f"The job failed unexpectedly ({type(exc).__name__}: {exc}). This is a bug; please report it."
            if run is not None:
                run.writer.close()
            if await asyncio.to_thread(
                self.store.move, job_id, S.FAILED, worker=self.worker_id, message=message
            ):
                await self._publish(job_id, S.FAILED)

    async def _prepare(self, job_id: str) -> _Run | None:
        job = await asyncio.to_thread(self.store.get_job, job_id)
        if crashed := crashed_too_often(job, self.settings.max_crashes):
            target = S.STOPPED if job.status is S.STOPPING else S.FAILED
            if await asyncio.to_thread(
                self.store.move, job.id, target, worker=self.worker_id, message=crashed
            ):
                await self._publish(job.id, target)
            return None
        files = await asyncio.to_thread(self.store.files, job_id)
        output = parse_location(job.output_uri, self.config, "outputDataConfig.s3OutputDataConfig.s3Uri")
        writer = OutputWriter(job, files, output, self.config)
        lost = await asyncio.to_thread(writer.open)
        if lost:
            writer.close()
            raise InternalError(
                f"The output written so far for {len(lost)} file(s) is not on this server (it was staged on "
                "another one for an s3:// upload). Submit the job again."
            )
        return _Run(job=job, writer=writer)

    async def _run_records(self, run: _Run) -> None:
        job = run.job
        files = list(run.writer.files.values())
        paths = await asyncio.to_thread(self._ensure_snapshots, job, files)
        done = await asyncio.to_thread(self.store.done_records, job.id)
        try:
            model = await asyncio.to_thread(self.registry.get_model, job.model_key)
        except NotFoundError:
            raise NotFoundError(
                "Model",
                job.model_id,
                "It was deleted after the job was created; import it again and submit a new job.",
            ) from None
        spec = self.serving.spec_for(model)
        per_copy = max(1, spec.max_concurrency_per_copy - self.settings.online_reserved_slots_per_copy)
        limit = self.settings.max_in_flight_per_model or per_copy * spec.max_copies
        sem = self._semaphore(model.id, limit)
        call = RecordCall(
            serving=self.serving,
            model_key=model.id,
            model_name=model.name,
            chat_capable=model.instruct_supported,
            invocation_type=job.invocation_type,
            cold_start=ColdStartPolicy(
                wait=True, max_wait_seconds=self.config.serving.cold_start_max_wait_seconds
            ),
            deadline_seconds=self.settings.record_deadline_seconds,
            max_attempts=self.settings.record_max_attempts,
            guardrails=self.guardrails,
            embedding_model=model if model.is_embedding else None,
        )
        run.stopping = job.status is S.STOPPING
        model_arn = self.registry.model_arn(model)
        denial: str | None = None
        checked_at = -ACCESS_RECHECK_SECONDS
        checkpointer = asyncio.create_task(self._checkpoint_loop(run))
        try:
            for f in files:
                for record in read_records(paths[f.file_index], job.id, f.file_index):
                    if (record.file_index, record.line_no) in done:
                        continue
                    if time.time() >= job.expires_at:
                        run.expired = True
                    if run.stopping or run.expired or run.lost:
                        break
                    await sem.acquire()
                    if run.stopping or run.lost:
                        sem.release()
                        break
                    if (
                        self.record_denial is not None
                        and time.monotonic() - checked_at >= ACCESS_RECHECK_SECONDS
                    ):
                        denial = await asyncio.to_thread(self.record_denial, job, model_arn)
                        checked_at = time.monotonic()
                    if denial is not None:
                        task = asyncio.create_task(self._denied(record, denial))
                    else:
                        task = asyncio.create_task(self._safe_run(call, record))
                    run.in_flight.add(task)
                    task.add_done_callback(lambda t, sem=sem: self._record_done(run, t, sem))  # type: ignore[misc]
                if run.stopping or run.expired or run.lost:
                    break
            while run.in_flight:
                await asyncio.wait(list(run.in_flight))
        except asyncio.CancelledError:
            for task in run.in_flight:
                task.cancel()
            raise
        except BaseException:
            checkpointer.cancel()
            raise
        # The checkpointer writes what is left and exits (never cancelled mid-write).
        run.dispatched = True
        run.flush_now.set()
        await checkpointer

    async def _denied(self, record: Record, message: str) -> Outcome:
        line = {
            "recordId": record.record_id,
            "modelInput": record.model_input,
            "error": {"errorCode": 403, "errorMessage": message},
        }
        return Outcome(record, line, False)

    async def _safe_run(self, call: RecordCall, record: object) -> Outcome:
        assert isinstance(record, Record)
        try:
            return await call.run(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch record crashed", extra={"record_id": record.record_id})
            line = {
                "recordId": record.record_id,
                "modelInput": record.model_input,
                "error": {
                    "errorCode": 500,
                    "errorMessage": f"Internal error ({type(exc).__name__}); please report it.",
                },
            }
            return Outcome(record, line, False)

    def _record_done(self, run: _Run, task: asyncio.Task[Outcome], sem: asyncio.Semaphore) -> None:
        sem.release()
        run.in_flight.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        outcome = task.result()
        if not outcome.ok and run.first_error is None:
            run.first_error = str(outcome.line.get("error", {}).get("errorMessage", ""))[:300]
        run.pending.append(outcome)
        if len(run.pending) >= self.settings.checkpoint_records:
            run.flush_now.set()

    async def _checkpoint_loop(self, run: _Run) -> None:
        interval = min(self.settings.checkpoint_interval_seconds, self.lease_seconds / 4)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.flush_now.wait(), timeout=interval)
            run.flush_now.clear()
            last = run.dispatched
            await self._checkpoint(run)
            if last:
                return

    async def _checkpoint(self, run: _Run) -> None:
        async with run.lock:
            batch, run.pending = run.pending, []
            lines: dict[int, list[bytes]] = defaultdict(list)
            for outcome in batch:
                lines[outcome.record.file_index].append(dumps_line(outcome.line))
            cp_records = [(o.record.file_index, o.record.line_no, o.ok) for o in batch]
            in_tokens = sum(o.input_tokens for o in batch)
            out_tokens = sum(o.output_tokens for o in batch)

            def commit() -> BatchJobStatus | None:
                sizes = run.writer.write(lines)
                return self.store.checkpoint(
                    run.job.id, self.worker_id, Checkpoint(cp_records, sizes, in_tokens, out_tokens)
                )

            # The write + commit runs to its end even if this task is cancelled (shutdown): the
            # lock is held until it is done, so checkpoints never overlap or land after the finish.
            future = asyncio.ensure_future(asyncio.to_thread(commit))
            try:
                status = await asyncio.shield(future)
            except asyncio.CancelledError:
                await asyncio.wait([future])
                raise
            if status is None:
                run.lost = True
                raise _LostClaim(run.job.id)
            if status is S.STOPPING and not run.stopping:
                run.stopping = True
                log.info("stopping a batch job", extra={"job_id": run.job.id})

    async def _finish(self, run: _Run) -> None:
        job = await asyncio.to_thread(self.store.get_job, run.job.id)
        message: str | None = None
        if run.stopping or job.status is S.STOPPING:
            target = S.STOPPED
            message = f"Stopped by a user after {job.processed_records} of {job.total_records} records."
        elif job.processed_records < job.total_records:
            target = S.PARTIALLY_COMPLETED
            message = (
                f"The job's timeout ({job.timeout_hours} h) passed after {job.processed_records} of "
                f"{job.total_records} records; the outputs hold those. Submit the rest as a new job."
            )
        elif job.success_records == 0 and job.error_records > 0:
            target = S.FAILED
            message = (
                f"All {job.error_records} records failed; the output has an error line for each. First error: "
                f"{run.first_error or 'see the output file'}"
            )
        else:
            target = S.COMPLETED
        await asyncio.to_thread(run.writer.finish, job)
        if await asyncio.to_thread(self.store.move, job.id, target, worker=self.worker_id, message=message):
            await self._publish(job.id, target)
            shutil.rmtree(self._job_dir(job.id), ignore_errors=True)
