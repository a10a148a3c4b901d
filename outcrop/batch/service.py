"""The batch service: create, read, list and stop batch inference jobs (what the API and CLI call)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from outcrop.batch import events
from outcrop.batch.inputs import list_inputs, parse_location
from outcrop.batch.records import INVOCATION_TYPES
from outcrop.batch.status import BatchJobStatus
from outcrop.batch.store import BatchJob, BatchStore
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.registry import arns
from outcrop.registry.service import Registry
from outcrop.serving.service import Serving
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter, Page, new_id

log = logging.getLogger("outcrop.batch")

# Bedrock's bounds of timeoutDurationInHours.
MIN_TIMEOUT_HOURS, MAX_TIMEOUT_HOURS = 24, 168
INPUT_PARAM = "inputDataConfig.s3InputDataConfig.s3Uri"
OUTPUT_PARAM = "outputDataConfig.s3OutputDataConfig.s3Uri"


@dataclass(frozen=True)
class CreateBatchJob:
    job_name: str
    model_id: str
    input_uri: str
    output_uri: str
    role_arn: str | None = None
    client_request_token: str | None = None
    timeout_hours: int | None = None
    invocation_type: str | None = None
    tags: tuple[dict[str, str], ...] = ()
    vpc_config: dict[str, Any] | None = None


class BatchService:
    def __init__(self, config: OutcropConfig, db: Database, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.store = BatchStore(db)
        self.runner: Any = None  # the BatchRunner of this process, when it runs one (woken on changes)

    def wake(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def job_arn(self, job: BatchJob) -> str:
        return events.job_arn(self.config, job.id)

    def create_job(self, request: CreateBatchJob) -> BatchJob:
        arns.check_name(request.job_name, arns.JOB_NAME_RE, "jobName", "my-batch-job-1")
        if request.role_arn is not None and not arns.ROLE_ARN_RE.fullmatch(request.role_arn):
            raise InvalidRequestError(
                f"1 validation error detected: Value {request.role_arn!r} at 'roleArn' is not an IAM role ARN "
                "(arn:aws:iam::123456789012:role/MyRole). Outcrop records the role but does not assume it.",
                param="roleArn",
            )
        invocation_type = request.invocation_type or "InvokeModel"
        if invocation_type not in INVOCATION_TYPES:
            raise InvalidRequestError(
                f"1 validation error detected: Value {invocation_type!r} at 'modelInvocationType' failed to satisfy "
                f"constraint: Member must satisfy enum value set: [{', '.join(INVOCATION_TYPES)}].",
                param="modelInvocationType",
            )
        timeout = request.timeout_hours or self.config.batch.default_timeout_hours
        if request.timeout_hours is not None and not MIN_TIMEOUT_HOURS <= timeout <= MAX_TIMEOUT_HOURS:
            raise InvalidRequestError(
                f"1 validation error detected: Value {timeout} at 'timeoutDurationInHours' failed to satisfy "
                f"constraint: Member must be from {MIN_TIMEOUT_HOURS} to {MAX_TIMEOUT_HOURS}.",
                param="timeoutDurationInHours",
            )
        # Fail before a job exists on a malformed URI, a path outside the allowed roots, or an unknown model.
        parse_location(request.input_uri, self.config, INPUT_PARAM)
        parse_location(request.output_uri, self.config, OUTPUT_PARAM)
        model = self.registry.get_model(request.model_id)
        job = BatchJob(
            id=new_id(),
            name=request.job_name,
            model_id=request.model_id,
            model_key=model.id,
            input_uri=request.input_uri.strip(),
            output_uri=request.output_uri.strip(),
            invocation_type=invocation_type,
            role_arn=request.role_arn,
            client_request_token=request.client_request_token,
            tags=list(request.tags),
            vpc_config=request.vpc_config,
            timeout_hours=timeout,
        )
        job, created = self.store.create_job(job)
        if created:
            events.publish(self.config, job)
            self.wake()
        return job

    def get_job(self, identifier: str) -> BatchJob:
        key = arns.identifier_to_key(identifier, "model-invocation-job", arns.JOB_NAME_RE, "jobIdentifier")
        return self.store.get_job(key)

    def list_jobs(self, flt: ListFilter, status: BatchJobStatus | None = None) -> Page:
        return self.store.list_jobs(flt, status)

    def stop_job(self, identifier: str) -> BatchJob:
        job = self.get_job(identifier)
        self.store.request_stop(job.id)
        job = self.store.get_job(job.id)
        events.publish(self.config, job)
        self.wake()
        return job

    # -- the watched folder ---------------------------------------------------------------

    def scan_watch_folder(self) -> list[BatchJob]:
        """Submit a job for each new ``.jsonl`` in ``<watch_uri>/toprocess/``; outputs go to ``processed/``.

        A file is known by its location, size and modification time (or S3 ETag); its job has a
        name and clientRequestToken derived from that key, so a file is never submitted twice,
        even by two servers at once or across restarts.
        """
        settings = self.config.batch
        if not settings.watch_uri or not settings.watch_model:
            return []
        base = settings.watch_uri.rstrip("/")
        inbox = parse_location(f"{base}/toprocess/", self.config, "batch.watch_uri")
        try:
            files = list_inputs(inbox, self.config)
        except OutcropError:
            return []  # no files (or no folder) yet
        keys = {f"{inbox.uri}{f.name}:{f.size_bytes}:{_version(inbox, f.source)}": f for f in files}
        seen = self.store.watched(keys)
        created: list[BatchJob] = []
        for key, item in keys.items():
            if key in seen:
                continue
            digest = hashlib.sha256(key.encode()).hexdigest()
            stem = re.sub(r"[^a-zA-Z0-9-]+", "-", PurePosixPath(item.name).stem).strip("-")[:40] or "file"
            try:
                job = self.create_job(
                    CreateBatchJob(
                        job_name=f"watch-{stem}-{digest[:10]}",
                        model_id=settings.watch_model,
                        input_uri=f"{inbox.uri}{item.name}",
                        output_uri=f"{base}/processed/",
                        client_request_token=digest[:64],
                    )
                )
            except OutcropError as exc:
                log.warning("watched file not submitted", extra={"file": item.name, "reason": exc.message})
                continue
            self.store.mark_watched(key)
            self.store.set_watch_job(key, job.id)
            created.append(job)
        return created

    async def start(self) -> None:
        if self.runner is not None:
            await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()


def build_batch_service(
    config: OutcropConfig, db: Database, registry: Registry, serving: Serving, *, start_runner: bool = True
) -> BatchService:
    """The batch service and, when this process runs background work, its runner."""
    from outcrop.batch.runner import BatchRunner

    service = BatchService(config, db, registry)
    if start_runner:
        service.runner = BatchRunner(config, service.store, registry, serving)
        service.runner.on_poll = service.scan_watch_folder
    return service


def _version(location: Any, source: str) -> str:
    """What changes when a file is replaced: mtime for local files (S3 keys: their size is enough)."""
    if location.is_s3:
        return "s3"
    import os

    return str(os.stat(source).st_mtime_ns)
