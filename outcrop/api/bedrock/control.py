"""Bedrock control plane: model import jobs and imported models (thin: parse, call, translate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from outcrop.api.bedrock.protocol import (
    CreateModelImportJobRequest,
    custom_model_units,
    drop_none,
    iso8601,
    parse_max_results,
    parse_sort,
    parse_status,
    parse_timestamp,
)
from outcrop.api.deps import Services, get_services, parse_body
from outcrop.auth.guard import Guard
from outcrop.registry import arns
from outcrop.registry.service import CreateImportJob
from outcrop.store.imports import ImportedModel, ImportJob, ListFilter

router = APIRouter(tags=["bedrock control plane"])


def _data_source(uri: str) -> dict[str, Any]:
    return {"s3DataSource": {"s3Uri": uri}}


def _job_body(services: Services, job: ImportJob) -> dict[str, Any]:
    registry = services.registry
    body = {
        "jobArn": registry.job_arn(job),
        "jobName": job.name,
        "importedModelName": job.imported_model_name,
        "importedModelArn": arns.model_arn(services.config.aws, job.imported_model_id)
        if job.imported_model_id
        else None,
        "roleArn": job.role_arn,
        "modelDataSource": _data_source(job.source_uri),
        "status": job.status.value,
        "failureMessage": job.failure_message,
        "creationTime": iso8601(job.created_at),
        "lastModifiedTime": iso8601(job.updated_at),
        "endTime": iso8601(job.ended_at),
        "vpcConfig": job.vpc_config,
        "importedModelKmsKeyArn": job.kms_key_id,
    }
    return drop_none(body)


def _job_summary(services: Services, job: ImportJob) -> dict[str, Any]:
    full = _job_body(services, job)
    keys = (
        "jobArn",
        "jobName",
        "status",
        "lastModifiedTime",
        "creationTime",
        "endTime",
        "importedModelArn",
        "importedModelName",
    )
    return {k: full[k] for k in keys if k in full}


def _model_body(services: Services, model: ImportedModel) -> dict[str, Any]:
    registry = services.registry
    body = {
        "modelArn": registry.model_arn(model),
        "modelName": model.name,
        "jobName": model.job_name,
        "jobArn": arns.job_arn(services.config.aws, model.job_id) if model.job_id else None,
        "modelDataSource": _data_source(model.source_uri),
        "creationTime": iso8601(model.created_at),
        "modelArchitecture": model.model_type,
        "modelKmsKeyArn": model.kms_key_id,
        "instructSupported": model.instruct_supported,
        "customModelUnits": custom_model_units(model.memory_estimate_bytes),
    }
    return drop_none(body)


@dataclass
class ListQuery:
    """The query parameters every Bedrock List* operation shares (a FastAPI dependency)."""

    creationTimeAfter: str | None = Query(None)
    creationTimeBefore: str | None = Query(None)
    nameContains: str | None = Query(None)
    maxResults: str | None = Query(None)
    nextToken: str | None = Query(None)
    sortBy: str | None = Query(None)
    sortOrder: str | None = Query(None)

    def filter(self, status: Any = None) -> ListFilter:
        return ListFilter(
            created_after=parse_timestamp(self.creationTimeAfter, "creationTimeAfter"),
            created_before=parse_timestamp(self.creationTimeBefore, "creationTimeBefore"),
            name_contains=self.nameContains,
            status=status,
            ascending=parse_sort(self.sortBy, self.sortOrder),
            max_results=parse_max_results(self.maxResults),
            next_token=self.nextToken or None,
        )


@router.post("/model-import-jobs", status_code=201, summary="CreateModelImportJob")
async def create_model_import_job(
    request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = await parse_body(request, CreateModelImportJobRequest)
    job = services.registry.create_import_job(
        CreateImportJob(
            job_name=body.jobName,
            imported_model_name=body.importedModelName,
            source_uri=body.modelDataSource.s3DataSource.s3Uri,
            role_arn=body.roleArn,
            client_request_token=body.clientRequestToken,
            job_tags=tuple(t.model_dump() for t in body.jobTags),
            model_tags=tuple(t.model_dump() for t in body.importedModelTags),
            vpc_config=body.vpcConfig.model_dump() if body.vpcConfig else None,
            kms_key_id=body.importedModelKmsKeyId,
        )
    )
    services.import_worker_wake()
    return JSONResponse({"jobArn": services.registry.job_arn(job)}, status_code=201)


@router.get("/model-import-jobs/{jobIdentifier:path}", summary="GetModelImportJob")
def get_model_import_job(jobIdentifier: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return _job_body(services, services.registry.get_job(jobIdentifier))


@router.get("/model-import-jobs", summary="ListModelImportJobs")
def list_model_import_jobs(
    services: Services = Depends(get_services),
    query: ListQuery = Depends(),
    statusEquals: str | None = Query(None),
) -> dict[str, Any]:
    page = services.registry.list_jobs(query.filter(parse_status(statusEquals)))
    return drop_none(
        {
            "modelImportJobSummaries": [_job_summary(services, j) for j in page.items],
            "nextToken": page.next_token,
        }
    )


@router.get("/imported-models/{modelIdentifier:path}", summary="GetImportedModel")
def get_imported_model(modelIdentifier: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return _model_body(services, services.registry.get_model(modelIdentifier))


@router.get("/imported-models", summary="ListImportedModels")
def list_imported_models(
    request: Request,
    services: Services = Depends(get_services),
    query: ListQuery = Depends(),
) -> dict[str, Any]:
    page = services.registry.list_models(query.filter())
    visible = [
        m
        for m in page.items
        if Guard.allows(request, "bedrock:GetImportedModel", services.registry.model_arn(m))
    ]
    summaries = [
        {
            k: v
            for k, v in _model_body(services, m).items()
            if k in ("modelArn", "modelName", "creationTime", "instructSupported", "modelArchitecture")
        }
        for m in visible
    ]
    return drop_none({"modelSummaries": summaries, "nextToken": page.next_token})


@router.delete("/imported-models/{modelIdentifier:path}", summary="DeleteImportedModel")
async def delete_imported_model(modelIdentifier: str, services: Services = Depends(get_services)) -> Response:
    model = services.registry.get_model(modelIdentifier)
    # Drain its copies first: in-flight requests finish, queued ones get a clear 503.
    await services.serving.stop_model(model.id)
    services.registry.delete_model(model.id)
    return Response(status_code=200, content=b"{}", media_type="application/json")
