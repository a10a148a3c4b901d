"""Translation between Bedrock runtime bodies and the copy contract (OpenAI completions / chat).

Shared by the runtime routes (outcrop.api.runtime) and the batch runner (outcrop.batch), so it lives
beside the router rather than in the API layer (dependencies point api -> batch -> serving;
docs/architecture.md draws the paths).

Pure functions, unit-tested; the routes only parse, call serving and translate.

Invoke bodies come in three styles (docs/architecture.md, "Invoke body styles"):

- ``BEDROCK_COMPLETION``: ``{"prompt", "max_gen_len", ...}`` (Llama style)
- ``OPENAI_COMPLETION``: ``{"prompt", "max_tokens", ...}``
- ``CHAT``: ``{"messages": [...], ...}``

Prompt-style bodies get one *superset* response that every known client style can read
(docs/architecture.md, "Invoke body styles"): Bedrock Llama fields, Mistral-style ``outputs`` and OpenAI ``choices``.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from outcrop.errors import InvalidRequestError

# Bedrock's Llama default for max_gen_len when the body gives none.
DEFAULT_MAX_TOKENS = 512

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
_CONVERSE_STOP = {"stop": "end_turn", "length": "max_tokens"}


class InvokeStyle(enum.StrEnum):
    BEDROCK_COMPLETION = "bedrock_completion"  # prompt + max_gen_len (or no length at all)
    OPENAI_COMPLETION = "openai_completion"  # prompt + max_tokens
    CHAT = "chat"  # messages


def _number(
    body: dict[str, Any], key: str, kind: type, low: float | None = None, high: float | None = None
) -> Any:
    value = body[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" between {low} and {high}" if low is not None and high is not None else ""
        raise InvalidRequestError(
            f"'{key}' is {value!r}; it must be {'an integer' if kind is int else 'a number'}{bounds}.",
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
    raise InvalidRequestError(f"'stop' is {value!r}; it must be a string or a list of strings.", param="stop")


def invoke_to_copy(body: dict[str, Any], style: InvokeStyle) -> tuple[str, dict[str, Any]]:
    """The copy path and OpenAI body for an invoke body. Unknown parameters are ignored, as Bedrock does."""
    out: dict[str, Any] = {}
    for key in _PASSTHROUGH:
        if key in body and body[key] is not None:
            out[key] = body[key]
    for key in ("temperature", "top_p"):
        if key in out:
            out[key] = _number(out, key, float, 0.0, 2.0 if key == "temperature" else 1.0)
    stop = _stop(body.get("stop", body.get("stop_sequences")))
    if stop:
        out["stop"] = stop
    if style is InvokeStyle.CHAT:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError(
                "'messages' must be a non-empty list of {role, content}.", param="messages"
            )
        out["messages"] = messages
        out["max_tokens"] = _max_tokens(body, ("max_tokens", "max_completion_tokens", "max_gen_len"))
        return "/v1/chat/completions", out
    prompt = body["prompt"]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequestError(f"'prompt' is {prompt!r}; it must be a non-empty string.", param="prompt")
    out["prompt"] = prompt
    out["max_tokens"] = _max_tokens(
        body, ("max_gen_len", "max_tokens", "max_new_tokens", "max_tokens_to_sample")
    )
    return "/v1/completions", out


def _max_tokens(body: dict[str, Any], keys: tuple[str, ...]) -> int:
    for key in keys:
        if body.get(key) is not None:
            return int(_number(body, key, int, 1, 1_000_000))
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
        texts.append(str(block["text"]))
    return "".join(texts)


def converse_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Converse request as an OpenAI chat body for the copy."""
    messages: list[dict[str, str]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text_blocks(system, "system")})
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("'messages' must be a non-empty list of {role, content}.", param="messages")
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise InvalidRequestError(
                f"messages[{i}].role is {role!r}; it must be 'user' or 'assistant'.", param="messages"
            )
        messages.append(
            {"role": role, "content": _text_blocks(message.get("content"), f"messages[{i}].content")}
        )
    out: dict[str, Any] = {"messages": messages}
    config = body.get("inferenceConfig") or {}
    out["max_tokens"] = int(config.get("maxTokens") or DEFAULT_MAX_TOKENS)
    if config.get("temperature") is not None:
        out["temperature"] = float(config["temperature"])
    if config.get("topP") is not None:
        out["top_p"] = float(config["topP"])
    if config.get("stopSequences"):
        out["stop"] = list(config["stopSequences"])
    extra = body.get("additionalModelRequestFields") or {}
    if isinstance(extra, dict):
        for key in _PASSTHROUGH:
            if key in extra:
                out[key] = extra[key]
    return out


def converse_stop_reason(finish_reason: str | None) -> str:
    return _CONVERSE_STOP.get(finish_reason or "stop", "end_turn")


def token_usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}


def chat_to_converse(resp: dict[str, Any], latency_ms: int) -> dict[str, Any]:
    choice = resp["choices"][0]
    return {
        "output": {
            "message": {"role": "assistant", "content": [{"text": choice["message"].get("content") or ""}]}
        },
        "stopReason": converse_stop_reason(choice.get("finish_reason")),
        "usage": token_usage(resp.get("usage") or {}),
        "metrics": {"latencyMs": latency_ms},
    }
