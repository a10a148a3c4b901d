"""OpenAI-compatible surface: /v1/models, /v1/completions, /v1/chat/completions (SSE), /v1/responses, for the openai client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.api.inference import cold_start_policy, invocation, require_chat
from outcrop.auth.guard import Guard
from outcrop.errors import (
    InvalidRequestError,
    NotFoundError,
    OutcropError,
    openai_error_body,
)
from outcrop.protocol import chat, responses, tools
from outcrop.store.imports import ListFilter

router = APIRouter(prefix="/v1", tags=["openai"])


def _request_id(request: Request) -> dict[str, str]:
    """``x-request-id`` as OpenAI sends it on every answer (the SDK exposes it as ``_request_id``)."""
    return {"x-request-id": getattr(request.state, "request_id", "")}


def _model_card(services: Services, m: Any) -> dict[str, Any]:
    return {
        "id": m.name,
        "object": "model",
        "created": int(m.created_at),
        "owned_by": "outcrop",
        "root": services.registry.model_arn(m),
        "max_model_len": m.context_length,
    }


@router.get("/models", summary="ListModels")
def list_models(request: Request, services: Services = Depends(get_services)) -> Response:
    page = services.registry.list_models(ListFilter(ascending=True))
    arn = services.registry.model_arn
    data = [
        _model_card(services, m) for m in page.items if Guard.allows(request, "bedrock:InvokeModel", arn(m))
    ]
    return JSONResponse({"object": "list", "data": data}, headers=_request_id(request))


@router.get("/models/{model_id:path}", summary="RetrieveModel")
def retrieve_model(model_id: str, request: Request, services: Services = Depends(get_services)) -> Response:
    hint = "See GET /v1/models for the models you may use."
    try:
        model = services.registry.get_model(model_id)
    except (NotFoundError, InvalidRequestError):  # a malformed name is no model either
        raise NotFoundError("Model", model_id, hint) from None
    if not Guard.allows(request, "bedrock:InvokeModel", services.registry.model_arn(model)):
        raise NotFoundError("Model", model_id, hint)  # as OpenAI: a model you may not use is not there
    return JSONResponse(_model_card(services, model), headers=_request_id(request))


def _model_name(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "'model' is required: the name of an imported model (see GET /v1/models).", param="model"
        )
    return model


async def _generate(request: Request, services: Services, path: str, operation: str) -> Response:
    body = await read_json_object(request)
    model = _model_name(body)
    if path.endswith("chat/completions"):
        chat.check_messages(body.get("messages"))
        tools.check_chat_tools(body)
    else:
        tools.check_structure(body)
    record = await services.serving.resolve(model)
    if path.endswith("chat/completions"):
        require_chat(record)
    policy = cold_start_policy(request, bedrock=False)
    if not body.get("stream"):
        async with invocation(services, request, model, operation) as call:
            call.count_structured(body)
            resp = await services.serving.post(model, path, body, cold_start=policy)
        call.record(resp.get("usage") or {}, body, resp)
        return JSONResponse(resp, headers=_request_id(request))

    # The copy is always asked for usage (the gateway meters it); the caller gets it if it asked.
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    call = invocation(services, request, model, operation)
    call.count_structured(body)
    chunks = await call.open_stream(services.serving.stream(model, path, body, cold_start=policy))

    async def events() -> AsyncIterator[bytes]:
        usage: dict[str, Any] = {}
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not chunk.get("choices") and not wants_usage:
                        continue
                yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
            call.record(usage, body, {"streamed": True})
        except OutcropError as exc:
            call.fail(exc)
            yield b"data: " + json.dumps(openai_error_body(exc)).encode() + b"\n\n"
        finally:
            call.close()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", **_request_id(request)},
    )


@router.post("/completions", summary="CreateCompletion")
async def completions(request: Request, services: Services = Depends(get_services)) -> Response:
    return await _generate(request, services, "/v1/completions", "Completions")


@router.post("/chat/completions", summary="CreateChatCompletion")
async def chat_completions(request: Request, services: Services = Depends(get_services)) -> Response:
    return await _generate(request, services, "/v1/chat/completions", "ChatCompletions")


@router.post("/responses", summary="CreateResponse")
async def create_response(request: Request, services: Services = Depends(get_services)) -> Response:
    """The Responses API, stateless, as chat completions on the copy (outcrop/protocol/responses.py)."""
    body = await read_json_object(request)
    parsed = responses.parse_request(body)  # a bad body is a 400 whatever the model
    record = await services.serving.resolve(parsed.model)
    require_chat(record)
    policy = cold_start_policy(request, bedrock=False)
    path = "/v1/chat/completions"
    if not parsed.stream:
        async with invocation(services, request, parsed.model, "Responses") as call:
            call.count_structured(parsed.chat)
            resp = await services.serving.post(parsed.model, path, parsed.chat, cold_start=policy)
        answer = responses.chat_to_response(parsed, resp)
        call.record(resp.get("usage") or {}, body, answer)
        return JSONResponse(answer, headers=_request_id(request))

    call = invocation(services, request, parsed.model, "Responses")
    call.count_structured(parsed.chat)
    chunks = await call.open_stream(
        services.serving.stream(parsed.model, path, parsed.chat, cold_start=policy)
    )
    translator = responses.ResponsesStreamTranslator(parsed)

    def sse(event: dict[str, Any]) -> bytes:
        data = json.dumps(event, ensure_ascii=False)
        return f"event: {event['type']}\ndata: {data}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        usage: dict[str, Any] = {}
        try:
            for event in translator.start():
                yield sse(event)
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    for event in translator.feed(choice):
                        yield sse(event)
            closing = translator.end(usage)
            call.record(usage, body, closing[-1]["response"])
            for event in closing:
                yield sse(event)
        except OutcropError as exc:
            call.fail(exc)
            yield sse(translator.error(openai_error_body(exc)))
        finally:
            call.close()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", **_request_id(request)},
    )
