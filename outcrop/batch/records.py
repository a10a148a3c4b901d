"""One batch record through the model: the same translation as the online Bedrock runtime.

``modelInput`` is an InvokeModel body (modelInvocationType ``InvokeModel``) or a Converse
request (``Converse``); ``modelOutput`` is exactly what InvokeModel / Converse would answer,
tool use and structured output included (``toolConfig``, ``tools``, ``response_format``: the
same checks and translation as online, which Bedrock's own batch jobs do not offer).
A record whose input is malformed, or that the model rejects, becomes an error line with
Bedrock's ``{errorCode, errorMessage}``; retryable failures (busy copies, a copy restarting)
are tried again first
(the exception class's ``retryable`` decides).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from outcrop.batch.inputs import Record
from outcrop.errors import InvalidRequestError, ModelNotChatCapableError, OutcropError, WrongModelKindError
from outcrop.protocol import bedrock_runtime as p
from outcrop.protocol import embeddings as emb
from outcrop.serving.routing import EMBEDDINGS_PATH, Priority
from outcrop.serving.service import ColdStartPolicy, Serving
from outcrop.store.imports import ImportedModel

INVOKE_MODEL = "InvokeModel"
CONVERSE = "Converse"
INVOCATION_TYPES = (INVOKE_MODEL, CONVERSE)
# Longest pause between tries of one record; a busy model frees slots within seconds.
MAX_RETRY_PAUSE_SECONDS = 5.0


def error_code(exc: OutcropError) -> int:
    """The HTTP status Bedrock would have answered this record with (the class's ``bedrock_status``)."""
    return exc.bedrock_status


@dataclass(frozen=True)
class Outcome:
    record: Record
    line: dict[str, Any]  # the output line: recordId, modelInput and modelOutput or error
    ok: bool
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class RecordCall:
    """What a job's records share: the model, how to call it, and the retry policy."""

    serving: Serving
    model_key: str
    model_name: str
    chat_capable: bool
    invocation_type: str
    cold_start: ColdStartPolicy
    deadline_seconds: float
    max_attempts: int
    # outcrop.guardrails.service.GuardrailService: Converse records may name a guardrail
    # (guardrailConfig), checked as online Converse checks it. None: no guardrails in this process.
    guardrails: Any = None

    # The job's model when it is an embedding model: InvokeModel records then carry Titan
    # ({"inputText"}) or Cohere ({"texts"}) bodies and get what InvokeModel answers them.
    embedding_model: ImportedModel | None = None

    def _embedding(self, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """An embeddings record: (copy body, how to shape the answer)."""
        model = self.embedding_model
        if model is not None and self.invocation_type != INVOKE_MODEL:
            raise InvalidRequestError(
                f"Model '{model.name}' is an embedding model; its batch jobs take InvokeModel records "
                "(Titan or Cohere embeddings bodies), not Converse. Create the job with "
                "modelInvocationType InvokeModel.",
                param="modelInvocationType",
            )
        if model is None:
            dialect = (
                "a Titan embeddings body (inputText)"
                if "inputText" in body
                else "a Cohere embed body (texts)"
            )
            raise WrongModelKindError(self.model_name, "text", dialect)
        if "inputText" in body:
            copy_body, types = emb.parse_titan(body, model)
            return copy_body, lambda resp: emb.titan_answer(resp, types)
        copy_body, cohere_types = emb.parse_cohere(body, model)
        return copy_body, lambda resp: emb.cohere_answer(resp, copy_body["input"], cohere_types)

    def _translate(self, body: Any) -> tuple[str, dict[str, Any], p.InvokeStyle | None]:
        if not isinstance(body, dict):
            raise InvalidRequestError(
                f"modelInput is a JSON {type(body).__name__}; it must be an object (the "
                f"{self.invocation_type} request body).",
                param="modelInput",
            )
        if self.invocation_type == CONVERSE:
            request = p.parse_converse(body)
            if not self.chat_capable:
                raise ModelNotChatCapableError(self.model_name)
            return "/v1/chat/completions", request.to_chat(), None
        invoke = p.parse_invoke(body)
        if invoke.style is p.InvokeStyle.CHAT and not self.chat_capable:
            raise ModelNotChatCapableError(self.model_name)
        path, copy_body = invoke.to_copy()
        return path, copy_body, invoke.style

    async def run(self, record: Record) -> Outcome:
        base = {"recordId": record.record_id, "modelInput": record.model_input}
        if isinstance(record.model_input, dict) and (
            self.embedding_model is not None or emb.is_embedding_body(record.model_input)
        ):
            return await self._run_embedding(record, base)
        try:
            guard, model_input = await self._guard(record.model_input)
            if guard is not None and guard.input_outcome is not None and guard.input_outcome.blocked:
                return Outcome(record, {**base, "modelOutput": guard.blocked_converse(0)}, True)
            path, copy_body, style = self._translate(model_input)
            started = time.perf_counter()
            resp = await self._post(path, copy_body)
            latency_ms = int((time.perf_counter() - started) * 1000)
            if guard is not None:
                output = await guard.converse_output(p.chat_to_converse(resp, latency_ms))
                usage = resp.get("usage") or {}
                return Outcome(
                    record,
                    {**base, "modelOutput": output},
                    True,
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                )
        except OutcropError as exc:
            return Outcome(
                record, {**base, "error": {"errorCode": error_code(exc), "errorMessage": exc.message}}, False
            )
        except (TypeError, ValueError, KeyError) as exc:  # a body shape the translation did not expect
            message = f"modelInput could not be read ({type(exc).__name__}: {exc}); check it against the request format."
            return Outcome(record, {**base, "error": {"errorCode": 400, "errorMessage": message}}, False)
        usage = resp.get("usage") or {}
        if self.invocation_type == CONVERSE:
            output = p.chat_to_converse(resp, latency_ms)
        elif style is p.InvokeStyle.CHAT:
            output = resp
        else:
            output = p.completion_superset(resp)
        return Outcome(
            record,
            {**base, "modelOutput": output},
            True,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )

    async def _guard(self, body: Any) -> tuple[Any, Any]:
        """A Converse record's guardrail (its input checked, masked text in the body), or (None, body)."""
        if self.invocation_type != CONVERSE or not isinstance(body, dict) or self.guardrails is None:
            return None, body
        from outcrop.guardrails.runtime import prepare_converse

        body, guard = prepare_converse(self.guardrails, body)
        if guard is not None:
            p.parse_converse(body)  # a malformed record is refused before the guardrail runs
            await guard.screen_input()
            body = guard.body
        return guard, body

    async def _run_embedding(self, record: Record, base: dict[str, Any]) -> Outcome:
        try:
            if self.embedding_model is not None and not emb.is_embedding_body(record.model_input):
                raise WrongModelKindError(self.model_name, "embedding", "text generation")
            copy_body, shape = self._embedding(record.model_input)
            resp = await self._post(EMBEDDINGS_PATH, copy_body)
            output = shape(resp)
        except OutcropError as exc:
            return Outcome(
                record, {**base, "error": {"errorCode": error_code(exc), "errorMessage": exc.message}}, False
            )
        usage = resp.get("usage") or {}
        return Outcome(record, {**base, "modelOutput": output}, True, int(usage.get("prompt_tokens", 0)), 0)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self.serving.post(
                    self.model_key,
                    path,
                    body,
                    cold_start=self.cold_start,
                    priority=Priority.BATCH,
                    deadline_seconds=self.deadline_seconds,
                )
            except OutcropError as exc:
                if not exc.retryable or attempt == self.max_attempts:
                    raise
                pause = float(getattr(exc, "retry_after_seconds", 0.5) or 0.5)
                await asyncio.sleep(min(pause * attempt, MAX_RETRY_PAUSE_SECONDS))
        raise AssertionError("unreachable")  # pragma: no cover
