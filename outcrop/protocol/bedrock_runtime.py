"""Bedrock runtime bodies, typed, and their translation to the copy contract (OpenAI completions / chat).

Read by the runtime routes (outcrop/api/runtime/routes.py) and by batch records
(outcrop/batch/records.py) alike; outcrop/protocol/__init__.py says why this module is not
under ``api/``. Pure functions and pydantic models, unit-tested in tests/api/test_runtime_protocol.py;
the routes only parse, call serving and translate.

Invoke bodies come in three styles (../shared/reference/bedrock-wire.md §2.2), read by
:func:`parse_invoke` into an :class:`InvokeRequest`:

- ``BEDROCK_COMPLETION``: ``{"prompt", "max_gen_len", ...}`` (Llama style)
- ``OPENAI_COMPLETION``: ``{"prompt", "max_tokens", ...}``
- ``CHAT``: ``{"messages": [...], ...}`` (checked by outcrop/protocol/chat.py)

Converse / ConverseStream bodies are read by :func:`parse_converse` into a
:class:`ConverseRequest` (text, toolUse and toolResult blocks, strict user/assistant turns,
``inferenceConfig`` with the service model's bounds, ``toolConfig`` and ``outputConfig``);
the tool parts are outcrop/protocol/converse_tools.py. Tools and structured output in chat
bodies are checked by outcrop/protocol/tools.py and passed to the copy.

Prompt-style bodies get one *superset* response that every known client style can read
(DESIGN.md, "Semantics"): Bedrock Llama fields, Mistral-style ``outputs`` and OpenAI ``choices``.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from outcrop.errors import InvalidRequestError
from outcrop.protocol import chat, tools
from outcrop.protocol import converse_tools as ct

# Bedrock's Llama default for max_gen_len when the body gives none.
DEFAULT_MAX_TOKENS = 512
# Why 1,000,000: above any context length a copy serves; the copy checks the real limit.
MAX_MAX_TOKENS = 1_000_000

# Sampling parameters passed through to the copy, with the names prompt-style bodies may use.
_PASSTHROUGH = (
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "logprobs",
    "ignore_eos",
)
# Passed through for messages bodies only: OpenAI chat's per-token alternatives.
_CHAT_PASSTHROUGH = ("top_logprobs",)


class InvokeStyle(enum.StrEnum):
    BEDROCK_COMPLETION = "bedrock_completion"  # prompt + max_gen_len (or no length at all)
    OPENAI_COMPLETION = "openai_completion"  # prompt + max_tokens
    CHAT = "chat"  # messages


def _shown(value: Any) -> str:
    """A value as JSON for a message, cut short; never fails (an int past CPython's digit limit too)."""
    try:
        return json.dumps(value, default=str)[:80]
    except ValueError:
        return "(a number too long to show)"


def _number(
    body: dict[str, Any], key: str, kind: type, low: float | None = None, high: float | None = None
) -> Any:
    value = body[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and (kind is not int or value.is_integer())
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" between {low} and {high}" if low is not None and high is not None else ""
        raise InvalidRequestError(
            f"'{key}' is {_shown(value)}; it must be {'an integer' if kind is int else 'a number'}{bounds}.",
            param=key,
        )
    return kind(value)


def classify(body: dict[str, Any]) -> InvokeStyle:
    if "messages" in body:
        return InvokeStyle.CHAT
    if "prompt" in body:
        return (
            InvokeStyle.OPENAI_COMPLETION
            if "max_tokens" in body and "max_gen_len" not in body
            else (InvokeStyle.BEDROCK_COMPLETION)
        )
    raise InvalidRequestError(
        'The request body has neither \'prompt\' nor \'messages\'. Send {"prompt": "...", "max_gen_len": 256} '
        'or {"messages": [{"role": "user", "content": "..."}], "max_tokens": 256}.',
        param="body",
    )


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise InvalidRequestError(
        f"'stop' is {_shown(value)}; it must be a string or a list of strings.", param="stop"
    )


class InvokeRequest(BaseModel):
    """An InvokeModel body, checked: its style, what the copy is asked, and the length to generate."""

    style: InvokeStyle
    prompt: str | None = None  # prompt styles
    messages: list[dict[str, Any]] | None = None  # chat style, checked by outcrop.protocol.chat
    max_tokens: int
    stop: list[str] | None = None
    # Sampling parameters for the copy, already checked where the copy's contract is looser.
    sampling: dict[str, Any] = Field(default_factory=dict)
    # Tools and structured-output members (outcrop.protocol.tools), checked, passed as given.
    structure: dict[str, Any] = Field(default_factory=dict)

    def to_copy(self) -> tuple[str, dict[str, Any]]:
        """The copy path and OpenAI body for this request."""
        out: dict[str, Any] = {**self.sampling, **self.structure}
        if self.stop:
            out["stop"] = self.stop
        if self.style is InvokeStyle.CHAT:
            return "/v1/chat/completions", {**out, "messages": self.messages, "max_tokens": self.max_tokens}
        return "/v1/completions", {**out, "prompt": self.prompt, "max_tokens": self.max_tokens}


def parse_invoke(body: dict[str, Any]) -> InvokeRequest:
    """An InvokeModel body as an :class:`InvokeRequest`. Unknown parameters are ignored, as Bedrock does."""
    style = classify(body)
    sampling: dict[str, Any] = {}
    keys = _PASSTHROUGH + (_CHAT_PASSTHROUGH if style is InvokeStyle.CHAT else ())
    for key in keys:
        if key in body and body[key] is not None:
            sampling[key] = body[key]
    for key in ("temperature", "top_p"):
        if key in sampling:
            sampling[key] = _number(sampling, key, float, 0.0, 2.0 if key == "temperature" else 1.0)
    stop = _stop(body.get("stop", body.get("stop_sequences"))) or None
    if style is InvokeStyle.CHAT:
        messages = chat.check_messages(body["messages"])
        tools.check_chat_tools(body)
        return InvokeRequest(
            style=style,
            messages=messages,
            max_tokens=_max_tokens(body, ("max_tokens", "max_completion_tokens", "max_gen_len")),
            stop=stop,
            sampling=sampling,
            structure=_present(body, tools.CHAT_TOOL_FIELDS),
        )
    tools.check_structure(body)
    prompt = body["prompt"]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequestError(
            f"'prompt' is {_shown(prompt)}; it must be a non-empty string.", param="prompt"
        )
    return InvokeRequest(
        style=style,
        prompt=prompt,
        max_tokens=_max_tokens(body, ("max_gen_len", "max_tokens", "max_new_tokens", "max_tokens_to_sample")),
        stop=stop,
        sampling=sampling,
        structure=_present(body, tools.COMPLETION_STRUCTURE_FIELDS),
    )


def _present(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: body[key] for key in keys if body.get(key) is not None}


def invoke_to_copy(body: dict[str, Any], style: InvokeStyle | None = None) -> tuple[str, dict[str, Any]]:
    """The copy path and OpenAI body for an invoke body (``style`` is recognised again; kept for callers)."""
    return parse_invoke(body).to_copy()


def _max_tokens(body: dict[str, Any], keys: tuple[str, ...]) -> int:
    for key in keys:
        if body.get(key) is not None:
            return int(_number(body, key, int, 1, MAX_MAX_TOKENS))
    return DEFAULT_MAX_TOKENS


def completion_superset(resp: dict[str, Any]) -> dict[str, Any]:
    """A copy's /v1/completions answer as a body every client style reads."""
    choice = resp["choices"][0]
    usage = resp.get("usage") or {}
    text, reason = choice.get("text", ""), choice.get("finish_reason") or "stop"
    return {
        "generation": text,
        "prompt_token_count": usage.get("prompt_tokens"),
        "generation_token_count": usage.get("completion_tokens"),
        "stop_reason": reason,
        "logprobs": choice.get("logprobs"),
        "outputs": [
            {"text": c.get("text", ""), "stop_reason": c.get("finish_reason")} for c in resp["choices"]
        ],
        "id": resp.get("id"),
        "object": "text_completion",
        "created": resp.get("created", int(time.time())),
        "model": resp.get("model"),
        "choices": resp["choices"],
        "usage": usage,
    }


def completion_chunk_superset(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """One streamed completion chunk in the superset form (None for a usage-only chunk)."""
    if not chunk.get("choices"):
        return None
    choice = chunk["choices"][0]
    text, reason = choice.get("text", ""), choice.get("finish_reason")
    return {
        "generation": text,
        "prompt_token_count": None,
        "generation_token_count": None,
        "stop_reason": reason,
        "outputs": [{"text": text, "stop_reason": reason}],
        "id": chunk.get("id"),
        "object": "text_completion",
        "choices": chunk["choices"],
    }


def invocation_metrics(usage: dict[str, Any], latency_ms: int, first_byte_ms: int) -> dict[str, int]:
    """The ``amazon-bedrock-invocationMetrics`` member of the last streamed chunk."""
    return {
        "inputTokenCount": int(usage.get("prompt_tokens", 0)),
        "outputTokenCount": int(usage.get("completion_tokens", 0)),
        "invocationLatency": latency_ms,
        "firstByteLatency": first_byte_ms,
    }


# -- Converse -------------------------------------------------------------------------


def _text_blocks(blocks: Any, where: str) -> str:
    """The text of a list of text blocks (``system``); other blocks are a ValidationException."""
    if not isinstance(blocks, list):
        raise InvalidRequestError(
            f'\'{where}\' must be a list of content blocks like {{"text": "..."}}.', param=where
        )
    texts = []
    for block in blocks:
        if not isinstance(block, dict) or "text" not in block:
            kind = next(iter(block), "?") if isinstance(block, dict) else type(block).__name__
            raise InvalidRequestError(
                f"'{where}' has a '{kind}' content block; imported models take text blocks only "
                '({"text": "..."}).',
                param=where,
            )
        if not isinstance(block["text"], str):
            raise InvalidRequestError(
                f"'{where}' has a text block whose 'text' is {_shown(block['text'])}; it must be a string.",
                param=where,
            )
        texts.append(block["text"])
    return "".join(texts)


# Bounds of botocore's bedrock-runtime InferenceConfiguration shapes (2023-09-30 service model).
_Unit = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]


class InferenceConfig(BaseModel):
    """Converse's ``inferenceConfig``: every wrong type or bound is a ValidationException naming the field."""

    # Unknown members are ignored, as AWS services do, so newer SDKs keep working.
    model_config = ConfigDict(extra="ignore")

    maxTokens: StrictInt | None = Field(None, ge=1, le=MAX_MAX_TOKENS)
    temperature: _Unit | None = None
    topP: _Unit | None = None
    stopSequences: list[Annotated[StrictStr, Field(min_length=1)]] | None = Field(None, max_length=2500)


def _inference_config(raw: Any) -> InferenceConfig:
    if raw is None:
        return InferenceConfig()
    try:
        return InferenceConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        parts = []
        for err in errors[:5]:
            where = ".".join(["inferenceConfig", *(str(p) for p in err["loc"])])
            msg = err["msg"]
            if err["type"] == "model_type":  # pydantic names the Python class here
                msg = 'it must be an object like {"maxTokens": 256, "temperature": 0.5}'
            parts.append(f"Value {_shown(err.get('input'))} at '{where}' failed to satisfy constraint: {msg}")
        first = ".".join(["inferenceConfig", *(str(p) for p in errors[0]["loc"])])
        raise InvalidRequestError(
            f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected: " + "; ".join(parts),
            param=first,
        ) from None


# Bedrock's own words for a conversation whose turns are out of order.
MUST_START_WITH_USER = (
    "A conversation must start with a user message. Try again with a conversation that starts with a "
    "user message."
)
MUST_ALTERNATE = (
    "A conversation must alternate between user and assistant roles. Make sure the conversation "
    "alternates between user and assistant roles and try again."
)


def turn_order_problem(roles: list[str]) -> str | None:
    """Bedrock's message when Converse turns are out of order (first not user, or a role twice in a row)."""
    if roles and roles[0] != "user":
        return MUST_START_WITH_USER
    if any(a == b for a, b in itertools.pairwise(roles)):
        return MUST_ALTERNATE
    return None


class ConverseMessage(BaseModel):
    """One Converse turn as the copy is asked it: one or more chat messages (tool calls, tool results)."""

    role: Literal["user", "assistant"]
    text: str
    chat: list[dict[str, Any]]


class ConverseRequest(BaseModel):
    """A Converse / ConverseStream body, checked; :meth:`to_chat` is the copy's chat body."""

    system: str | None = None
    messages: list[ConverseMessage]
    inference: InferenceConfig
    # additionalModelRequestFields' sampling parameters the copy understands.
    sampling: dict[str, Any] = Field(default_factory=dict)
    # toolConfig and outputConfig as the chat body's tools / tool_choice / response_format.
    structure: dict[str, Any] = Field(default_factory=dict)

    def to_chat(self) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for m in self.messages:
            messages.extend(m.chat)
        out: dict[str, Any] = {
            "messages": messages,
            "max_tokens": self.inference.maxTokens or DEFAULT_MAX_TOKENS,
        }
        if self.inference.temperature is not None:
            out["temperature"] = self.inference.temperature
        if self.inference.topP is not None:
            out["top_p"] = self.inference.topP
        if self.inference.stopSequences:
            out["stop"] = self.inference.stopSequences
        out.update(self.sampling)
        out.update(self.structure)
        return out


def parse_converse(body: dict[str, Any]) -> ConverseRequest:
    """A Converse body as a :class:`ConverseRequest`, or a ValidationException worded as Bedrock's."""
    structure = ct.tool_config_to_chat(body["toolConfig"]) if body.get("toolConfig") is not None else {}
    structure.update(ct.output_config_to_chat(body.get("outputConfig")))
    system = body.get("system")
    system_text = _text_blocks(system, "system") if system else None
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("'messages' must be a non-empty list of {role, content}.", param="messages")
    turns = []
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise InvalidRequestError(
                f"messages[{i}].role is {_shown(role)}; it must be 'user' or 'assistant'.", param="messages"
            )
        turns.append(ct.read_turn(role, message.get("content"), f"messages[{i}].content"))
    problem = turn_order_problem([t.role for t in turns])
    if problem:
        raise InvalidRequestError(problem, param="messages")
    ct.check_tool_turns(turns, has_tool_config="tools" in structure)
    messages = [ConverseMessage(role=t.role, text=t.text, chat=t.to_chat()) for t in turns]
    config = _inference_config(body.get("inferenceConfig"))
    extra = body.get("additionalModelRequestFields")
    if extra is not None and not isinstance(extra, dict):
        raise InvalidRequestError(
            f"1 validation error detected: Value {_shown(extra)} at 'additionalModelRequestFields' failed to "
            'satisfy constraint: it must be a JSON object of model parameters, like {"top_k": 40}.',
            param="additionalModelRequestFields",
        )
    sampling = {key: extra[key] for key in _PASSTHROUGH if extra and extra.get(key) is not None}
    # temperature/top_p are checked like InvokeModel's, wherever they came from.
    checked = {"temperature": config.temperature, "top_p": config.topP, **sampling}
    for key in ("temperature", "top_p"):
        if checked.get(key) is not None:
            _number(checked, key, float, 0.0, 2.0 if key == "temperature" else 1.0)
    for key in ("temperature", "top_p"):
        if key in sampling:
            sampling[key] = float(sampling[key])
    return ConverseRequest(
        system=system_text,
        messages=messages,
        inference=config,
        sampling=sampling,
        structure=structure,
    )


def converse_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Converse request as an OpenAI chat body for the copy."""
    return parse_converse(body).to_chat()


def converse_stop_reason(finish_reason: str | None, stop_reason: Any = None) -> str:
    """Converse's stopReason for a copy's finish.

    ``stop_reason`` is vLLM's member of a choice: the stop string that ended the text, a stop
    token id, or None for the end-of-sequence token. A stop string that hit is
    ``stop_sequence``, as Bedrock reports it.
    """
    return ct.stop_reason(finish_reason, stop_reason, called_tools=False)


def token_usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}


def chat_to_converse(resp: dict[str, Any], latency_ms: int) -> dict[str, Any]:
    choice = resp["choices"][0]
    message = choice.get("message") or {}
    content, malformed = ct.answer_content(message)
    called = any("toolUse" in block for block in content)
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": ct.stop_reason(
            choice.get("finish_reason"), choice.get("stop_reason"), called, malformed
        ),
        "usage": token_usage(resp.get("usage") or {}),
        "metrics": {"latencyMs": latency_ms},
    }
