"""Bedrock control plane: guardrails (thin: parse, call outcrop.guardrails.service, translate).

Create/Get/List/Update/Delete Guardrail and CreateGuardrailVersion, per botocore's bedrock
2023-04-20 model. The policy action is the operation's (``bedrock:CreateGuardrail`` ...) and the
resource is the guardrail's ARN, as in IAM.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from outcrop.api.bedrock.protocol import drop_none, iso8601, parse_max_results
from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.guardrails.policy import (
    CreateGuardrailRequest,
    CreateGuardrailVersionRequest,
    GuardrailConfigRequest,
    validate_model,
)
from outcrop.guardrails.service import ARN_RE, GuardrailService, guardrail_arn
from outcrop.guardrails.store import GuardrailRow

router = APIRouter(tags=["bedrock control plane"])

_KMS_KEY_ARN_RE = re.compile(r"arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:key/[a-zA-Z0-9-]{36}")


def guardrails_of(services: Services) -> GuardrailService:
    service: GuardrailService = services.extra["guardrails"]
    return service


async def guardrail_resource(request: Request, config: OutcropConfig) -> str:
    """The IAM resource of a guardrail route: the guardrail's ARN (``guardrail/*`` for Create and List)."""
    identifier = request.path_params.get("guardrailIdentifier")
    if not identifier:
        return guardrail_arn(config.aws, "*")
    match = ARN_RE.fullmatch(identifier)
    if match is not None:
        return guardrail_arn(config.aws, match.group("id"))
    services: Services = request.app.state.services
    found = guardrails_of(services).store.find_id(identifier)
    return guardrail_arn(config.aws, found or identifier)


def _body(service: GuardrailService, row: GuardrailRow) -> dict[str, Any]:
    spec = row.spec
    body: dict[str, Any] = {
        "name": spec.name,
        "description": row.description,
        "guardrailId": row.id,
        "guardrailArn": service.arn(row.id),
        "version": row.version,
        "status": row.status.value,
        **spec.policies,
        "createdAt": iso8601(row.created_at),
        "updatedAt": iso8601(row.updated_at),
        "blockedInputMessaging": spec.blocked_input_messaging,
        "blockedOutputsMessaging": spec.blocked_outputs_messaging,
        "kmsKeyArn": spec.kms_key_id
        if spec.kms_key_id and _KMS_KEY_ARN_RE.fullmatch(spec.kms_key_id)
        else None,
    }
    return drop_none(body)


def _summary(service: GuardrailService, row: GuardrailRow) -> dict[str, Any]:
    return drop_none(
        {
            "id": row.id,
            "arn": service.arn(row.id),
            "status": row.status.value,
            "name": row.spec.name,
            "description": row.description,
            "version": row.version,
            "createdAt": iso8601(row.created_at),
            "updatedAt": iso8601(row.updated_at),
        }
    )


@router.post("/guardrails", status_code=202, summary="CreateGuardrail")
async def create_guardrail(request: Request, services: Services = Depends(get_services)) -> JSONResponse:
    body = validate_model(CreateGuardrailRequest, await read_json_object(request))
    service = guardrails_of(services)
    row = service.create(body)
    return JSONResponse(
        {
            "guardrailId": row.id,
            "guardrailArn": service.arn(row.id),
            "version": row.version,
            "createdAt": iso8601(row.created_at),
        },
        status_code=202,
    )


@router.get("/guardrails/{guardrailIdentifier:path}", summary="GetGuardrail")
def get_guardrail(
    guardrailIdentifier: str,
    services: Services = Depends(get_services),
    guardrailVersion: str | None = Query(None),
) -> dict[str, Any]:
    service = guardrails_of(services)
    return _body(service, service.get(guardrailIdentifier, guardrailVersion))


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        offset = -1
    if offset < 0:
        raise InvalidRequestError(
            f"nextToken {token[:40]!r} is not a token this server issued. Pass the nextToken from the previous "
            "response unchanged, or omit it to start from the first page.",
            param="nextToken",
        )
    return offset


@router.get("/guardrails", summary="ListGuardrails")
def list_guardrails(
    services: Services = Depends(get_services),
    guardrailIdentifier: str | None = Query(None),
    maxResults: str | None = Query(None),
    nextToken: str | None = Query(None),
) -> dict[str, Any]:
    service = guardrails_of(services)
    limit = parse_max_results(maxResults)
    start = _offset(nextToken)
    if guardrailIdentifier:
        rows = service.store.list_versions(service.resolve_id(guardrailIdentifier))
    else:
        rows = service.store.list_drafts()
    page = rows[start : start + limit]
    more = start + limit < len(rows)
    token = base64.urlsafe_b64encode(str(start + limit).encode()).decode().rstrip("=") if more else None
    return drop_none({"guardrails": [_summary(service, r) for r in page], "nextToken": token})


@router.put("/guardrails/{guardrailIdentifier:path}", status_code=202, summary="UpdateGuardrail")
async def update_guardrail(
    guardrailIdentifier: str, request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = validate_model(GuardrailConfigRequest, await read_json_object(request))
    service = guardrails_of(services)
    row = service.update(guardrailIdentifier, body)
    return JSONResponse(
        {
            "guardrailId": row.id,
            "guardrailArn": service.arn(row.id),
            "version": row.version,
            "updatedAt": iso8601(row.updated_at),
        },
        status_code=202,
    )


@router.post("/guardrails/{guardrailIdentifier:path}", status_code=202, summary="CreateGuardrailVersion")
async def create_guardrail_version(
    guardrailIdentifier: str, request: Request, services: Services = Depends(get_services)
) -> JSONResponse:
    body = validate_model(CreateGuardrailVersionRequest, await read_json_object(request))
    guardrail_id, version = guardrails_of(services).create_version(
        guardrailIdentifier, body.description, body.clientRequestToken
    )
    return JSONResponse({"guardrailId": guardrail_id, "version": version}, status_code=202)


@router.delete("/guardrails/{guardrailIdentifier:path}", status_code=202, summary="DeleteGuardrail")
def delete_guardrail(
    guardrailIdentifier: str,
    services: Services = Depends(get_services),
    guardrailVersion: str | None = Query(None),
) -> Response:
    guardrails_of(services).delete(guardrailIdentifier, guardrailVersion)
    return Response(status_code=202, content=b"{}", media_type="application/json")


for _route in (
    get_guardrail,
    update_guardrail,
    create_guardrail_version,
    delete_guardrail,
    create_guardrail,
    list_guardrails,
):
    _route.outcrop_resource = guardrail_resource  # type: ignore[union-attr]
