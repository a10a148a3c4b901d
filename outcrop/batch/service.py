"""The batch service: create, read, list and stop batch inference jobs (what the API and CLI call).

Authorization, as Bedrock does it: a job's records invoke its model, so creating a job needs
``bedrock:InvokeModel`` on the model's ARN in the creator's policy (checked here, before the
job exists), and each record checks it again when it runs, against the creator's policy as it
is then (:func:`record_denial`): a creator whose key was deleted, or whose policy no longer
allows the model, gets AccessDenied error lines instead of answers. The creator's principal id
is stored with the job (``owner_id``); rotating a key keeps it. Jobs created with auth off or
by the watched folder have no owner and are not re-checked.

Visibility (:func:`may_access`): a caller sees, gets and stops the jobs it created. Other
principals' jobs (and owner-less ones) need ``outcrop:AccessAllModelInvocationJobs`` on the
job's ARN, which the built-in admin policy grants and read-only and invoke-only do not: a
``bedrock:Get*``/``List*`` grant lets a key call the operations, not read other keys' input
and output locations.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from outcrop.auth import policies
from outcrop.auth.keys import KeyStore, Principal, load_or_create_server_key
from outcrop.batch import events
from outcrop.batch.inputs import list_inputs, parse_location
from outcrop.batch.records import INVOCATION_TYPES
from outcrop.batch.status import BatchJobStatus
from outcrop.batch.store import BatchJob, BatchStore
from outcrop.config import OutcropConfig
from outcrop.errors import AccessDeniedError, ConflictError, InvalidRequestError, OutcropError
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


def may_access(job_owner_id: str | None, job_arn: str, viewer: Principal | None) -> bool:
    """May ``viewer`` (None: auth is off) see or stop this job? Its creator may; others need the admin action."""
    if viewer is None:
        return True
    if job_owner_id is not None and job_owner_id == viewer.id:
        return True
    return policies.evaluate(viewer.policy, policies.ALL_JOBS_ACTION, job_arn)


def record_denial(owner_id: str, owner: Principal | None, model_arn: str) -> str | None:
    """Why the job's records may not invoke the model now (None: they may). ``owner`` as stored now."""
    if owner is None:
        return (
            f"AccessDeniedException: the key that created this job (principal id {owner_id}) has been deleted, "
            f"so its records may no longer invoke {model_arn}. Submit the job again with a current key."
        )
    if not policies.evaluate(owner.policy, policies.BATCH_RECORD_ACTION, model_arn):
        return (
            "AccessDeniedException: "
            + policies.denial(owner.arn, policies.BATCH_RECORD_ACTION, model_arn)
            + ". The job's creator may no longer invoke this model; allow it in the key's policy and "
            "submit the job again."
        )
    return None


class BatchService:
    def __init__(
        self, config: OutcropConfig, db: Database, registry: Registry, keys: KeyStore | None = None
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = BatchStore(db)
        self.keys = keys  # looks up a job's creator when its records run
        self.runner: Any = None  # the BatchRunner of this process, when it runs one (woken on changes)

    def wake(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def job_arn(self, job: BatchJob) -> str:
        return events.job_arn(self.config, job.id)

    def check_create_access(self, owner: Principal, model_id: str) -> None:
        """AccessDenied unless ``owner`` may invoke the model (an unknown one too: no existence leak)."""
        try:
            model_arn = self.registry.model_arn(self.registry.get_model(model_id))
        except OutcropError:
            model_arn = arns.model_arn(self.config.aws, "unknown")
        if not policies.evaluate(owner.policy, policies.BATCH_RECORD_ACTION, model_arn):
            raise AccessDeniedError(
                policies.denial(owner.arn, policies.BATCH_RECORD_ACTION, model_arn)
                + f" (a batch job's records invoke its model '{model_id}'; allow "
                f"{policies.BATCH_RECORD_ACTION} on it in the key's policy)"
            )

    def create_job(self, request: CreateBatchJob, owner: Principal | None = None) -> BatchJob:
        """Create a job; ``owner`` (None: auth is off or the server itself) must be allowed to invoke the model."""
        if owner is not None:
            self.check_create_access(owner, request.model_id)
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
            owner_id=owner.id if owner is not None else None,
        )
        job, created = self.store.create_job(job)
        if not created and job.owner_id != (owner.id if owner is not None else None):
            # An idempotent repeat returns the job only to the caller that created it.
            raise ConflictError(
                f"A batch inference job named '{job.name}' already exists. Choose another jobName "
                "(job names are unique, including finished jobs)."
            )
        if created:
            events.publish(self.config, job)
            self.wake()
        return job

    def get_job(self, identifier: str, viewer: Principal | None = None, action: str = "") -> BatchJob:
        """A job by name or ARN; AccessDenied when ``viewer`` may not see it (see :func:`may_access`)."""
        key = arns.identifier_to_key(identifier, "model-invocation-job", arns.JOB_NAME_RE, "jobIdentifier")
        job = self.store.get_job(key)
        if not may_access(job.owner_id, self.job_arn(job), viewer):
            assert viewer is not None
            raise AccessDeniedError(
                policies.denial(viewer.arn, action or "bedrock:GetModelInvocationJob", self.job_arn(job))
                + f" (the job was created by another principal; only its creator and principals allowed "
                f"{policies.ALL_JOBS_ACTION} may use it)"
            )
        return job

    def list_jobs(
        self, flt: ListFilter, status: BatchJobStatus | None = None, viewer: Principal | None = None
    ) -> Page:
        """Jobs ``viewer`` may see: all of them with the admin action on every job ARN, else its own."""
        every_job = events.job_arn(self.config, "*")
        if viewer is None or policies.evaluate(viewer.policy, policies.ALL_JOBS_ACTION, every_job):
            return self.store.list_jobs(flt, status)
        return self.store.list_jobs(flt, status, owner_id=viewer.id)

    def record_denial(self, job: BatchJob, model_arn: str) -> str | None:
        """Why this job's records may not run now (its creator's current policy); None when they may."""
        if job.owner_id is None:
            return None
        assert self.keys is not None, "build_batch_service gives every service a key store"
        return record_denial(job.owner_id, self.keys.by_id(job.owner_id), model_arn)

    def stop_job(self, identifier: str, viewer: Principal | None = None) -> BatchJob:
        job = self.get_job(identifier, viewer, "bedrock:StopModelInvocationJob")
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
    config: OutcropConfig,
    db: Database,
    registry: Registry,
    serving: Serving,
    *,
    start_runner: bool = True,
    keys: KeyStore | None = None,
) -> BatchService:
    """The batch service and, when this process runs background work, its runner.

    ``keys``: the server's key store (its cache is cleared when a key is deleted here, so
    records of that key's jobs stop at once); one is opened from the server key when not given.
    """
    from outcrop.batch.runner import BatchRunner

    if keys is None:
        keys = KeyStore(db, load_or_create_server_key(config.server_key_path))
    service = BatchService(config, db, registry, keys)
    if start_runner:
        service.runner = BatchRunner(config, service.store, registry, serving)
        service.runner.record_denial = service.record_denial
        service.runner.on_poll = service.scan_watch_folder
    return service


def _version(location: Any, source: str) -> str:
    """What changes when a file is replaced: mtime for local files (S3 keys: their size is enough)."""
    if location.is_s3:
        return "s3"
    import os

    return str(os.stat(source).st_mtime_ns)
