"""boto3 ``bedrock-agent`` Knowledge bases (knowledge bases, data sources, ingestion jobs) and
``bedrock-agent-runtime`` ``Retrieve`` (thin: parse, call :mod:`outcrop.knowledge.service`, translate).

Paths, status codes and shapes are botocore's ``bedrock-agent`` 2023-06-05 and
``bedrock-agent-runtime`` 2023-07-26 service models; boto3 signs both with SigV4 service
``bedrock``. Authorization: the action is ``bedrock:<Operation>``, the resource the knowledge
base's ARN (``arn:aws:bedrock:<region>:<account>:knowledge-base/<id>``; ``*`` for
CreateKnowledgeBase and ListKnowledgeBases), read by the guard from the routes' ``outcrop_resource``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from outcrop.api.bedrock.protocol import drop_none, iso8601
from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.auth.guard import Guard
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.knowledge.service import KnowledgeService

router = APIRouter(tags=["bedrock-agent knowledge bases"])

_TIMESTAMPS = ("createdAt", "updatedAt", "startedAt")


def knowledge_service(services: Services) -> KnowledgeService:
    service: KnowledgeService = services.extra["knowledge"]
    return service


def _times(item: dict[str, Any]) -> dict[str, Any]:
    """Epoch seconds -> ISO 8601, as the service model's timestamps are written."""
    return {
        k: (iso8601(v) if k in _TIMESTAMPS and isinstance(v, int | float) else v) for k, v in item.items()
    }


def _member(body: dict[str, Any], key: str, kind: type, where: str | None = None) -> Any:
    """``body[key]`` if absent or of ``kind``; a ValidationException naming the member otherwise."""
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        shape = {dict: "an object", list: "a list", str: "a string", int: "an integer"}.get(
            kind, kind.__name__
        )
        name = f"{where}.{key}" if where else key
        raise InvalidRequestError(f"'{name}' must be {shape}, not {type(value).__name__}.", param=name)
    return value


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    """The top-level members every create/update body shares, of the service model's types."""
    for key in ("name", "description", "roleArn", "clientToken", "dataDeletionPolicy"):
        _member(body, key, str)
    for key in (
        "knowledgeBaseConfiguration",
        "storageConfiguration",
        "dataSourceConfiguration",
        "vectorIngestionConfiguration",
        "serverSideEncryptionConfiguration",
    ):
        _member(body, key, dict)
    tags = _member(body, "tags", dict)
    if tags and not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidRequestError("'tags' must map strings to strings.", param="tags")
    return body


def _max_results(body: dict[str, Any]) -> int | None:
    _member(body, "nextToken", str)
    value = body.get("maxResults")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise InvalidRequestError(
            f"1 validation error detected: Value {value!r} at 'maxResults' failed to satisfy constraint: "
            "Member must be an integer from 1 to 1000.",
            param="maxResults",
        )
    return value


async def _kb_resource(request: Request, config: OutcropConfig) -> str:
    """The knowledge base's ARN for the policy check; ``*`` where the request names none."""
    identifier = request.path_params.get("knowledgeBaseId")
    if not identifier:
        return "*"
    base = f"arn:aws:bedrock:{config.aws.region}:{config.aws.account_id}:knowledge-base/"
    try:
        return base + KnowledgeService.parse_kb_identifier(identifier)
    except InvalidRequestError:  # the route answers a malformed id, if the caller may ask
        return base + "unknown"


# -- knowledge bases -------------------------------------------------------------------


@router.put("/knowledgebases/", status_code=202, summary="CreateKnowledgeBase")
async def create_knowledge_base(request: Request, services: Services = Depends(get_services)) -> JSONResponse:
    body = await read_json_object(request)
    made = await knowledge_service(services).create_knowledge_base(_checked(body))
    return JSONResponse({"knowledgeBase": _times(made)}, status_code=202)


@router.post("/knowledgebases/", summary="ListKnowledgeBases")
async def list_knowledge_bases(
    request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    service = knowledge_service(services)
    page = service.list_knowledge_bases(
        max_results=_max_results(body), next_token=body.get("nextToken") or None
    )
    visible = [
        s
        for s in page.items
        if Guard.allows(request, "bedrock:GetKnowledgeBase", service.kb_arn(s["knowledgeBaseId"]))
    ]
    return drop_none({"knowledgeBaseSummaries": [_times(s) for s in visible], "nextToken": page.next_token})


@router.get("/knowledgebases/{knowledgeBaseId}", summary="GetKnowledgeBase")
def get_knowledge_base(knowledgeBaseId: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return {"knowledgeBase": _times(knowledge_service(services).get_knowledge_base(knowledgeBaseId))}


@router.put("/knowledgebases/{knowledgeBaseId}", status_code=202, summary="UpdateKnowledgeBase")
async def update_knowledge_base(
    knowledgeBaseId: str, request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = await read_json_object(request)
    updated = await knowledge_service(services).update_knowledge_base(knowledgeBaseId, _checked(body))
    return JSONResponse({"knowledgeBase": _times(updated)}, status_code=202)


@router.delete("/knowledgebases/{knowledgeBaseId}", status_code=202, summary="DeleteKnowledgeBase")
async def delete_knowledge_base(
    knowledgeBaseId: str, services: Services = Depends(get_services)
) -> JSONResponse:
    return JSONResponse(
        await knowledge_service(services).delete_knowledge_base(knowledgeBaseId), status_code=202
    )


# -- data sources ----------------------------------------------------------------------


@router.put("/knowledgebases/{knowledgeBaseId}/datasources/", summary="CreateDataSource")
async def create_data_source(
    knowledgeBaseId: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    return {
        "dataSource": _times(
            await knowledge_service(services).create_data_source(knowledgeBaseId, _checked(body))
        )
    }


@router.post("/knowledgebases/{knowledgeBaseId}/datasources/", summary="ListDataSources")
async def list_data_sources(
    knowledgeBaseId: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    page = knowledge_service(services).list_data_sources(
        knowledgeBaseId, max_results=_max_results(body), next_token=body.get("nextToken") or None
    )
    return drop_none({"dataSourceSummaries": [_times(s) for s in page.items], "nextToken": page.next_token})


@router.get("/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}", summary="GetDataSource")
def get_data_source(
    knowledgeBaseId: str, dataSourceId: str, services: Services = Depends(get_services)
) -> dict[str, Any]:
    return {"dataSource": _times(knowledge_service(services).get_data_source(knowledgeBaseId, dataSourceId))}


@router.put("/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}", summary="UpdateDataSource")
async def update_data_source(
    knowledgeBaseId: str, dataSourceId: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    updated = await knowledge_service(services).update_data_source(
        knowledgeBaseId, dataSourceId, _checked(body)
    )
    return {"dataSource": _times(updated)}


@router.delete(
    "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}",
    status_code=202,
    summary="DeleteDataSource",
)
async def delete_data_source(
    knowledgeBaseId: str, dataSourceId: str, services: Services = Depends(get_services)
) -> JSONResponse:
    answer = await knowledge_service(services).delete_data_source(knowledgeBaseId, dataSourceId)
    return JSONResponse(answer, status_code=202)


# -- ingestion jobs --------------------------------------------------------------------


@router.put(
    "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/",
    status_code=202,
    summary="StartIngestionJob",
)
async def start_ingestion_job(
    knowledgeBaseId: str, dataSourceId: str, request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = await read_json_object(request)
    job = await knowledge_service(services).start_ingestion_job(knowledgeBaseId, dataSourceId, _checked(body))
    return JSONResponse({"ingestionJob": _times(job)}, status_code=202)


@router.post(
    "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/", summary="ListIngestionJobs"
)
async def list_ingestion_jobs(
    knowledgeBaseId: str, dataSourceId: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    filters = _member(body, "filters", list)
    if filters and not all(isinstance(f, dict) for f in filters):
        raise InvalidRequestError(
            "'filters' must be a list of {attribute, operator, values} objects.", param="filters"
        )
    page = knowledge_service(services).list_ingestion_jobs(
        knowledgeBaseId,
        dataSourceId,
        filters=filters,
        sort_by=_member(body, "sortBy", dict),
        max_results=_max_results(body),
        next_token=body.get("nextToken") or None,
    )
    return drop_none({"ingestionJobSummaries": [_times(j) for j in page.items], "nextToken": page.next_token})


@router.get(
    "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/{ingestionJobId}",
    summary="GetIngestionJob",
)
def get_ingestion_job(
    knowledgeBaseId: str, dataSourceId: str, ingestionJobId: str, services: Services = Depends(get_services)
) -> dict[str, Any]:
    job = knowledge_service(services).get_ingestion_job(knowledgeBaseId, dataSourceId, ingestionJobId)
    return {"ingestionJob": _times(job)}


@router.post(
    "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/{ingestionJobId}/stop",
    status_code=202,
    summary="StopIngestionJob",
)
async def stop_ingestion_job(
    knowledgeBaseId: str, dataSourceId: str, ingestionJobId: str, services: Services = Depends(get_services)
) -> JSONResponse:
    job = await knowledge_service(services).stop_ingestion_job(knowledgeBaseId, dataSourceId, ingestionJobId)
    return JSONResponse({"ingestionJob": _times(job)}, status_code=202)


# -- Retrieve (bedrock-agent-runtime) ----------------------------------------------------

_UNSUPPORTED_SEARCH = {
    "rerankingConfiguration": "reranking models are not served by Outcrop; leave it out",
    "implicitFilterConfiguration": "implicit (model-generated) filters are not supported; give an explicit filter",
}


@router.post("/knowledgebases/{knowledgeBaseId:path}/retrieve", summary="Retrieve")
async def retrieve(
    knowledgeBaseId: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    body = await read_json_object(request)
    query = _member(body, "retrievalQuery", dict)
    if query is None:
        raise InvalidRequestError(
            "'retrievalQuery' is required: {'text': 'your question'}.", param="retrievalQuery"
        )
    if query.get("type", "TEXT") != "TEXT" or query.get("image") is not None:
        raise InvalidRequestError(
            "Only text queries are supported (retrievalQuery.text); Outcrop's knowledge bases index text.",
            param="retrievalQuery",
        )
    if body.get("guardrailConfiguration") is not None:
        raise InvalidRequestError(
            "guardrailConfiguration is not supported on Retrieve; check the results with ApplyGuardrail, or use "
            "RetrieveAndGenerate.",
            param="guardrailConfiguration",
        )
    _member(body, "nextToken", str)
    configuration = _member(body, "retrievalConfiguration", dict) or {}
    if configuration.get("managedSearchConfiguration") is not None:
        raise InvalidRequestError(
            "managedSearchConfiguration is for MANAGED knowledge bases; use vectorSearchConfiguration.",
            param="retrievalConfiguration.managedSearchConfiguration",
        )
    search = _member(configuration, "vectorSearchConfiguration", dict, "retrievalConfiguration") or {}
    _member(search, "numberOfResults", int, "vectorSearchConfiguration")
    _member(search, "overrideSearchType", str, "vectorSearchConfiguration")
    _member(search, "filter", dict, "vectorSearchConfiguration")
    for key, why in _UNSUPPORTED_SEARCH.items():
        if search.get(key) is not None:
            raise InvalidRequestError(
                f"vectorSearchConfiguration.{key}: {why}.", param=f"vectorSearchConfiguration.{key}"
            )
    results = await knowledge_service(services).retrieve(
        knowledgeBaseId,
        query.get("text") or "",
        number_of_results=search.get("numberOfResults", 5),
        search_type=search.get("overrideSearchType"),
        filter=search.get("filter"),
    )
    return {"retrievalResults": results}


for _route in (
    get_knowledge_base,
    update_knowledge_base,
    delete_knowledge_base,
    create_data_source,
    list_data_sources,
    get_data_source,
    update_data_source,
    delete_data_source,
    start_ingestion_job,
    list_ingestion_jobs,
    get_ingestion_job,
    stop_ingestion_job,
    retrieve,
):
    setattr(_route, "outcrop_resource", _kb_resource)  # noqa: B010 - read by outcrop.auth.guard
