"""Bedrock runtime: ApplyGuardrail (thin: parse, call outcrop.guardrails.service, translate)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from outcrop.api.bedrock.guardrails import guardrail_resource, guardrails_of
from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.errors import InvalidRequestError
from outcrop.guardrails.policy import Wire, validate_model

router = APIRouter(tags=["bedrock runtime"])

# Qualifiers that mark a block as contextual-grounding input (sources, the query), not content to guard.
GROUNDING_QUALIFIERS = frozenset({"grounding_source", "query"})


class TextBlock(Wire):
    text: str
    qualifiers: list[Literal["grounding_source", "query", "guard_content"]] = Field(default_factory=list)


class ContentBlock(Wire):
    text: TextBlock | None = None
    image: dict[str, Any] | None = None


class ApplyGuardrailRequest(Wire):
    source: Literal["INPUT", "OUTPUT"]
    content: list[ContentBlock]
    outputScope: Literal["INTERVENTIONS", "FULL"] = "INTERVENTIONS"


@router.post(
    "/guardrail/{guardrailIdentifier:path}/version/{guardrailVersion}/apply", summary="ApplyGuardrail"
)
async def apply_guardrail(
    guardrailIdentifier: str,
    guardrailVersion: str,
    request: Request,
    services: Services = Depends(get_services),
) -> JSONResponse:
    body = validate_model(ApplyGuardrailRequest, await read_json_object(request))
    texts: list[str] = []
    for i, block in enumerate(body.content):
        if block.image is not None:
            raise InvalidRequestError(
                f"content.{i} is an image block; this server's guardrails check text only. Send text blocks.",
                param=f"content.{i}",
            )
        if block.text is None:
            raise InvalidRequestError(
                f'content.{i} has no text; each block must be {{"text": {{"text": "..."}}}}.',
                param=f"content.{i}",
            )
        if not GROUNDING_QUALIFIERS & set(block.text.qualifiers):
            texts.append(block.text.text)
    service = guardrails_of(services)
    compiled = service.compiled(guardrailIdentifier, guardrailVersion)
    outcome = await service.apply(compiled, texts, body.source, full=body.outputScope == "FULL")
    usage = outcome.assessment["invocationMetrics"]["usage"]
    answer: dict[str, Any] = {
        "usage": usage,
        "action": outcome.action,
        "outputs": [{"text": t} for t in outcome.outputs] if outcome.intervened else [],
        "assessments": [outcome.assessment],
        "guardrailCoverage": outcome.assessment["invocationMetrics"]["guardrailCoverage"],
    }
    if outcome.intervened:
        answer["actionReason"] = (
            "Guardrail blocked." if outcome.blocked else "Guardrail masked sensitive information."
        )
    return JSONResponse(answer)


apply_guardrail.outcrop_resource = guardrail_resource  # type: ignore[attr-defined]
