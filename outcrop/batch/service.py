"""The batch service: create, read, list and stop batch inference jobs (what the API and CLI call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from outcrop.batch import events
from outcrop.batch.inputs import parse_location
from outcrop.batch.records import INVOCATION_TYPES
from outcrop.batch.status import BatchJobStatus
from outcrop.batch.store import BatchJob, BatchStore
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.registry import arns
from outcrop.registry.service import Registry
from outcrop.serving.service import Serving
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter, Page, new_id

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
    return service
