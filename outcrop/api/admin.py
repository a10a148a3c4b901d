"""Outcrop's own admin API under ``/outcrop/``: detail that Bedrock's shapes have no room for.

A copy's ``url`` (where its engine listens, reachable with the copy secret's holder's help) is
admin business: it is shown only to callers whose policy allows ``outcrop:ViewCopyUrls``
(the built-in admin policy does; read-only does not), and is null for everyone else.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from outcrop.api.bedrock.protocol import iso8601
from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.auth import policies
from outcrop.auth.guard import AuthContext, principal_name
from outcrop.errors import InvalidRequestError

router = APIRouter(prefix="/outcrop", tags=["outcrop admin"])


@router.get("/import-jobs/{identifier}", summary="An import job with its live progress")
def import_job_detail(identifier: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    job = services.registry.get_job(identifier)
    return {
        "id": job.id,
        "jobArn": services.registry.job_arn(job),
        "jobName": job.name,
        "importedModelName": job.imported_model_name,
        "status": job.status.value,
        "phase": job.phase.value,
        "bytesDone": job.bytes_done,
        "bytesTotal": job.bytes_total,
        "filesDone": job.files_done,
        "filesTotal": job.files_total,
        "attempts": job.attempts,
        "failureMessage": job.failure_message,
        "claimedBy": job.claimed_by,
        "creationTime": iso8601(job.created_at),
        "lastModifiedTime": iso8601(job.updated_at),
        "endTime": iso8601(job.ended_at),
    }


@router.get("/models/{identifier}", summary="An imported model with everything recorded at import")
async def model_detail(identifier: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return await _model_body(services, await asyncio.to_thread(services.registry.get_model, identifier))


async def _model_body(services: Services, model: Any) -> dict[str, Any]:
    """The detail: the database's record (read in a worker thread) and the serving layer's scaling
    (read on the event loop, which owns that state)."""
    files = await asyncio.to_thread(services.registry.jobs.model_files, model.id)
    return {
        "id": model.id,
        "modelArn": services.registry.model_arn(model),
        "modelName": model.name,
        "architecture": model.architecture,
        "modelType": model.model_type,
        "parameterCount": model.parameter_count,
        "dtype": model.dtype,
        "contextLength": model.context_length,
        "sizeBytes": model.size_bytes,
        "instructSupported": model.instruct_supported,
        "memoryEstimateBytes": model.memory_estimate_bytes,
        "kind": model.kind,
        **(
            {
                "embeddingDimension": model.embedding_dimension,
                "embeddingPooling": model.embedding_pooling,
                "embeddingTruncatable": model.embedding_truncatable,
            }
            if model.is_embedding
            else {}
        ),
        "jobName": model.job_name,
        "source": model.source_uri,
        "creationTime": iso8601(model.created_at),
        "files": [{"path": f.path, "sha256": f.sha256, "sizeBytes": f.size_bytes} for f in files],
        "scaling": services.serving.scaling(model),
    }


def _copies_field(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        shown = "missing" if value is None else repr(value)
        raise InvalidRequestError(
            f"'{name}' is {shown}; it must be a whole number, e.g. "
            '{"minCopies": 0, "maxCopies": 2} (minCopies 0 = scale to zero when idle).',
            param=name,
        )
    return value


@router.put("/models/{identifier}/scaling", summary="Set the min and max copies of a model")
async def update_model_scaling(
    identifier: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"minCopies", "maxCopies"})
    if unknown:
        raise InvalidRequestError(
            f'Unknown field {unknown[0]!r}; the body is {{"minCopies": int, "maxCopies": int}}.',
            param=unknown[0],
        )
    min_copies, max_copies = _copies_field(body, "minCopies"), _copies_field(body, "maxCopies")
    model = await asyncio.to_thread(services.registry.get_model, identifier)
    scaling = await asyncio.to_thread(
        services.serving.set_scaling, model, min_copies, max_copies, principal_name(request)
    )
    services.serving.apply_scaling(model, scaling)
    return await _model_body(services, model)


def _shows_copy_urls(request: Request) -> bool:
    auth: AuthContext | None = getattr(request.state, "auth", None)
    return auth is None or policies.evaluate(auth.principal.policy, policies.COPY_URLS_ACTION, "*")


def _copy_body(info: Any, *, show_url: bool) -> dict[str, Any]:
    return {
        "copyId": info.copy_id,
        "modelId": info.model_id,
        "modelName": info.model_name,
        "state": str(info.state),
        "url": info.url if show_url else None,
        "inFlight": info.in_flight,
        "pid": info.pid,
        "startedAt": iso8601(info.started_at),
        "readyAt": iso8601(info.ready_at),
        "lastUsedAt": iso8601(info.last_used_at),
    }


@router.get("/copies", summary="Running model copies with state, load and age")
def list_copies(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    show_url = _shows_copy_urls(request)
    return {"copies": [_copy_body(c, show_url=show_url) for c in services.serving.copies()]}


@router.get(
    "/endpoint-metrics", summary="SageMaker endpoints' invocations, errors and latencies on this gateway"
)
def endpoint_metrics(services: Services = Depends(get_services)) -> dict[str, Any]:
    metrics = services.extra.get("sagemaker_metrics")
    return {"endpoints": metrics.summary() if metrics is not None else []}


@router.post("/models/{identifier}/warm", summary="Pre-start copies of a model and wait until they are ready")
async def warm_model(
    identifier: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    copies = body.get("copies", 1)
    if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= 64:
        raise InvalidRequestError(
            f"'copies' is {copies!r}; it must be an integer from 1 to 64.", param="copies"
        )
    model = services.registry.get_model(identifier)
    limit = services.serving.spec_for(model).max_copies
    if copies > limit:
        raise InvalidRequestError(
            f"'copies' is {copies}, over max_copies ({limit}) for '{model.name}'. Raise it for this model with "
            f"`outcrop models scaling {model.name} --max {copies}` (PUT /outcrop/models/{model.name}/scaling), "
            "or for every model with OUTCROP_SERVING__DEFAULTS__MAX_COPIES and a restart.",
            param="copies",
        )
    await services.serving.warm(model.name, copies)
    show_url = _shows_copy_urls(request)
    return {
        "copies": [
            _copy_body(c, show_url=show_url) for c in services.serving.copies() if c.model_id == model.id
        ]
    }


# Why 100: a screenful in the console; 1,000 bounds one answer's size.
AUDIT_DEFAULT_RESULTS = 100
AUDIT_MAX_RESULTS = 1000


def _audit_query(request: Request) -> tuple[int, int | None]:
    raw = request.query_params.get("maxResults") or str(AUDIT_DEFAULT_RESULTS)
    if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_MAX_RESULTS:
        raise InvalidRequestError(
            f"'maxResults' is {raw!r}; it must be a whole number from 1 to {AUDIT_MAX_RESULTS}.",
            param="maxResults",
        )
    token = request.query_params.get("nextToken") or None
    if token is not None and not token.isdigit():
        raise InvalidRequestError(
            f"'nextToken' {token!r} is not one this server gave; pass the nextToken of the previous "
            "answer unchanged, or leave it out to start from the newest event.",
            param="nextToken",
        )
    return int(raw), (int(token) if token is not None else None)


def _audit_status(record: dict[str, Any]) -> int | None:
    """The HTTP status the request got; refusals are recorded before there is one: the dialect's."""
    status, outcome = record.get("status"), record.get("outcome")
    if isinstance(status, int):
        return status
    if outcome == "denied":
        return 403
    if outcome == "unauthenticated":  # OpenAI answers 401; Bedrock and SageMaker AccessDenied, 403
        return 401 if str(record.get("path", "")).startswith("/v1/") else 403
    return None


def _audit_event(record: dict[str, Any]) -> dict[str, Any]:
    outcome = record.get("outcome")
    return {
        "time": record.get("ts"),
        "principal": record.get("principal"),
        "action": record.get("action"),
        "resource": record.get("resource") or record.get("path"),
        "status": outcome,
        "httpStatus": _audit_status(record),
        "requestId": record.get("request_id"),
        "sourceIp": record.get("source"),
        "reason": record.get("reason"),
    }


@router.get("/audit", summary="The audit log, newest first")
def read_audit(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    max_results, before = _audit_query(request)
    records, next_offset = services.guard.audit.page(before, max_results)
    return {
        "events": [_audit_event(r) for r in records],
        "nextToken": str(next_offset) if next_offset is not None else None,
    }
