"""The one call the runtime routes make for Prompt management: a prompt ARN in ``modelId`` becomes
the prompt's model and the plain request for it (:mod:`outcrop.prompts.runtime`).

Authorization: the guard checks the route's action (``bedrock:Converse``, ``bedrock:InvokeModel``,
...) on the prompt's ARN, as sent; this checks the same action on the model the prompt runs on,
so a prompt is never a side door to a model the caller may not invoke.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from outcrop.api.agent.prompts import prompt_service
from outcrop.api.deps import Services
from outcrop.auth.guard import AuthContext, Guard
from outcrop.errors import AccessDeniedError, NotFoundError
from outcrop.prompts import runtime
from outcrop.prompts.service import is_prompt_arn


async def _authorize(services: Services, request: Request, label: str, model_id: str) -> str:
    try:
        model = await services.serving.resolve(model_id)
    except NotFoundError:
        raise NotFoundError(
            "Model",
            model_id,
            f"Prompt {label} runs on it. Import it, or point the prompt's variant at an imported model "
            "with UpdatePrompt.",
        ) from None
    model_arn = services.registry.model_arn(model)
    auth: AuthContext | None = getattr(request.state, "auth", None)
    if auth is not None and not Guard.allows(request, auth.action, model_arn):
        raise AccessDeniedError(
            f"User: {auth.principal.arn} is not authorized to perform: {auth.action} on resource: {model_arn} "
            f"(the model prompt {label} runs on)."
        )
    return model_id


async def resolve_converse(
    services: Services, request: Request, model_id: str, body: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Converse / ConverseStream: ``(model id, body)`` unchanged, or the prompt's model and rendered body."""
    if not is_prompt_arn(model_id):
        return model_id, body
    version = await asyncio.to_thread(prompt_service(services).resolve, model_id)
    target, rendered = runtime.converse_body(model_id, version, body)
    return await _authorize(services, request, model_id, target), rendered


async def resolve_invoke(
    services: Services, request: Request, model_id: str, body: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """InvokeModel(+stream): ``(model id, body)`` unchanged, or the prompt's model and rendered body."""
    if not is_prompt_arn(model_id):
        return model_id, body
    version = await asyncio.to_thread(prompt_service(services).resolve, model_id)
    target, rendered = runtime.invoke_body(model_id, version, body)
    return await _authorize(services, request, model_id, target), rendered
