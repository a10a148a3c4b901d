"""Bedrock runtime: InvokeModel(+stream), Converse(+stream), CountTokens (thin: parse, call, translate)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from outcrop.api import jsonbody
from outcrop.api.agent import prompt_runtime
from outcrop.api.bedrock.errors import bedrock_error
from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.api.inference import cold_start_policy, invocation, require_chat
from outcrop.api.runtime import eventstream, processing
from outcrop.api.runtime.embeddings import maybe_invoke_embedding
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.guardrails import runtime as guardrails
from outcrop.protocol import bedrock_runtime as p
from outcrop.protocol.converse_tools import ConverseStreamTranslator

router = APIRouter(tags=["bedrock runtime"])


def _stream_error(operation: str, exc: OutcropError) -> bytes:
    """An error after streaming began, as the exception frame botocore raises while iterating."""
    name, status = bedrock_error(exc)
    return eventstream.error_frame(operation, name, exc.message, status)


def _usage_headers(usage: dict[str, Any], latency_ms: int) -> dict[str, str]:
    return {
        "x-amzn-bedrock-input-token-count": str(usage.get("prompt_tokens", 0)),
        "x-amzn-bedrock-output-token-count": str(usage.get("completion_tokens", 0)),
        "x-amzn-bedrock-invocation-latency": str(latency_ms),
    }


async def _require_chat(services: Services, model_id: str) -> None:
    require_chat(await services.serving.resolve(model_id))


async def _invoke_request(
    request: Request, services: Services, model_id: str
) -> tuple[str, dict[str, Any], p.InvokeStyle, str, dict[str, Any], processing.Processed | None]:
    """An InvokeModel body: parsed and checked (outcrop.protocol.bedrock_runtime), translated for the copy.

    A prompt ARN as ``model_id`` is resolved first: the model id returned is the prompt's model. A
    model that opted into processing at import (outcrop/api/runtime/processing.py) has its body
    rendered by its input template or handler before it is parsed.
    """
    body = await read_json_object(request)
    model_id, body = await prompt_runtime.resolve_invoke(services, request, model_id, body)
    body, processed = await processing.prepare(request, services, model_id, body)
    invoke = p.parse_invoke(body)
    path, copy_body = invoke.to_copy()
    if invoke.style is p.InvokeStyle.CHAT:
        await _require_chat(services, model_id)
    return model_id, body, invoke.style, path, copy_body, processed


@router.post("/model/{modelId:path}/invoke", summary="InvokeModel")
async def invoke_model(
    modelId: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    if (embedded := await maybe_invoke_embedding(request, services, modelId)) is not None:
        return embedded  # a Titan or Cohere embeddings body (outcrop/api/runtime/embeddings.py)
    modelId, body, style, path, copy_body, processed = await _invoke_request(request, services, modelId)
    chat = style is p.InvokeStyle.CHAT
    guard = guardrails.invoke_guard(request, body)  # guardrail headers (outcrop/guardrails/runtime.py)
    async with invocation(services, request, modelId, "InvokeModel") as call:
        call.count_structured(copy_body)
        if guard is not None and (await guardrails.screen_invoke_input(guard, body, copy_body)).blocked:
            blocked = guardrails.blocked_invoke_answer(guard, chat)  # the copy is never asked
            call.record({}, body, blocked, guardrail=guard.log_entry())
            return JSONResponse(blocked)
        resp = await services.serving.post(
            modelId, path, copy_body, cold_start=cold_start_policy(request, bedrock=True)
        )
    answer = resp if chat else p.completion_superset(resp)
    if guard is not None:
        answer = await guardrails.screen_invoke_output(guard, answer, chat)
    call.record(resp.get("usage") or {}, body, answer, guardrail=guard.log_entry() if guard else None)
    headers = _usage_headers(resp.get("usage") or {}, call.latency_ms)
    if processed is not None:  # the model's output template / handler (outcrop/api/runtime/processing.py)
        out = await processing.finish(request, services, processed, answer, resp.get("usage") or {})
        if out is not None:
            return Response(out[0], media_type=out[1], headers=headers)
    return JSONResponse(answer, headers=headers)


@router.post("/model/{modelId:path}/invoke-with-response-stream", summary="InvokeModelWithResponseStream")
async def invoke_model_stream(
    modelId: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    # A stream gets its model's input processing only (an output template renders a whole answer).
    modelId, body, style, path, copy_body, _ = await _invoke_request(request, services, modelId)
    guard = guardrails.invoke_guard(request, body)  # guardrail headers (outcrop/guardrails/runtime.py)
    call = invocation(services, request, modelId, "InvokeModelWithResponseStream")
    call.count_structured(copy_body)
    if guard is not None and (await guardrails.screen_invoke_input(guard, body, copy_body)).blocked:
        blocked = guardrails.blocked_invoke_answer(guard, style is p.InvokeStyle.CHAT)
        call.record({}, body, blocked, guardrail=guard.log_entry())
        call.close()
        return StreamingResponse(
            iter([eventstream.chunk(blocked)]),
            media_type=eventstream.CONTENT_TYPE,
            headers={"X-Amzn-Bedrock-Content-Type": "application/json"},
        )
    chunks = await call.open_stream(
        services.serving.stream(modelId, path, copy_body, cold_start=cold_start_policy(request, bedrock=True))
    )
    if guard is not None:
        chunks = guard.filter_stream(chunks, chat=style is p.InvokeStyle.CHAT)

    async def frames() -> AsyncIterator[bytes]:
        pending: dict[str, Any] | None = None  # held back so the metrics ride on the last chunk
        usage: dict[str, Any] = {}
        sent: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                out = chunk if style is p.InvokeStyle.CHAT else p.completion_chunk_superset(chunk)
                if out is None or (style is p.InvokeStyle.CHAT and not chunk.get("choices")):
                    continue
                if pending is not None:
                    yield eventstream.chunk(pending)
                pending = out
                sent.append(out)
            last = pending or {"generation": "", "stop_reason": "stop"}
            if guard is not None:
                last.update(guard.invoke_fields())
            call.record(usage, body, sent, guardrail=guard.log_entry() if guard else None)
            last["amazon-bedrock-invocationMetrics"] = p.invocation_metrics(
                usage, call.latency_ms, call.first_byte_ms
            )
            yield eventstream.chunk(last)
        except OutcropError as exc:
            call.fail(exc)
            yield _stream_error("InvokeModelWithResponseStream", exc)
        finally:
            call.close()

    return StreamingResponse(
        frames(),
        media_type=eventstream.CONTENT_TYPE,
        headers={"X-Amzn-Bedrock-Content-Type": "application/json"},
    )


@router.post("/model/{modelId:path}/converse", summary="Converse")
async def converse(modelId: str, request: Request, services: Services = Depends(get_services)) -> Response:
    body = await read_json_object(request)
    modelId, body = await prompt_runtime.resolve_converse(services, request, modelId, body)  # a prompt ARN
    body, guard = guardrails.converse_guard(request, body, stream=False)
    chat = p.parse_converse(body).to_chat()  # a bad body is a ValidationException whatever the model
    await _require_chat(services, modelId)
    async with invocation(services, request, modelId, "Converse") as call:
        call.count_structured(chat)
        if guard is not None:  # guardrailConfig (outcrop/guardrails/runtime.py): checked before the copy
            if (await guard.screen_input()).blocked:
                blocked = guard.blocked_converse(0)
                call.record({}, body, blocked, guardrail=guard.log_entry())
                return JSONResponse(blocked)
            chat = p.parse_converse(guard.body).to_chat()
        resp = await services.serving.post(
            modelId, "/v1/chat/completions", chat, cold_start=cold_start_policy(request, bedrock=True)
        )
    answer = p.chat_to_converse(resp, call.latency_ms)
    if guard is not None:
        answer = await guard.converse_output(answer)
    call.record(resp.get("usage") or {}, body, answer, guardrail=guard.log_entry() if guard else None)
    return JSONResponse(answer)


@router.post("/model/{modelId:path}/converse-stream", summary="ConverseStream")
async def converse_stream(
    modelId: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    body = await read_json_object(request)
    modelId, body = await prompt_runtime.resolve_converse(services, request, modelId, body)  # a prompt ARN
    body, guard = guardrails.converse_guard(request, body, stream=True)
    chat = p.parse_converse(body).to_chat()  # a bad body is a ValidationException whatever the model
    await _require_chat(services, modelId)
    call = invocation(services, request, modelId, "ConverseStream")
    call.count_structured(chat)
    if guard is not None:  # guardrailConfig (outcrop/guardrails/runtime.py): checked before the copy
        if (await guard.screen_input()).blocked:
            events = guard.blocked_stream_events()
            call.record({}, body, events, guardrail=guard.log_entry())
            call.close()
            return StreamingResponse(
                iter([eventstream.event(name, payload) for name, payload in events]),
                media_type=eventstream.CONTENT_TYPE,
            )
        chat = p.parse_converse(guard.body).to_chat()
    chunks = await call.open_stream(
        services.serving.stream(
            modelId, "/v1/chat/completions", chat, cold_start=cold_start_policy(request, bedrock=True)
        )
    )
    if guard is not None:
        chunks = guard.filter_stream(chunks)

    async def frames() -> AsyncIterator[bytes]:
        usage: dict[str, Any] = {}
        blocks = ConverseStreamTranslator()  # text and toolUse content blocks (protocol/converse_tools.py)
        try:
            yield eventstream.event("messageStart", {"role": "assistant"})
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    for name, payload in blocks.feed(choice):
                        yield eventstream.event(name, payload)
            closing, stop_reason = blocks.end()
            if guard is not None:
                stop_reason = guard.stop_reason(stop_reason)
            for name, payload in closing:
                yield eventstream.event(name, payload)
            yield eventstream.event("messageStop", {"stopReason": stop_reason})
            logged = guard.log_entry() if guard else None
            call.record(
                usage,
                body,
                {"output": {"message": blocks.message()}, "stopReason": stop_reason},
                guardrail=logged,
            )
            metadata = {"usage": p.token_usage(usage), "metrics": {"latencyMs": call.latency_ms}}
            if guard is not None and (trace := guard.converse_trace()) is not None:
                metadata["trace"] = trace
            yield eventstream.event("metadata", metadata)
        except OutcropError as exc:
            call.fail(exc)
            yield _stream_error("ConverseStream", exc)
        finally:
            call.close()

    return StreamingResponse(frames(), media_type=eventstream.CONTENT_TYPE)


@router.post("/model/{modelId:path}/count-tokens", summary="CountTokens")
async def count_tokens(
    modelId: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    body = await read_json_object(request)
    messages, prompt = _what_to_count(body.get("input"))  # a bad body is a 400 whatever the model
    model = await services.serving.resolve(modelId)
    if messages is not None:
        count = services.tokenizers.count_messages(model.id, messages)
    else:
        count = services.tokenizers.count_prompt(model.id, prompt or "")
    return JSONResponse({"inputTokens": count})


def _what_to_count(source: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """CountTokens' input as (chat messages, None) or (None, prompt), with InvokeModel/Converse's checks."""
    if (
        not isinstance(source, dict)
        or len(source) != 1
        or next(iter(source)) not in ("invokeModel", "converse")
    ):
        raise InvalidRequestError(
            "'input' must hold exactly one of 'invokeModel' {body} or 'converse' {messages}.", param="input"
        )
    if "converse" in source:
        converse_body = source["converse"]
        if not isinstance(converse_body, dict):
            raise InvalidRequestError(
                "input.converse must be an object holding 'messages' (and optionally 'system').",
                param="input.converse",
            )
        only = {k: converse_body.get(k) for k in ("messages", "system", "toolConfig")}  # what is counted
        return p.parse_converse(only).to_chat()["messages"], None
    raw = source["invokeModel"].get("body") if isinstance(source["invokeModel"], dict) else None
    try:
        decoded = base64.b64decode(raw if isinstance(raw, str) else "", validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise InvalidRequestError(
            "input.invokeModel.body must be the base64 of a JSON InvokeModel body.",
            param="input.invokeModel.body",
        )
    invoke_body = jsonbody.loads(decoded, where="input.invokeModel.body")
    if not isinstance(invoke_body, dict):
        raise InvalidRequestError(
            "input.invokeModel.body must be a JSON object.", param="input.invokeModel.body"
        )
    invoke = p.parse_invoke(invoke_body)  # the same checks as InvokeModel
    if invoke.messages is not None:
        return invoke.messages, None
    return None, invoke.prompt
