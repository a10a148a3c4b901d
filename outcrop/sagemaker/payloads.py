"""SageMaker LLM container payloads <-> the copy contract (pure functions).

Two bodies are accepted, as Hugging Face TGI and LMI containers accept them:

- TGI / LMI: ``{"inputs": str | [str], "parameters": {max_new_tokens, temperature, top_p, top_k,
  repetition_penalty, do_sample, stop, seed, return_full_text, details}}`` ->
  ``[{"generated_text": ..., "details"?: {...}}]`` (one item per input);
- the Messages API (an OpenAI chat body with ``messages``) -> an OpenAI chat completion.

Streams carry TGI's server-sent events: one ``data:{"token": {...}, "generated_text": null}`` line per
chunk, the last with ``generated_text`` and ``details``; Messages API streams carry chat-completion
chunks and end with ``data: [DONE]``. Token ids are not known at the gateway (the copy contract
streams text), so ``token.id`` is -1.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from outcrop.errors import InvalidRequestError

# Why 100: TGI's default max_new_tokens since v1.4 (LMI's is smaller, 30, but callers of LLM
# endpoints nearly always send it).
DEFAULT_MAX_NEW_TOKENS = 100
# The copy contract's bound on max_tokens; a larger request can only be a mistake.
MAX_NEW_TOKENS = 1_000_000
# Messages API body keys forwarded to the copy; others (model, tools) are the container's business.
_CHAT_KEYS = (
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logprobs",
    "top_logprobs",
    "n",
)
# TGI finish reasons by the copy's OpenAI finish_reason.
_FINISH = {"length": "length", "stop": "eos_token", "stop_sequence": "stop_sequence"}


class PayloadStyle(enum.Enum):
    TGI = "tgi"  # {"inputs", "parameters"}
    MESSAGES = "messages"  # OpenAI chat body


@dataclass(frozen=True)
class CopyCall:
    """What to send to a copy, and what the answer needs to be shaped back."""

    style: PayloadStyle
    path: str
    body: dict[str, Any]
    inputs: list[str]  # TGI prompts (for return_full_text)
    batched: bool  # TGI ``inputs`` was a list
    return_full_text: bool = False
    details: bool = False
    seed: int | None = None


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)[:80]


def _number(
    params: dict[str, Any], key: str, kind: type, low: float, high: float, *, open_low: bool = False
) -> Any:
    value = params[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise InvalidRequestError(
            f"parameters.{key} is {_shown(value)}; it must be {'an integer' if kind is int else 'a number'}.",
            param=f"parameters.{key}",
        )
    if value < low or value > high or (open_low and value == low):
        bound = f"greater than {low}" if open_low else f"at least {low}"
        raise InvalidRequestError(
            f"parameters.{key} is {value}; it must be {bound} and at most {high}.", param=f"parameters.{key}"
        )
    return kind(value)


def to_copy(body: Any) -> CopyCall:
    """A SageMaker invocation body -> the copy call, or InvalidRequestError naming what is wrong."""
    if isinstance(body, dict) and "messages" in body:
        return _messages(body)
    if isinstance(body, dict) and "inputs" in body:
        return _tgi(body)
    keys = sorted(body) if isinstance(body, dict) else type(body).__name__
    raise InvalidRequestError(
        'The body must be a TGI/LMI payload {"inputs": "...", "parameters": {...}} or a Messages API body '
        f'{{"messages": [...]}}; it has {keys}. (An endpoint can map other payloads with OUTCROP_INPUT_TEMPLATE.)',
        param="Body",
    )


def _messages(body: dict[str, Any]) -> CopyCall:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list of {role, content}.", param="messages")
    out = {k: body[k] for k in _CHAT_KEYS if body.get(k) is not None}
    return CopyCall(PayloadStyle.MESSAGES, "/v1/chat/completions", out, [], False)


def _tgi(body: dict[str, Any]) -> CopyCall:
    inputs = body["inputs"]
    batched = isinstance(inputs, list)
    prompts = inputs if batched else [inputs]
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InvalidRequestError(
            f"'inputs' is {_shown(inputs)}; it must be a non-empty string (or a list of them).",
            param="inputs",
        )
    params = body.get("parameters")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise InvalidRequestError(
            f"'parameters' is {_shown(params)}; it must be an object like {{\"max_new_tokens\": 64}}.",
            param="parameters",
        )
    out: dict[str, Any] = {"prompt": inputs if batched else prompts[0]}
    out["max_tokens"] = (
        _number(params, "max_new_tokens", int, 1, MAX_NEW_TOKENS)
        if params.get("max_new_tokens") is not None
        else DEFAULT_MAX_NEW_TOKENS
    )
    sampling = False
    for key, kind, low, high, open_low in (
        ("temperature", float, 0.0, 2.0, False),
        ("top_p", float, 0.0, 1.0, True),
        ("top_k", int, 0, 2**31 - 1, False),
        ("repetition_penalty", float, 0.0, 10.0, True),
        ("seed", int, 0, 2**63 - 1, False),
    ):
        if params.get(key) is not None:
            out[key] = _number(params, key, kind, low, high, open_low=open_low)
            sampling = sampling or key in ("temperature", "top_p", "top_k")
    do_sample = params.get("do_sample")
    if do_sample is not None and not isinstance(do_sample, bool):
        raise InvalidRequestError(
            f"parameters.do_sample is {_shown(do_sample)}; use true or false.", param="parameters.do_sample"
        )
    if do_sample is False or (do_sample is None and not sampling):
        out["temperature"] = 0.0  # TGI decodes greedily unless asked to sample
    stop = params.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise InvalidRequestError(
                f"parameters.stop is {_shown(stop)}; it must be a list of non-empty strings.",
                param="parameters.stop",
            )
        if stop:
            out["stop"] = stop
    details = params.get("details") is True
    if details:
        out["logprobs"] = 0  # the chosen tokens' text and logprob, for details.tokens
    return CopyCall(
        PayloadStyle.TGI,
        "/v1/completions",
        out,
        prompts,
        batched,
        return_full_text=params.get("return_full_text") is True,
        details=details,
        seed=out.get("seed"),
    )


def _details(call: CopyCall, choice: dict[str, Any], generated_tokens: int) -> dict[str, Any]:
    logprobs = choice.get("logprobs") or {}
    tokens = [
        {"id": -1, "text": text, "logprob": lp, "special": False}
        for text, lp in zip(logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [], strict=False)
    ]
    return {
        "finish_reason": _FINISH.get(choice.get("finish_reason") or "stop", "eos_token"),
        "generated_tokens": len(tokens) or generated_tokens,
        "seed": call.seed,
        "prefill": [],
        "tokens": tokens,
    }


def from_copy(call: CopyCall, resp: dict[str, Any]) -> Any:
    """The copy's answer in the caller's shape."""
    if call.style is PayloadStyle.MESSAGES:
        return resp
    usage = resp.get("usage") or {}
    choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
    out = []
    for i, choice in enumerate(choices):
        text = choice.get("text", "")
        item: dict[str, Any] = {"generated_text": (call.inputs[i] + text) if call.return_full_text else text}
        if call.details:
            item["details"] = _details(call, choice, int(usage.get("completion_tokens", 0)))
        out.append(item)
    return out


def stream_line(payload: dict[str, Any]) -> bytes:
    """One server-sent event line, as TGI writes them (``data:`` + JSON + blank line)."""
    return b"data:" + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def tgi_token_event(text: str) -> dict[str, Any]:
    return {
        "token": {"id": -1, "text": text, "logprob": None, "special": False},
        "generated_text": None,
        "details": None,
    }


def tgi_final_event(
    call: CopyCall, last_text: str, whole: str, finish: str | None, tokens: int
) -> dict[str, Any]:
    event = tgi_token_event(last_text)
    event["generated_text"] = (call.inputs[0] + whole) if call.return_full_text else whole
    event["details"] = {
        "finish_reason": _FINISH.get(finish or "stop", "eos_token"),
        "generated_tokens": tokens,
        "seed": call.seed,
    }
    return event
