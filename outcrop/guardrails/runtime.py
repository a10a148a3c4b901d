"""Guardrails on model calls: ``guardrailConfig`` on Converse/ConverseStream, the guardrail headers on
InvokeModel/InvokeModelWithResponseStream. The runtime routes call in here with a few lines each.

The input is checked before the copy is asked anything: a blocked input answers the blocked
message with ``stopReason: guardrail_intervened`` and never reaches the copy; masked PII
(``{EMAIL}``) is what the copy sees. The output is checked before the caller sees it: streams
in ``sync`` mode (the default) are held until the whole answer is checked, then sent masked or
replaced; ``async`` mode streams as the copy answers and checks at the end (so, as in Bedrock,
masking does not apply to what was already sent; an intervention still sets the stop reason and
the trace).

Which text is checked: Converse's ``guardContent`` blocks when the request has any, else every
text block of ``messages``; InvokeModel's ``<amazon-bedrock-guardrails-guardContent_{tagSuffix}>``
tagged parts when ``amazon-bedrock-guardrailConfig.tagSuffix`` is given, else the prompt or
every message.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from outcrop.auth.guard import Guard
from outcrop.errors import AccessDeniedError, InvalidRequestError
from outcrop.guardrails.evaluate import CompiledGuardrail, Outcome
from outcrop.guardrails.service import GuardrailService

INVOKE_ID_HEADER = "x-amzn-bedrock-guardrailidentifier"
INVOKE_VERSION_HEADER = "x-amzn-bedrock-guardrailversion"
INVOKE_TRACE_HEADER = "x-amzn-bedrock-trace"
INVOKE_BODY_CONFIG = "amazon-bedrock-guardrailConfig"
APPLY_ACTION = "bedrock:ApplyGuardrail"
INTERVENED = "guardrail_intervened"


def _service(request: Request) -> GuardrailService:
    service: GuardrailService = request.app.state.services.extra["guardrails"]
    return service


def _authorize(request: Request, compiled: CompiledGuardrail) -> None:
    """Using a guardrail on a model call needs bedrock:ApplyGuardrail on the guardrail, as in Bedrock."""
    if not Guard.allows(request, APPLY_ACTION, compiled.arn):
        auth = getattr(request.state, "auth", None)
        who = auth.principal.arn if auth is not None else "anonymous"
        raise AccessDeniedError(
            f"User: {who} is not authorized to perform: {APPLY_ACTION} on resource: {compiled.arn}"
        )


@dataclass
class GuardedCall:
    """One model call under a guardrail: what was checked and what the guardrail decided."""

    service: GuardrailService
    compiled: CompiledGuardrail
    trace: str  # enabled | disabled | enabled_full
    stream_mode: str = "sync"
    input_outcome: Outcome | None = None
    output_outcome: Outcome | None = None
    output_text: str | None = None
    body: dict[str, Any] = field(default_factory=dict)  # the request, guardContent made text, masked
    _refs: list[tuple[str, int, int]] = field(default_factory=list)  # (where, message, block) checked

    @property
    def full(self) -> bool:
        return self.trace == "enabled_full"

    @property
    def intervened(self) -> bool:
        return any(o is not None and o.intervened for o in (self.input_outcome, self.output_outcome))

    # -- input ---------------------------------------------------------------------------------

    def _texts(self) -> list[str]:
        out = []
        for where, i, j in self._refs:
            blocks = self.body["system"] if where == "system" else self.body["messages"][i]["content"]
            out.append(blocks[j]["text"])
        return out

    async def screen_input(self) -> Outcome:
        outcome = await self.service.apply(self.compiled, self._texts(), "INPUT", full=self.full)
        self.input_outcome = outcome
        if outcome.anonymized:
            for (where, i, j), text in zip(self._refs, outcome.outputs, strict=True):
                blocks = self.body["system"] if where == "system" else self.body["messages"][i]["content"]
                blocks[j] = {"text": text}
        return outcome

    # -- output --------------------------------------------------------------------------------

    async def screen_output(self, text: str) -> str:
        """The answer's text as the caller may see it (masked, or the blocked message)."""
        outcome = await self.service.apply(self.compiled, [text], "OUTPUT", full=self.full)
        self.output_outcome = outcome
        self.output_text = text
        return outcome.outputs[0] if outcome.intervened else text

    def stop_reason(self, reason: str) -> str:
        return INTERVENED if self.intervened else reason

    # -- Converse shapes -----------------------------------------------------------------------

    def converse_trace(self) -> dict[str, Any] | None:
        """ConverseTrace's ``guardrail`` member (GuardrailTraceAssessment), or None when trace is disabled."""
        if self.trace == "disabled":
            return None
        gid = self.compiled.id
        trace: dict[str, Any] = {}
        if self.input_outcome is not None:
            trace["inputAssessment"] = {gid: self.input_outcome.assessment}
        if self.output_outcome is not None:
            trace["outputAssessments"] = {gid: [self.output_outcome.assessment]}
            if self.output_outcome.intervened and self.output_text is not None:
                trace["modelOutput"] = [self.output_text]
        if self.intervened:
            trace["actionReason"] = "Guardrail blocked." if self._blocked() else "Guardrail masked."
        return {"guardrail": trace}

    def _blocked(self) -> bool:
        return any(o is not None and o.blocked for o in (self.input_outcome, self.output_outcome))

    def blocked_converse(self, latency_ms: int) -> dict[str, Any]:
        """The Converse answer to a blocked input (the copy was never asked)."""
        answer: dict[str, Any] = {
            "output": {
                "message": {"role": "assistant", "content": [{"text": self.compiled.blocked_input_messaging}]}
            },
            "stopReason": INTERVENED,
            "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
            "metrics": {"latencyMs": latency_ms},
        }
        trace = self.converse_trace()
        if trace is not None:
            answer["trace"] = trace
        return answer

    async def converse_output(self, answer: dict[str, Any]) -> dict[str, Any]:
        blocks = answer["output"]["message"]["content"]
        text = "".join(b.get("text", "") for b in blocks)
        checked = [{"text": await self.screen_output(text)}]
        if not self._blocked():  # tool calls stay with a masked (or untouched) answer, not a blocked one
            checked += [b for b in blocks if "text" not in b]
        answer["output"]["message"]["content"] = checked
        answer["stopReason"] = self.stop_reason(answer["stopReason"])
        trace = self.converse_trace()
        if trace is not None:
            answer["trace"] = trace
        return answer

    def blocked_stream_events(self) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = [
            ("messageStart", {"role": "assistant"}),
            (
                "contentBlockDelta",
                {"delta": {"text": self.compiled.blocked_input_messaging}, "contentBlockIndex": 0},
            ),
            ("contentBlockStop", {"contentBlockIndex": 0}),
            ("messageStop", {"stopReason": INTERVENED}),
        ]
        metadata: dict[str, Any] = {
            "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
            "metrics": {"latencyMs": 0},
        }
        trace = self.converse_trace()
        if trace is not None:
            metadata["trace"] = trace
        events.append(("metadata", metadata))
        return events

    async def filter_stream(
        self, chunks: AsyncIterator[dict[str, Any]], *, chat: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """A copy's stream (chat or completion chunks) under the guardrail: held and checked (sync), or
        passed on and checked at the end (async, Converse only)."""
        texts: list[str] = []
        last: dict[str, Any] | None = None
        finish: str | None = None
        usage_chunks: list[dict[str, Any]] = []
        tool_deltas: list[dict[str, Any]] = []  # tool-call fragments, passed on as they came, after the text
        passthrough = chat and self.stream_mode == "async"
        async for chunk in chunks:
            for part in chunk.get("choices") or []:
                delta = part.get("delta") or {}
                text = delta.get("content") if chat else part.get("text")
                if text:
                    texts.append(text)
                if chat and delta.get("tool_calls"):
                    tool_deltas.append({"tool_calls": delta["tool_calls"]})
                finish = part.get("finish_reason") or finish
            if not chunk.get("choices"):
                usage_chunks.append(chunk)
                continue
            last = chunk
            if passthrough:
                yield chunk
        checked = await self.screen_output("".join(texts))
        if self._blocked():
            tool_deltas = []  # a blocked answer is the blocked message alone
        if not passthrough and last is not None:
            if self.intervened:
                finish = INTERVENED if not chat else finish
            if chat:
                text_finish = None if tool_deltas else finish
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": checked},
                    "finish_reason": text_finish,
                }
            else:
                choice = {"index": 0, "text": checked, "logprobs": None, "finish_reason": finish}
            yield {**last, "choices": [choice]}
            for i, delta in enumerate(tool_deltas):
                end = finish if i == len(tool_deltas) - 1 else None
                yield {**last, "choices": [{"index": 0, "delta": delta, "finish_reason": end}]}
        for chunk in usage_chunks:
            yield chunk

    # -- InvokeModel shapes ---------------------------------------------------------------------

    def invoke_trace(self) -> dict[str, Any] | None:
        if self.trace == "disabled":
            return None
        gid = self.compiled.id
        trace: dict[str, Any] = {}
        if self.input_outcome is not None:
            trace["input"] = {gid: self.input_outcome.assessment}
        if self.output_outcome is not None:
            trace["outputs"] = [{gid: self.output_outcome.assessment}]
        return {"guardrail": trace}

    def invoke_fields(self) -> dict[str, Any]:
        """What an InvokeModel answer carries about the guardrail (Bedrock's body members)."""
        out: dict[str, Any] = {"amazon-bedrock-guardrailAction": "INTERVENED" if self.intervened else "NONE"}
        trace = self.invoke_trace()
        if trace is not None:
            out["amazon-bedrock-trace"] = trace
        return out

    def log_entry(self) -> dict[str, Any]:
        """What the invocation log records about the guardrail."""
        entry: dict[str, Any] = {
            "guardrailId": self.compiled.id,
            "guardrailVersion": self.compiled.version,
            "guardrailArn": self.compiled.arn,
            "action": "INTERVENED" if self.intervened else "NONE",
        }
        for name, outcome in (("input", self.input_outcome), ("output", self.output_outcome)):
            if outcome is not None:
                entry[name] = {
                    "action": outcome.action,
                    "interventions": [
                        {"policy": p, "kind": k, "action": a} for p, k, a in outcome.interventions
                    ],
                    "topicMethod": outcome.topic_explanations or None,
                }
        return entry


# -- Converse ------------------------------------------------------------------------------------


def _guard_text(block: Any, where: str) -> str:
    content = block.get("guardContent") if isinstance(block, dict) else None
    text = content.get("text") if isinstance(content, dict) else None
    if not isinstance(text, dict) or not isinstance(text.get("text"), str):
        raise InvalidRequestError(
            f'\'{where}\' has a guardContent block that is not {{"guardContent": {{"text": {{"text": "..."}}}}}}; '
            "guardrails on this server check text only.",
            param=where,
        )
    return str(text["text"])


def _config(raw: Any, stream: bool) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            "'guardrailConfig' must be an object like "
            '{"guardrailIdentifier": "<id or ARN>", "guardrailVersion": "DRAFT", "trace": "enabled"}.',
            param="guardrailConfig",
        )
    identifier, version = raw.get("guardrailIdentifier"), raw.get("guardrailVersion")
    if not isinstance(identifier, str) or not identifier or not isinstance(version, str) or not version:
        raise InvalidRequestError(
            "guardrailConfig needs both 'guardrailIdentifier' (the guardrail's id or ARN) and 'guardrailVersion' "
            "('DRAFT' or a version number).",
            param="guardrailConfig",
        )
    trace = raw.get("trace", "disabled")
    if trace not in ("enabled", "disabled", "enabled_full"):
        raise InvalidRequestError(
            f"guardrailConfig.trace is {trace!r}; it must be 'enabled', 'disabled' or 'enabled_full'.",
            param="guardrailConfig.trace",
        )
    mode = raw.get("streamProcessingMode", "sync")
    if mode not in ("sync", "async") or (not stream and "streamProcessingMode" in raw):
        raise InvalidRequestError(
            f"guardrailConfig.streamProcessingMode is {mode!r}; it must be 'sync' or 'async', and only "
            "ConverseStream takes it.",
            param="guardrailConfig.streamProcessingMode",
        )
    return {"identifier": identifier, "version": version, "trace": trace, "mode": mode}


def converse_guard(
    request: Request, body: dict[str, Any], *, stream: bool
) -> tuple[dict[str, Any], GuardedCall | None]:
    """The Converse body with guardContent blocks made text blocks, and the guarded call (None without
    ``guardrailConfig``: guardContent is then plain text, as in Bedrock). The caller must be allowed
    bedrock:ApplyGuardrail on the guardrail."""
    out, call = prepare_converse(_service(request), body, stream=stream)
    if call is not None:
        _authorize(request, call.compiled)
    return out, call


def prepare_converse(
    service: GuardrailService, body: dict[str, Any], *, stream: bool = False
) -> tuple[dict[str, Any], GuardedCall | None]:
    """:func:`converse_guard` without a request (batch records: their job's creator was authorized)."""
    raw = body.get("guardrailConfig")
    has_guard_content = False
    out = copy.deepcopy(body) if raw is not None or _mentions_guard_content(body) else body
    refs: list[tuple[str, int, int]] = []
    guarded: list[tuple[str, int, int]] = []
    system = out.get("system")
    if isinstance(system, list):
        for j, block in enumerate(system):
            if isinstance(block, dict) and "guardContent" in block:
                system[j] = {"text": _guard_text(block, "system")}
                guarded.append(("system", 0, j))
                has_guard_content = True
    messages = out.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for j, block in enumerate(content):
                if isinstance(block, dict) and "guardContent" in block:
                    content[j] = {"text": _guard_text(block, f"messages[{i}].content")}
                    guarded.append(("messages", i, j))
                    has_guard_content = True
                elif isinstance(block, dict) and isinstance(block.get("text"), str):
                    refs.append(("messages", i, j))
    if raw is None:
        return out, None
    out.pop("guardrailConfig", None)
    cfg = _config(raw, stream)
    compiled = service.compiled(cfg["identifier"], cfg["version"])
    call = GuardedCall(
        service=service,
        compiled=compiled,
        trace=cfg["trace"],
        stream_mode=cfg["mode"],
        body=out,
        _refs=guarded if has_guard_content else refs,
    )
    return out, call


def _mentions_guard_content(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:  # a malformed body: parse_converse says so
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(b, dict) and "guardContent" in b for b in content):
            return True
    system = body.get("system")
    return isinstance(system, list) and any(isinstance(b, dict) and "guardContent" in b for b in system)


# -- InvokeModel -----------------------------------------------------------------------------------


def invoke_guard(request: Request, body: dict[str, Any]) -> GuardedCall | None:
    """The guarded call of an InvokeModel request (None without the guardrail headers)."""
    identifier = request.headers.get(INVOKE_ID_HEADER)
    version = request.headers.get(INVOKE_VERSION_HEADER)
    if not identifier:
        if INVOKE_BODY_CONFIG in body:
            raise InvalidRequestError(
                f"The body has '{INVOKE_BODY_CONFIG}' but no guardrail is named: send the "
                "X-Amzn-Bedrock-GuardrailIdentifier and X-Amzn-Bedrock-GuardrailVersion headers (boto3: "
                "guardrailIdentifier=..., guardrailVersion=...).",
                param="guardrailIdentifier",
            )
        return None
    if not version:
        raise InvalidRequestError(
            "X-Amzn-Bedrock-GuardrailIdentifier is set but X-Amzn-Bedrock-GuardrailVersion is not; give the "
            "version too ('DRAFT' or a number).",
            param="guardrailVersion",
        )
    trace_header = (request.headers.get(INVOKE_TRACE_HEADER) or "DISABLED").upper()
    if trace_header not in ("ENABLED", "DISABLED", "ENABLED_FULL"):
        raise InvalidRequestError(
            f"X-Amzn-Bedrock-Trace is {trace_header!r}; use ENABLED, DISABLED or ENABLED_FULL.", param="trace"
        )
    service = _service(request)
    compiled = service.compiled(identifier, version)
    _authorize(request, compiled)
    return GuardedCall(service=service, compiled=compiled, trace=trace_header.lower())


def _tag_re(suffix: str) -> re.Pattern[str]:
    tag = f"amazon-bedrock-guardrails-guardContent_{re.escape(suffix)}"
    return re.compile(f"<{tag}>(.*?)</{tag}>", re.DOTALL)


async def screen_invoke_input(guard: GuardedCall, body: dict[str, Any], copy_body: dict[str, Any]) -> Outcome:
    """Check an InvokeModel input; when masked, ``copy_body`` (the copy's request) is changed in place."""
    config = body.get(INVOKE_BODY_CONFIG)
    suffix = config.get("tagSuffix") if isinstance(config, dict) else None
    if config is not None and (not isinstance(suffix, str) or not re.fullmatch(r"[a-zA-Z0-9]{1,20}", suffix)):
        raise InvalidRequestError(
            f'\'{INVOKE_BODY_CONFIG}\' must be {{"tagSuffix": "<1-20 letters or digits>"}}.',
            param=INVOKE_BODY_CONFIG,
        )
    # (holder, key) pairs whose string values are checked.
    slots: list[tuple[Any, Any]] = []
    if "prompt" in copy_body:
        slots.append((copy_body, "prompt"))
    for message in copy_body.get("messages") or []:
        if isinstance(message.get("content"), str):
            slots.append((message, "content"))
        elif isinstance(message.get("content"), list):
            for part in message["content"]:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    slots.append((part, "text"))
    if suffix:
        pattern = _tag_re(suffix)
        pieces: list[tuple[Any, Any, re.Match[str]]] = []
        for holder, key in slots:
            pieces.extend((holder, key, m) for m in pattern.finditer(holder[key]))
        outcome = await guard.service.apply(
            guard.compiled, [m.group(1) for _h, _k, m in pieces], "INPUT", full=guard.full
        )
        replacement = iter(outcome.outputs if outcome.anonymized else [m.group(1) for _h, _k, m in pieces])
        new_values = {id(h): h[k] for h, k in slots}
        for holder, key in slots:
            new_values[id(holder)] = pattern.sub(lambda _m: next(replacement), holder[key])
        for holder, key in slots:  # tags are removed whatever the outcome
            holder[key] = new_values[id(holder)]
    else:
        outcome = await guard.service.apply(
            guard.compiled, [h[k] for h, k in slots], "INPUT", full=guard.full
        )
        if outcome.anonymized:
            for (holder, key), text in zip(slots, outcome.outputs, strict=True):
                holder[key] = text
    guard.input_outcome = outcome
    return outcome


def blocked_invoke_answer(guard: GuardedCall, chat: bool) -> dict[str, Any]:
    """An InvokeModel answer to a blocked input, in the superset style the route answers with."""
    message = guard.compiled.blocked_input_messaging
    if chat:
        answer: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": message},
                    "finish_reason": INTERVENED,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    else:
        answer = {
            "generation": message,
            "prompt_token_count": 0,
            "generation_token_count": 0,
            "stop_reason": INTERVENED,
            "outputs": [{"text": message, "stop_reason": INTERVENED}],
            "object": "text_completion",
            "choices": [{"index": 0, "text": message, "finish_reason": INTERVENED}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    return {**answer, **guard.invoke_fields()}


async def screen_invoke_output(guard: GuardedCall, answer: dict[str, Any], chat: bool) -> dict[str, Any]:
    """An InvokeModel answer (superset or chat completion) with its text checked and the guardrail fields."""
    if chat:
        message = answer["choices"][0]["message"]
        checked = await guard.screen_output(message.get("content") or "")
        message["content"] = checked
        if guard.intervened:
            answer["choices"][0]["finish_reason"] = INTERVENED
    else:
        checked = await guard.screen_output(answer.get("generation") or "")
        if guard.output_outcome is not None and guard.output_outcome.intervened:
            answer["generation"] = checked
            answer["outputs"] = [{"text": checked, "stop_reason": INTERVENED}]
            answer["choices"] = [{**answer["choices"][0], "text": checked, "finish_reason": INTERVENED}]
            answer["stop_reason"] = INTERVENED
    answer.update(guard.invoke_fields())
    return answer
