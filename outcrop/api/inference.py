"""What the inference routes (Bedrock runtime, OpenAI) share: body parsing, cold-start policy, and the
bookkeeping of one invocation (latency, first byte, tokens, errors -> metrics)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from fastapi import Request

from outcrop.api.bedrock.errors import bedrock_error
from outcrop.api.deps import Services
from outcrop.auth.guard import principal_name
from outcrop.errors import (
    InvalidRequestError,
    ModelNotChatCapableError,
    ModelNotReadyError,
    OutcropError,
    ThrottlingError,
    WrongModelKindError,
)
from outcrop.protocol import tools
from outcrop.serving.service import ColdStartPolicy
from outcrop.serving.throttling import principal_of

COLD_START_HEADER = "x-outcrop-cold-start"
# The metrics label of every requested name that is not a known model.
UNKNOWN_MODEL_LABEL = "<unknown>"


def require_chat(model: Any) -> None:
    """A chat request's model must have a chat template; an embedding model is named as such (adding a
    chat template would not help it)."""
    if getattr(model, "is_embedding", False):
        raise WrongModelKindError(model.name, "embedding", "chat")
    if not model.instruct_supported:
        raise ModelNotChatCapableError(model.name)


def cold_start_policy(request: Request, *, bedrock: bool) -> ColdStartPolicy:
    """Bedrock surfaces fail fast with ModelNotReadyException (boto3 retries); OpenAI surfaces wait.

    A request can choose with the ``X-Outcrop-Cold-Start: wait|fail`` header.
    """
    choice = request.headers.get(COLD_START_HEADER, "").strip().lower()
    if choice not in ("", "wait", "fail"):
        raise InvalidRequestError(
            f"{COLD_START_HEADER} is {choice!r}; use 'wait' or 'fail'.", param=COLD_START_HEADER
        )
    wait = (choice == "wait") if choice else not bedrock
    services: Services = request.app.state.services
    return ColdStartPolicy(
        wait=wait,
        max_wait_seconds=services.config.serving.cold_start_max_wait_seconds,
        from_request=bool(choice),
    )


class Invocation:
    """One model call: admits it past the principal's rate limits, times it, and records it in the
    metrics, the token bucket and (when enabled) the invocation log, however it ends."""

    def __init__(self, services: Services, request: Request, model: str, operation: str) -> None:
        self.services = services
        self.metrics = services.metrics
        self.model = model
        self.operation = operation
        self.request_id = getattr(request.state, "request_id", "")
        self.principal = principal_name(request) or principal_of(
            request.headers.get("authorization"),
            request.headers.get("x-api-key"),
            request.client.host if request.client else None,
        )
        self.started = time.perf_counter()
        self.first_byte_ms = 0
        self.latency_ms = 0
        self._closed = False
        try:
            services.throttler.admit(self.principal)
        except ThrottlingError as exc:
            self.fail(exc)
            raise

    async def __aenter__(self) -> Invocation:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, OutcropError):
            self.fail(exc)
        self.close()

    @property
    def label(self) -> str:
        """The model's metrics label: its name once resolved, one shared value for names that are not
        models (so callers cannot grow the metrics without bound by inventing names)."""
        return self.services.serving.known_model_name(self.model) or UNKNOWN_MODEL_LABEL

    def _elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def record(
        self,
        usage: dict[str, Any],
        input_body: Any = None,
        output_body: Any = None,
        *,
        guardrail: dict[str, Any] | None = None,
    ) -> None:
        self.latency_ms = self._elapsed_ms()
        prompt_tokens, output_tokens = (
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )
        label = self.label
        self.metrics.invocations.labels(label, self.operation).inc()
        self.metrics.input_tokens.labels(label).inc(prompt_tokens)
        self.metrics.output_tokens.labels(label).inc(output_tokens)
        self.metrics.invocation_latency.labels(label).observe(self.latency_ms / 1000)
        self.metrics.recent.invocation(self.latency_ms / 1000, output_tokens)
        self.services.throttler.charge_tokens(self.principal, prompt_tokens + output_tokens)
        self.services.invocation_log.log(
            request_id=self.request_id,
            operation=self.operation,
            model_id=self.model,
            principal=self.principal,
            input_body=input_body,
            output_body=output_body,
            input_tokens=prompt_tokens,
            output_tokens=output_tokens,
            guardrail=guardrail,
        )

    def count_structured(self, copy_body: dict[str, Any]) -> None:
        """Count what the copy is asked for beyond text: tools, a JSON schema or object, vLLM's guides."""
        for kind in tools.kinds(copy_body):
            self.metrics.structured_requests.labels(self.operation, kind).inc()

    def fail(self, exc: OutcropError) -> None:
        if isinstance(exc, ThrottlingError | ModelNotReadyError):
            self.metrics.throttles.labels(self.label).inc()
            self.metrics.recent.throttle()
            return
        kind = "client" if bedrock_error(exc)[1] < 500 else "server"
        self.metrics.invocation_errors.labels(self.label, kind).inc()
        self.metrics.recent.error()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self.latency_ms:
                self.latency_ms = self._elapsed_ms()

    async def open_stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Wait for the first chunk so that errors before it become ordinary error responses."""
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except OutcropError as exc:
            self.fail(exc)
            self.close()
            raise
        self.first_byte_ms = self._elapsed_ms()
        self.metrics.time_to_first_token.labels(self.label).observe(self.first_byte_ms / 1000)
        self.metrics.recent.first_token(self.first_byte_ms / 1000)

        async def rest() -> AsyncIterator[dict[str, Any]]:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk

        return rest()


def invocation(services: Services, request: Request, model: str, operation: str) -> Invocation:
    return Invocation(services, request, model, operation)
