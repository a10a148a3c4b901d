"""The copy's HTTP surface: OpenAI completions/chat, tokenize, models, health, metrics.

Thin routes: parse (``protocol``), translate to engine sequences (``requests``), stream or
collect the outputs, translate back. Every error leaves as an OpenAI error object.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from outcrop.engine import requests as req
from outcrop.engine.engine import RequestOutput
from outcrop.engine.guided import Constraint
from outcrop.engine.process import require_ready
from outcrop.engine.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ErrorBody,
    ErrorResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    ToolCallOut,
    Usage,
    new_id,
    now_seconds,
)
from outcrop.engine.runtime import WorkerRuntime, WorkerStatus
from outcrop.engine.tools import NO_TOOL_SUPPORT, ToolCallStream, ToolRequest, tool_request
from outcrop.errors import (
    InternalError,
    InvalidRequestError,
    OutcropError,
    openai_error_body,
    retry_after_headers,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ errors


def error_response(exc: OutcropError) -> JSONResponse:
    """``exc`` as OpenAI's error object, with the status, type and code its class carries."""
    body = ErrorResponse.model_validate(openai_error_body(exc))
    return JSONResponse(body.model_dump(), status_code=exc.openai_status, headers=retry_after_headers(exc))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "The request body is invalid.", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "The request body is not valid JSON; send a JSON object.", None
    if kind == "extra_forbidden":
        return f"Unknown field '{field}': remove it (this server follows the OpenAI schema).", field
    if kind == "missing":
        return f"Field '{field}' is required.", field
    if field is None:
        return f"The request body is invalid: {first.get('msg')}; send a JSON object.", None
    return f"Invalid value for '{field}': {first.get('msg')}.", loc[0] if loc else None


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OutcropError)
    async def _outcrop_error(_: Request, exc: OutcropError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(InvalidRequestError(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "internal_error"
        body = ErrorResponse(error=ErrorBody(message=str(exc.detail), type=kind, code=exc.status_code))
        return JSONResponse(body.model_dump(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return error_response(
            InternalError(f"The worker failed unexpectedly ({type(exc).__name__}); see its log.")
        )


# ------------------------------------------------------------------ app


@asynccontextmanager
async def _run_loaded_engine(app: FastAPI) -> AsyncIterator[None]:
    """Default lifespan for a runtime loaded before the app starts (tests, embedding)."""
    runtime: WorkerRuntime = app.state.runtime
    if runtime.loaded:
        runtime.start_engine(asyncio.get_running_loop())
    yield
    runtime.stop_engine()


def create_app(runtime: WorkerRuntime, lifespan: Any = None) -> FastAPI:
    app = FastAPI(
        title="Outcrop model copy",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan or _run_loaded_engine,
    )
    app.state.runtime = runtime
    _install_error_handlers(app)

    def ready() -> WorkerRuntime:
        require_ready(runtime.status, runtime.model_id)
        return runtime

    @app.get("/health")
    async def health() -> JSONResponse:
        body = HealthResponse(status=runtime.status.value, model=runtime.model_id, detail=runtime.failure)
        facts = runtime.facts
        if facts is not None:
            stats = runtime.engine_stats()
            body.device = str(runtime.device)
            body.dtype = str(runtime.dtype).removeprefix("torch.")
            body.memory_bytes = runtime.memory_bytes()
            body.kv_cache_bytes = facts.kv_cache_bytes
            body.kv_cache_blocks = facts.num_blocks
            body.kv_cache_free_blocks = stats.free_blocks
            body.block_size = facts.block_size
            body.prefix_caching = facts.prefix_caching
            body.max_batch = facts.max_batch
            body.max_model_len = facts.max_model_len
            body.running = stats.running
            body.waiting = stats.waiting
            body.engine = "core process" if runtime.core is not None else "in process"
        status = 200 if runtime.status is WorkerStatus.READY else 503
        return JSONResponse(body.model_dump(exclude_none=True), status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> ModelList:
        rt = ready()
        return ModelList(
            data=[ModelCard(id=rt.model_id, created=rt.loaded_at, max_model_len=rt.max_model_len)]
        )

    @app.post("/v1/tokenize")
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        rt = ready()
        assert rt.tokenizer is not None
        if (body.prompt is None) == (body.messages is None):
            raise InvalidRequestError(
                "Send exactly one of 'prompt' (a string) or 'messages' (a chat).", param="prompt"
            )
        # Off the event loop: a long text must not stall /health and the other requests.
        if body.prompt is not None:
            tokens = await asyncio.to_thread(
                rt.tokenizer.encode, body.prompt, add_special_tokens=body.add_special_tokens
            )
        else:
            messages = req.chat_messages(body.messages or [])
            tokens = await asyncio.to_thread(rt.tokenizer.encode_chat, messages)
        return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=rt.max_model_len)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        rt = ready()
        assert rt.tokenizer is not None
        rt.check_choices(req.num_prompts(body) * body.n, req.num_prompts(body), body.n)
        vocab_size = rt.facts.vocab_size if rt.facts else 0
        # Off the event loop (cheap length checks first): a long prompt must not stall /health
        # and the other requests while it is tokenized.
        constraint = req.output_constraint(body)
        prompts = await asyncio.to_thread(
            req.completion_prompts, body, rt.tokenizer, vocab_size, rt.max_model_len
        )
        grammar = await rt.compile_constraint(constraint) if constraint is not None else None
        params = req.completion_params(body, [len(p) for p in prompts], rt.max_model_len, grammar)
        sequences = req.fan_out(prompts, params, body.n)
        rt.check_capacity(len(sequences))
        response_id = new_id("cmpl")
        if body.stream:
            return _sse(_stream_completion(rt, body, sequences, response_id))
        outputs = await _collect(rt, sequences, request, body.priority)
        if outputs is None:
            return Response(status_code=499)
        choices = []
        for i, outs in enumerate(outputs):
            lp = _completion_logprobs(rt, outs) if body.logprobs is not None else None
            choices.append(
                CompletionChoice(
                    index=i,
                    text="".join(o.text for o in outs),
                    logprobs=lp,
                    finish_reason=_reason(outs),
                    stop_reason=_stop_reason(outs),
                )
            )
        resp = CompletionResponse(
            id=response_id,
            created=now_seconds(),
            model=rt.model_id,
            choices=choices,
            usage=_usage(outputs, sequences),
        )
        return JSONResponse(resp.model_dump())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        rt = ready()
        assert rt.tokenizer is not None
        rt.check_choices(body.n, 1, body.n)
        tools = tool_request(body.tools, body.tool_choice, body.parallel_tool_calls)
        if tools is not None and not rt.tokenizer.supports_tools:
            raise InvalidRequestError(NO_TOOL_SUPPORT, param="tools", code="tools_not_supported")
        if tools is not None:
            tools.short_ids = rt.tokenizer.tool_parser.name == "mistral"
        constraint: Constraint | None
        kind: str | None
        if tools is not None and tools.constrained:
            for part in tools.parameter_constraints():  # a bad schema's error names its tool
                await rt.compile_constraint(part, count=False)
            constraint, kind = tools.constraint(), "tool_call"
        else:
            constraint = req.output_constraint(body)
            kind = constraint.kind if constraint is not None else None
        prompt = await asyncio.to_thread(req.chat_prompt, body, rt.tokenizer, rt.max_model_len, tools)
        grammar = await rt.compile_constraint(constraint, kind) if constraint is not None else None
        params = req.chat_params(body, len(prompt), rt.max_model_len, grammar)
        sequences = req.fan_out([prompt], [params], body.n)
        rt.check_capacity(len(sequences))
        response_id = new_id("chatcmpl")
        if tools is not None and (tools.mode == "none" or (constraint is not None and not tools.constrained)):
            tools = None  # no calls to look for: tool_choice none, or the output follows response_format
        if body.stream:
            return _sse(_stream_chat(rt, body, sequences, response_id, tools))
        outputs = await _collect(rt, sequences, request, body.priority)
        if outputs is None:
            return Response(status_code=499)
        choices = []
        for i, outs in enumerate(outputs):
            lp = _chat_logprobs(rt, outs) if body.logprobs else None
            text = "".join(o.text for o in outs)
            reason = _reason(outs)
            message = ChatMessageOut(content=text)
            if tools is not None:
                if tools.constrained:
                    content, calls = None, tools.forced_calls(text)
                else:
                    content, parsed = rt.tokenizer.tool_parser.parse(text)
                    calls = tools.with_ids(parsed)
                if calls:
                    message = ChatMessageOut(
                        content=content, tool_calls=[ToolCallOut(**c.as_openai()) for c in calls]
                    )
                    reason = "tool_calls" if reason == "stop" else reason
            choices.append(
                ChatChoice(
                    index=i,
                    message=message,
                    logprobs=lp,
                    finish_reason=reason,
                    stop_reason=_stop_reason(outs),
                )
            )
        resp = ChatCompletionResponse(
            id=response_id,
            created=now_seconds(),
            model=rt.model_id,
            choices=choices,
            usage=_usage(outputs, sequences),
        )
        return JSONResponse(resp.model_dump())

    return app


# ------------------------------------------------------------------ collecting and streaming


def _reason(outs: list[RequestOutput]) -> Any:
    """OpenAI's finish_reason of a choice (None while it runs)."""
    reason = outs[-1].finish_reason if outs else None
    return reason if reason in ("stop", "length") else None


def _stop_reason(outs: list[RequestOutput]) -> str | None:
    """The stop string that ended the choice (vLLM's ``stop_reason``), else None."""
    return outs[-1].stop_reason if outs and outs[-1].finish_reason == "stop" else None


def _usage(outputs: list[list[RequestOutput]], sequences: list[req.Sequence]) -> Usage:
    # Each distinct prompt is counted once, as OpenAI does for n > 1.
    prompt_tokens = sum(len(s.prompt_ids) for s in sequences if s.sibling == 0)
    completion = sum(outs[-1].completion_tokens for outs in outputs if outs)
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion
    )


def _raise_if_failed(output: RequestOutput) -> None:
    if output.error:
        raise InvalidRequestError(output.error) if output.error_is_request else InternalError(output.error)


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _collect(
    rt: WorkerRuntime, sequences: list[req.Sequence], request: Request, priority: int
) -> list[list[RequestOutput]] | None:
    """All outputs per sequence, or None if the client went away (generation is aborted)."""

    async def gather() -> list[list[RequestOutput]]:
        outputs: list[list[RequestOutput]] = [[] for _ in sequences]
        async with aclosing(
            rt.generate([s.as_tuple() for s in sequences], stream=False, priority=priority)
        ) as stream:
            async for index, output in stream:
                _raise_if_failed(output)
                outputs[index].append(output)
        return outputs

    work = asyncio.ensure_future(gather())
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if work in done:
        return work.result()
    work.cancel()  # closes the stream, which aborts the unfinished sequences
    try:
        await work
    except asyncio.CancelledError:
        pass
    return None


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _error_event(exc: OutcropError) -> str:
    kind = "invalid_request_error" if isinstance(exc, InvalidRequestError) else "internal_error"
    return _data({"error": {"message": exc.message, "type": kind, "param": None, "code": None}})


async def _stream_completion(
    rt: WorkerRuntime, body: CompletionRequest, sequences: list[req.Sequence], response_id: str
) -> AsyncIterator[str]:
    created = now_seconds()
    last: dict[int, RequestOutput] = {}
    try:
        async with aclosing(rt.generate([s.as_tuple() for s in sequences], priority=body.priority)) as stream:
            async for index, output in stream:
                _raise_if_failed(output)
                last[index] = output
                if not output.text and not output.finished:
                    continue
                lp = _completion_logprobs(rt, [output]) if body.logprobs is not None else None
                choice = CompletionChoice(
                    index=index,
                    text=output.text,
                    logprobs=lp,
                    finish_reason=_reason([output]),
                    stop_reason=_stop_reason([output]),
                )
                chunk = CompletionResponse(
                    id=response_id, created=created, model=rt.model_id, choices=[choice]
                )
                yield _data(chunk.model_dump(exclude={"usage"}))
    except OutcropError as exc:
        yield _error_event(exc)
        yield "data: [DONE]\n\n"
        return
    if body.stream_options and body.stream_options.include_usage:
        usage = _usage([[last[i]] for i in sorted(last)], sequences)
        chunk = CompletionResponse(
            id=response_id, created=created, model=rt.model_id, choices=[], usage=usage
        )
        yield _data(chunk.model_dump())
    yield "data: [DONE]\n\n"


async def _stream_chat(
    rt: WorkerRuntime,
    body: ChatCompletionRequest,
    sequences: list[req.Sequence],
    response_id: str,
    tools: ToolRequest | None = None,
) -> AsyncIterator[str]:
    created = now_seconds()
    last: dict[int, RequestOutput] = {}
    assert rt.tokenizer is not None
    parser = rt.tokenizer.tool_parser
    calls = {i: ToolCallStream(tools, parser) for i in range(len(sequences))} if tools is not None else {}

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        msg = ChatCompletionChunk(
            id=response_id, created=created, model=rt.model_id, choices=choices, usage=usage
        )
        payload = msg.model_dump(exclude=None if usage else {"usage"})
        for choice in payload["choices"]:  # OpenAI omits unset delta fields
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return _data(payload)

    for i in range(len(sequences)):
        yield chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
    try:
        async with aclosing(rt.generate([s.as_tuple() for s in sequences], priority=body.priority)) as stream:
            async for index, output in stream:
                _raise_if_failed(output)
                last[index] = output
                if not output.text and not output.finished:
                    continue
                lp = _chat_logprobs(rt, [output]) if body.logprobs else None
                reason = _reason([output])
                if index in calls:
                    for delta in _tool_deltas(calls[index], output):
                        yield chunk([ChatChunkChoice(index=index, delta=delta)])
                    if calls[index].calls and reason == "stop":
                        reason = "tool_calls"
                    delta = ChatDelta()
                else:
                    delta = ChatDelta(content=output.text) if output.text else ChatDelta()
                if delta.content is None and not output.finished and lp is None:
                    continue
                yield chunk(
                    [
                        ChatChunkChoice(
                            index=index,
                            delta=delta,
                            logprobs=lp,
                            finish_reason=reason,
                            stop_reason=_stop_reason([output]),
                        )
                    ]
                )
    except OutcropError as exc:
        yield _error_event(exc)
        yield "data: [DONE]\n\n"
        return
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], _usage([[last[i]] for i in sorted(last)], sequences))
    yield "data: [DONE]\n\n"


def _tool_deltas(stream: ToolCallStream, output: RequestOutput) -> list[ChatDelta]:
    """One streamed output of a choice that may call tools: content and tool-call deltas, in order."""
    content, tool_calls = stream.feed(output.text)
    if output.finished:
        more_content, more_calls = stream.finish()
        content, tool_calls = content + more_content, tool_calls + more_calls
    deltas = [ChatDelta(content=content)] if content else []
    deltas.extend(ChatDelta(tool_calls=[call]) for call in tool_calls)  # one call delta per chunk, as OpenAI
    return deltas


# ------------------------------------------------------------------ logprobs


def _completion_logprobs(rt: WorkerRuntime, outs: list[RequestOutput]) -> CompletionLogprobs:
    assert rt.tokenizer is not None
    tok = rt.tokenizer
    result = CompletionLogprobs()
    offset = 0
    for out in outs:
        for entry in out.logprobs:
            text = tok.token_text(entry.token_id)
            result.tokens.append(text)
            result.token_logprobs.append(entry.logprob)
            result.text_offset.append(offset)
            offset += len(text)
            result.top_logprobs.append({tok.token_text(t): lp for t, lp in entry.top} if entry.top else None)
    return result


def _chat_logprobs(rt: WorkerRuntime, outs: list[RequestOutput]) -> dict[str, Any]:
    assert rt.tokenizer is not None
    tok = rt.tokenizer

    def item(token_id: int, logprob: float) -> dict[str, Any]:
        text = tok.token_text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = []
    for out in outs:
        for entry in out.logprobs:
            content.append(
                {**item(entry.token_id, entry.logprob), "top_logprobs": [item(t, lp) for t, lp in entry.top]}
            )
    return {"content": content}
