"""boto3 ``bedrock-agent`` Prompt management: CreatePrompt, GetPrompt, UpdatePrompt, ListPrompts,
DeletePrompt, CreatePromptVersion (thin: parse, call :mod:`outcrop.prompts.service`, translate).

Paths and shapes are botocore's ``bedrock-agent`` 2023-06-05 service model (``/prompts/...``;
boto3 signs these requests with SigV4 service ``bedrock``, as it does the ``bedrock`` control
plane). Authorization: the action is ``bedrock:<Operation>``, the resource the prompt's ARN
(without a version; ``*`` for CreatePrompt and ListPrompts), read by the guard from the routes'
``outcrop_resource``; changes go to the audit log like every Bedrock control-plane call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictStr

from outcrop.api.bedrock.protocol import drop_none, iso8601, parse_max_results
from outcrop.api.deps import Services, get_services, parse_body
from outcrop.auth.guard import Guard
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.prompts.service import PromptService
from outcrop.prompts.spec import PromptContent, _Shape
from outcrop.prompts.store import PromptVersion

router = APIRouter(tags=["bedrock-agent prompt management"])

# The service model's ClientToken; boto3 fills one in (a UUID) when the caller gives none.
_ClientToken = Annotated[
    StrictStr, Field(min_length=33, max_length=256, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,256}$")
]
_TagKey = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9\s._:/=+@-]*$")]
_TagValue = Annotated[StrictStr, Field(max_length=256, pattern=r"^[a-zA-Z0-9\s._:/=+@-]*$")]


class CreatePromptRequest(PromptContent):
    clientToken: _ClientToken | None = None
    tags: dict[_TagKey, _TagValue] | None = None


class CreatePromptVersionRequest(_Shape):
    description: StrictStr | None = Field(None, min_length=1, max_length=200)
    clientToken: _ClientToken | None = None
    tags: dict[_TagKey, _TagValue] | None = None


def prompt_service(services: Services) -> PromptService:
    service: PromptService = services.extra["prompts"]
    return service


def _body(service: PromptService, v: PromptVersion) -> dict[str, Any]:
    """GetPromptResponse (and Create/Update/CreatePromptVersion's, the same shape)."""
    return {
        **v.content.wire(),
        "id": v.prompt_id,
        "arn": service.version_arn(v),
        "version": v.version,
        "createdAt": iso8601(v.created_at),
        "updatedAt": iso8601(v.updated_at),
    }


def _summary(service: PromptService, v: PromptVersion) -> dict[str, Any]:
    full = _body(service, v)
    keys = ("name", "description", "id", "arn", "version", "createdAt", "updatedAt")
    return {k: full[k] for k in keys if k in full}


async def _prompt_resource(request: Request, config: OutcropConfig) -> str:
    """The prompt's ARN (no version) for the policy check; ``*`` where the request names none."""
    identifier = request.path_params.get("promptIdentifier")
    if not identifier:
        return "*"
    base = f"arn:aws:bedrock:{config.aws.region}:{config.aws.account_id}:prompt/"
    try:
        prompt_id, _ = PromptService.parse_identifier(identifier)
    except InvalidRequestError:  # the route answers a malformed id, if the caller may ask
        return base + "unknown"
    return base + prompt_id


@router.post("/prompts/", status_code=201, summary="CreatePrompt")
async def create_prompt(request: Request, services: Services = Depends(get_services)) -> JSONResponse:
    body = await parse_body(request, CreatePromptRequest)
    service = prompt_service(services)
    content = PromptContent.model_validate(body.model_dump(exclude={"clientToken", "tags"}))
    made = service.create(content, client_token=body.clientToken, tags=body.tags)
    return JSONResponse(_body(service, made), status_code=201)


@router.get("/prompts/", summary="ListPrompts")
def list_prompts(
    request: Request,
    services: Services = Depends(get_services),
    promptIdentifier: str | None = Query(None),
    maxResults: str | None = Query(None),
    nextToken: str | None = Query(None),
) -> dict[str, Any]:
    service = prompt_service(services)
    page = service.list(
        promptIdentifier,
        max_results=parse_max_results(maxResults) if maxResults is not None else None,
        next_token=nextToken or None,
    )
    visible = [v for v in page.items if Guard.allows(request, "bedrock:GetPrompt", service.arn(v.prompt_id))]
    return drop_none(
        {"promptSummaries": [_summary(service, v) for v in visible], "nextToken": page.next_token}
    )


@router.get("/prompts/{promptIdentifier:path}/", summary="GetPrompt")
def get_prompt(
    promptIdentifier: str,
    services: Services = Depends(get_services),
    promptVersion: str | None = Query(None),
    includedData: str | None = Query(None),
) -> dict[str, Any]:
    if includedData not in (None, "ALL_DATA", "METADATA_ONLY"):
        raise InvalidRequestError(
            f"1 validation error detected: Value {includedData[:40]!r} at 'includedData' failed to satisfy "
            "constraint: Member must be ALL_DATA or METADATA_ONLY.",
            param="includedData",
        )
    service = prompt_service(services)
    body = _body(service, service.get(promptIdentifier, promptVersion))
    if includedData == "METADATA_ONLY":
        body.pop("variants", None)
    return body


@router.put("/prompts/{promptIdentifier:path}/", summary="UpdatePrompt")
async def update_prompt(
    promptIdentifier: str, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    content = await parse_body(request, PromptContent)
    service = prompt_service(services)
    return _body(service, service.update(promptIdentifier, content))


@router.delete("/prompts/{promptIdentifier:path}/", summary="DeletePrompt")
def delete_prompt(
    promptIdentifier: str,
    services: Services = Depends(get_services),
    promptVersion: str | None = Query(None),
) -> dict[str, Any]:
    prompt_id, version = prompt_service(services).delete(promptIdentifier, promptVersion)
    return drop_none({"id": prompt_id, "version": version})


@router.post("/prompts/{promptIdentifier:path}/versions", status_code=201, summary="CreatePromptVersion")
async def create_prompt_version(
    promptIdentifier: str, request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = await parse_body(request, CreatePromptVersionRequest)
    service = prompt_service(services)
    made = service.create_version(
        promptIdentifier, description=body.description, client_token=body.clientToken, tags=body.tags
    )
    return JSONResponse(_body(service, made), status_code=201)


for _route in (get_prompt, update_prompt, delete_prompt, create_prompt_version):
    setattr(_route, "outcrop_resource", _prompt_resource)  # noqa: B010 - read by outcrop.auth.guard
