"""Bedrock control plane: batch inference jobs (thin: parse, call the batch service, translate).

Shapes of botocore's bedrock 2023-04-20 model: CreateModelInvocationJob, GetModelInvocationJob,
ListModelInvocationJobs (the path is plural), StopModelInvocationJob.

Who may do what (the rules live in :mod:`outcrop.batch.service`): creating a job needs
``bedrock:InvokeModel`` on its model; a caller sees and stops only the jobs it created unless
its policy allows ``outcrop:AccessAllModelInvocationJobs`` (admins).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from outcrop.api.bedrock.protocol import (
    Tag,
    VpcConfig,
    drop_none,
    iso8601,
    parse_enum,
    parse_max_results,
    parse_sort,
    parse_timestamp,
)
from outcrop.api.deps import Services, get_services, parse_body
from outcrop.auth.guard import ANONYMOUS, AuthContext
from outcrop.auth.keys import Principal
from outcrop.batch.service import BatchService, CreateBatchJob
from outcrop.batch.status import BatchJobStatus
from outcrop.batch.store import BatchJob
from outcrop.errors import InternalError
from outcrop.store.imports import ListFilter

router = APIRouter(tags=["bedrock batch inference"])

SERVICE_KEY = "batch"  # Services.extra key of the BatchService


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3InputDataConfig(_Wire):
    s3Uri: str = Field(min_length=1, max_length=1024)
    s3InputFormat: str | None = None
    s3BucketOwner: str | None = None


class InputDataConfig(_Wire):
    s3InputDataConfig: S3InputDataConfig


class S3OutputDataConfig(_Wire):
    s3Uri: str = Field(min_length=1, max_length=1024)
    s3EncryptionKeyId: str | None = None
    s3BucketOwner: str | None = None


class OutputDataConfig(_Wire):
    s3OutputDataConfig: S3OutputDataConfig


class CreateModelInvocationJobRequest(_Wire):
    jobName: str
    roleArn: str | None = None
    clientRequestToken: str | None = Field(None, min_length=1, max_length=256)
    modelId: str = Field(min_length=1, max_length=2048)
    inputDataConfig: InputDataConfig
    outputDataConfig: OutputDataConfig
    vpcConfig: VpcConfig | None = None
    timeoutDurationInHours: int | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=200)
    modelInvocationType: str | None = None


def batch_service(services: Services) -> BatchService:
    service = services.extra.get(SERVICE_KEY)
    if service is None:
        raise InternalError("Batch inference is not set up on this server; see the server log.")
    assert isinstance(service, BatchService)
    return service


def caller(request: Request) -> Principal | None:
    """The authenticated principal; None when auth is off (everyone is the admin then)."""
    auth: AuthContext | None = getattr(request.state, "auth", None)
    return None if auth is None or auth.principal is ANONYMOUS else auth.principal


def job_body(service: BatchService, job: BatchJob) -> dict[str, Any]:
    return drop_none(
        {
            "jobArn": service.job_arn(job),
            "jobName": job.name,
            "modelId": job.model_id,
            "clientRequestToken": job.client_request_token,
            "roleArn": job.role_arn or "",
            "status": job.status.value,
            "message": job.message,
            "submitTime": iso8601(job.created_at),
            "lastModifiedTime": iso8601(job.updated_at),
            "endTime": iso8601(job.ended_at),
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "vpcConfig": job.vpc_config,
            "timeoutDurationInHours": job.timeout_hours,
            "jobExpirationTime": iso8601(job.expires_at),
            "modelInvocationType": job.invocation_type,
            "totalRecordCount": job.total_records,
            "processedRecordCount": job.processed_records,
            "successRecordCount": job.success_records,
            "errorRecordCount": job.error_records,
            # Outcrop's additions (clients ignore members they do not know): the manifest's token counts.
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
    )


@router.post("/model-invocation-job", summary="CreateModelInvocationJob")
async def create_model_invocation_job(
    request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = await parse_body(request, CreateModelInvocationJobRequest)
    service = batch_service(services)
    job = service.create_job(
        CreateBatchJob(
            job_name=body.jobName,
            model_id=body.modelId,
            input_uri=body.inputDataConfig.s3InputDataConfig.s3Uri,
            output_uri=body.outputDataConfig.s3OutputDataConfig.s3Uri,
            role_arn=body.roleArn,
            client_request_token=body.clientRequestToken,
            timeout_hours=body.timeoutDurationInHours,
            invocation_type=body.modelInvocationType,
            tags=tuple(t.model_dump() for t in body.tags),
            vpc_config=body.vpcConfig.model_dump() if body.vpcConfig else None,
        ),
        owner=caller(request),
    )
    return JSONResponse({"jobArn": service.job_arn(job)})


@router.get("/model-invocation-job/{jobIdentifier:path}", summary="GetModelInvocationJob")
def get_model_invocation_job(
    jobIdentifier: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    service = batch_service(services)
    return job_body(service, service.get_job(jobIdentifier, caller(request)))


@router.post("/model-invocation-job/{jobIdentifier:path}/stop", summary="StopModelInvocationJob")
def stop_model_invocation_job(
    jobIdentifier: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    batch_service(services).stop_job(jobIdentifier, caller(request))
    return {}


@router.get("/model-invocation-jobs", summary="ListModelInvocationJobs")
def list_model_invocation_jobs(
    request: Request,
    services: Services = Depends(get_services),
    submitTimeAfter: str | None = Query(None),
    submitTimeBefore: str | None = Query(None),
    statusEquals: str | None = Query(None),
    nameContains: str | None = Query(None),
    maxResults: str | None = Query(None),
    nextToken: str | None = Query(None),
    sortBy: str | None = Query(None),
    sortOrder: str | None = Query(None),
) -> dict[str, Any]:
    service = batch_service(services)
    flt = ListFilter(
        created_after=parse_timestamp(submitTimeAfter, "submitTimeAfter"),
        created_before=parse_timestamp(submitTimeBefore, "submitTimeBefore"),
        name_contains=nameContains,
        ascending=parse_sort(sortBy, sortOrder),
        max_results=parse_max_results(maxResults),
        next_token=nextToken or None,
    )
    page = service.list_jobs(flt, parse_enum(statusEquals, BatchJobStatus), caller(request))
    return drop_none(
        {"invocationJobSummaries": [job_body(service, j) for j in page.items], "nextToken": page.next_token}
    )
