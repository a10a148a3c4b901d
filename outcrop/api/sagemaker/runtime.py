"""The SageMaker runtime: InvokeEndpoint and InvokeEndpointWithResponseStream (boto3 ``sagemaker-runtime``).

Thin: find the endpoint's variant, apply its input template, translate the TGI / Messages API body
for the copy (``outcrop.sagemaker.payloads``), call it through the same router, throttling, metrics
and invocation log as Bedrock's runtime, and answer in the caller's shape (or the output template's).
SageMaker endpoints hold a request while a copy starts (as serverless endpoints do) instead of
answering ModelNotReady; ``X-Outcrop-Cold-Start: fail`` asks for the Bedrock behaviour.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from outcrop.api import jsonbody
from outcrop.api.deps import MAX_BODY_BYTES, Services, get_services
from outcrop.api.inference import cold_start_policy, invocation, require_chat
from outcrop.api.runtime import eventstream
from outcrop.api.sagemaker.errors import runtime_error
from outcrop.api.sagemaker.metrics import SageMakerMetrics
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.sagemaker import payloads
from outcrop.sagemaker.payloads import CopyCall, PayloadStyle
from outcrop.sagemaker.service import SageMakerService, Target

router = APIRouter(tags=["sagemaker runtime"])

TARGET_VARIANT = "x-amzn-sagemaker-target-variant"
INFERENCE_COMPONENT = "x-amzn-sagemaker-inference-component"
STREAM_ACCEPT = "x-amzn-sagemaker-accept"
INVOKED_VARIANT = "x-Amzn-Invoked-Production-Variant"
JSON = "application/json"
# TGI's streaming media type, sent in X-Amzn-SageMaker-Content-Type.
EVENT_STREAM_TEXT = "text/event-stream"
_JSON_ACCEPTS = ("", "*/*", JSON, "application/*")


async def _resource(request: Request, config: OutcropConfig) -> str:
    name = request.path_params.get("EndpointName", "")
    return f"arn:aws:sagemaker:{config.aws.region}:{config.aws.account_id}:endpoint/{name.lower()}"


def _services(services: Services) -> tuple[SageMakerService, SageMakerMetrics]:
    return services.extra["sagemaker"], services.extra["sagemaker_metrics"]


async def _target(request: Request, svc: SageMakerService, endpoint: str) -> Target:
    return await svc.target(
        endpoint,
        request.headers.get(TARGET_VARIANT) or None,
        request.headers.get(INFERENCE_COMPONENT) or None,
    )


async def _payload(request: Request) -> Any:
    """The body by its ContentType: JSON (default) as it is, text as TGI ``inputs``."""
    content_type = _content_type(request)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequestError(
            f"The request body has {len(raw):,} bytes; the limit is {MAX_BODY_BYTES:,}."
        )
    if content_type in (JSON, "application/octet-stream", "binary/octet-stream") or content_type.endswith(
        "+json"
    ):
        return jsonbody.loads(raw or b"{}", where="Body")
    if content_type.startswith("text/"):
        try:
            return {"inputs": raw.decode()}
        except UnicodeDecodeError:
            raise InvalidRequestError("The text body is not valid UTF-8.", param="Body") from None
    raise InvalidRequestError(
        f"ContentType '{content_type}' is not supported; send application/json (a TGI or Messages API body) "
        "or text/plain (the prompt).",
        param="ContentType",
    )


def _content_type(request: Request) -> str:
    return (request.headers.get("content-type") or JSON).split(";")[0].strip().lower()


async def _prepare(request: Request, services: Services, target: Target, payload: Any) -> CopyCall:
    handler = target.processing.handler
    if handler is not None:
        svc: SageMakerService = services.extra["sagemaker"]
        payload = await svc.handlers.call(handler, "input_fn", payload, _content_type(request))
    call = payloads.to_copy(target.processing.apply_input(payload))
    if call.style is PayloadStyle.MESSAGES:
        require_chat(await services.serving.resolve(target.imported_model))
    return call


@router.post("/endpoints/{EndpointName}/invocations", summary="InvokeEndpoint")
async def invoke_endpoint(
    EndpointName: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    started = time.perf_counter()
    svc, metrics = _services(services)
    variant: str | None = None
    component = ""
    status, model_seconds = 500, 0.0
    try:
        target = await _target(request, svc, EndpointName)
        variant = target.variant.name
        component = target.component
        payload = await _payload(request)
        call = await _prepare(request, services, target, payload)
        accept = (request.headers.get("accept") or "").split(";")[0].strip().lower()
        custom_output = target.processing.output_template is not None or target.processing.handler is not None
        if accept not in _JSON_ACCEPTS and not custom_output:
            raise InvalidRequestError(
                f"Accept '{accept}' is not supported; this endpoint answers {JSON} (an output template, "
                "OUTCROP_OUTPUT_TEMPLATE, or a handler's output_fn, can answer other formats).",
                param="Accept",
            )
        async with (
            invocation(services, request, target.imported_model, "InvokeEndpoint") as inv,
            svc.admit(target),
        ):
            model_started = time.perf_counter()
            resp = await services.serving.post(
                target.imported_model,
                call.path,
                call.body,
                cold_start=cold_start_policy(request, bedrock=False),
            )
            model_seconds = time.perf_counter() - model_started
            answer = payloads.from_copy(call, resp)
            usage = resp.get("usage") or {}
            rendered = target.processing.apply_output(payload, answer, usage)
            if target.processing.handler is not None:
                out = await svc.handlers.call(target.processing.handler, "output_fn", answer, accept or JSON)
                rendered = (
                    out.encode() if isinstance(out, str) else json.dumps(out, ensure_ascii=False).encode()
                )
            inv.record(usage, payload, answer)
        status = 200
        content = rendered if rendered is not None else json.dumps(answer, ensure_ascii=False).encode()
        media_type = accept if rendered is not None and accept not in _JSON_ACCEPTS else JSON
        return Response(content, media_type=media_type, headers={INVOKED_VARIANT: target.variant.name})
    except OutcropError as exc:
        status = runtime_error(exc)[1]
        raise
    finally:
        if variant is not None:
            metrics.observe(
                EndpointName,
                variant,
                status=status,
                total_seconds=time.perf_counter() - started,
                model_seconds=model_seconds,
                component=component,
            )


def _part(data: bytes) -> bytes:
    """A ``PayloadPart`` event: botocore hands its payload to the caller as ``PayloadPart.Bytes``."""
    return eventstream.encode_message(
        {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"},
        data,
    )


def _stream_error(exc: OutcropError) -> bytes:
    """An error after streaming began: ``ModelStreamError``, which botocore raises as EventStreamError."""
    code = "ModelInvocationTimeExceeded" if runtime_error(exc)[1] == 408 else "StreamBroken"
    return eventstream.encode_message(
        {
            ":exception-type": "ModelStreamError",
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"Message": exc.message, "ErrorCode": code}).encode(),
    )


@router.post(
    "/endpoints/{EndpointName}/invocations-response-stream", summary="InvokeEndpointWithResponseStream"
)
async def invoke_endpoint_stream(
    EndpointName: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    started = time.perf_counter()
    svc, metrics = _services(services)
    target = await _target(request, svc, EndpointName)
    name = target.variant.name
    stack = AsyncExitStack()
    try:
        payload = await _payload(request)
        call = await _prepare(request, services, target, payload)
        if call.batched:
            raise InvalidRequestError(
                "A streamed invocation takes one input; send 'inputs' as a string (or use InvokeEndpoint for a list).",
                param="inputs",
            )
        copy_body = {**call.body, "stream": True, "stream_options": {"include_usage": True}}
        inv = invocation(services, request, target.imported_model, "InvokeEndpointWithResponseStream")
        await stack.enter_async_context(svc.admit(target))
        chunks = await inv.open_stream(
            services.serving.stream(
                target.imported_model,
                call.path,
                copy_body,
                cold_start=cold_start_policy(request, bedrock=False),
            )
        )
    except OutcropError as exc:
        await stack.aclose()
        metrics.observe(
            EndpointName,
            name,
            status=runtime_error(exc)[1],
            total_seconds=time.perf_counter() - started,
            model_seconds=0,
            component=target.component,
        )
        raise
    model_started = time.perf_counter()

    async def frames() -> AsyncIterator[bytes]:
        status = 200
        usage: dict[str, Any] = {}
        texts: list[str] = []
        pending: str | None = None  # TGI's last token event carries generated_text and details
        finish: str | None = None
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if call.style is PayloadStyle.MESSAGES:
                    if chunk.get("choices"):
                        yield _part(payloads.stream_line(chunk))
                    continue
                for choice in chunk.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    text = choice.get("text") or ""
                    if not text:
                        continue
                    if pending is not None:
                        yield _part(payloads.stream_line(payloads.tgi_token_event(pending)))
                    pending = text
                    texts.append(text)
            if call.style is PayloadStyle.MESSAGES:
                yield _part(b"data: [DONE]\n\n")
            else:
                whole = "".join(texts)
                final = payloads.tgi_final_event(
                    call, pending or "", whole, finish, int(usage.get("completion_tokens", len(texts)))
                )
                yield _part(payloads.stream_line(final))
            inv.record(usage, payload, "".join(texts))
        except OutcropError as exc:
            status = runtime_error(exc)[1]
            inv.fail(exc)
            yield _stream_error(exc)
        finally:
            inv.close()
            await stack.aclose()
            now = time.perf_counter()
            metrics.observe(
                EndpointName,
                name,
                status=status,
                total_seconds=now - started,
                model_seconds=now - model_started,
                component=target.component,
            )

    return StreamingResponse(
        frames(),
        media_type=eventstream.CONTENT_TYPE,
        headers={"X-Amzn-SageMaker-Content-Type": EVENT_STREAM_TEXT, INVOKED_VARIANT: name},
    )


invoke_endpoint.outcrop_resource = _resource  # type: ignore[attr-defined]
invoke_endpoint_stream.outcrop_resource = _resource  # type: ignore[attr-defined]
invoke_endpoint.outcrop_action = lambda _request: "sagemaker:InvokeEndpoint"  # type: ignore[attr-defined]
invoke_endpoint_stream.outcrop_action = (  # type: ignore[attr-defined]
    lambda _request: "sagemaker:InvokeEndpointWithResponseStream"
)
