"""Translate validated OpenAI requests into engine sequences (prompt ids + sampling params).

Every check that needs the tokenizer or the model's limits happens here, before anything
reaches the engine: empty prompts, token ids outside the vocabulary, context overflow,
parameters this copy does not implement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from outcrop.engine.guided import MAX_CHOICES, Constraint
from outcrop.engine.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    new_id,
)
from outcrop.engine.sampling import DEFAULT_MAX_TOKENS, SamplingParams
from outcrop.engine.tokenization import ModelTokenizer
from outcrop.engine.tools import ToolRequest, template_messages
from outcrop.errors import ContextLengthError, InvalidRequestError


@dataclass
class Sequence:
    """One choice to generate: ``n`` siblings share a prompt."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sibling: int  # 0 .. n-1

    def as_tuple(self) -> tuple[str, list[int], SamplingParams]:
        return self.request_id, self.prompt_ids, self.params


def check_prompt_chars(chars: int, max_tokens: int, max_model_len: int, max_chars_per_token: int) -> None:
    """Refuse a text prompt that cannot fit, from its length alone (before the costly tokenizing).

    A text of ``chars`` characters is at least ``ceil(chars / max_chars_per_token)`` tokens
    (see ``ModelTokenizer.max_chars_per_token``); if even that does not fit, no tokenizing can
    change the answer. A prompt of at most ``max_model_len`` characters is left to the exact
    check after tokenizing (cheap at that size, and its message gives the exact count).
    """
    if chars <= max_model_len:
        return
    at_least = -(-chars // max_chars_per_token)
    if at_least + max_tokens > max_model_len:
        raise ContextLengthError(
            prompt_tokens=at_least, max_tokens=max_tokens, context_length=max_model_len, at_least=True
        )


def completion_prompts(
    body: CompletionRequest, tokenizer: ModelTokenizer, vocab_size: int, max_model_len: int
) -> list[list[int]]:
    """Token ids per prompt. Blocking (tokenizes): run it off the event loop."""
    raw = body.prompt
    if isinstance(raw, str):
        prompts: list[str | list[int]] = [raw]
    elif raw and all(isinstance(p, int) for p in raw):
        prompts = [list(raw)]  # type: ignore[arg-type]
    else:
        prompts = list(raw)  # type: ignore[arg-type]
    if not prompts:
        raise InvalidRequestError("'prompt' is empty; send a non-empty string.", param="prompt")
    max_tokens = body.max_tokens if body.max_tokens is not None else DEFAULT_MAX_TOKENS
    for p in prompts:  # every cheap length check before any tokenizing
        if isinstance(p, str):
            check_prompt_chars(len(p), max_tokens, max_model_len, tokenizer.max_chars_per_token)
        else:
            check_context(len(p), max_tokens, max_model_len)
    out: list[list[int]] = []
    for p in prompts:
        if isinstance(p, str):
            if not p:
                raise InvalidRequestError("'prompt' is empty; send a non-empty string.", param="prompt")
            ids = tokenizer.encode(p)
        else:
            ids = list(p)
            bad = [t for t in ids if not 0 <= t < vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"Token id {bad[0]} in 'prompt' is outside the model's vocabulary (0..{vocab_size - 1}).",
                    param="prompt",
                )
        if not ids:
            raise InvalidRequestError("'prompt' is empty; send at least one token.", param="prompt")
        out.append(ids)
    return out


def _reject_unsupported(body: SamplingFields) -> None:
    if isinstance(body, CompletionRequest):
        if body.echo:
            raise InvalidRequestError("'echo' is not supported by this server; leave it false.", param="echo")
        if body.suffix:
            raise InvalidRequestError(
                "'suffix' is not supported by this server; leave it out.", param="suffix"
            )
        if body.best_of is not None and body.best_of != body.n:
            raise InvalidRequestError(
                "'best_of' must equal 'n' (or be left out) on this server.", param="best_of"
            )


def _json_text(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value  # parsed (and refused if it is not JSON) when compiled
    if isinstance(value, dict | bool):
        return json.dumps(value, sort_keys=False)
    raise InvalidRequestError(f"'{param}' must be a JSON schema object.", param=param)


def _choice_text(value: Any, param: str) -> str:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(c, str) and c for c in value)
        or len(value) > MAX_CHOICES
    ):
        raise InvalidRequestError(
            f"'{param}' must be a list of 1 to {MAX_CHOICES} non-empty strings.", param=param
        )
    return json.dumps(value)


def _response_format(rf: dict[str, Any]) -> Constraint | None:
    kind = rf.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_object", "", "response_format")
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict | bool):
            raise InvalidRequestError(
                "response_format.json_schema must be an object: {'name': ..., 'schema': {...}, 'strict': true}.",
                param="response_format.json_schema",
            )
        if "schema" not in spec:  # OpenAI: no schema means any JSON object
            return Constraint("json_object", "", "response_format")
        return Constraint(
            "json", json.dumps(spec["schema"], sort_keys=False), "response_format.json_schema.schema"
        )
    raise InvalidRequestError(
        f"response_format.type {kind!r} is not supported; use 'text', 'json_object' or 'json_schema'.",
        param="response_format.type",
    )


STRUCTURED_KINDS = {"json": "json", "regex": "regex", "choice": "choice", "grammar": "grammar"}


def output_constraint(body: SamplingFields) -> Constraint | None:
    """The request's output constraint (``response_format``, ``guided_*``, ``structured_outputs``), if any."""
    found: list[Constraint] = []
    if body.response_format is not None:
        c = _response_format(body.response_format)
        if c is not None:
            found.append(c)
    if body.guided_json is not None:
        found.append(Constraint("json", _json_text(body.guided_json, "guided_json"), "guided_json"))
    if body.guided_regex is not None:
        found.append(Constraint("regex", body.guided_regex, "guided_regex"))
    if body.guided_choice is not None:
        found.append(Constraint("choice", _choice_text(body.guided_choice, "guided_choice"), "guided_choice"))
    if body.guided_grammar is not None:
        found.append(Constraint("grammar", body.guided_grammar, "guided_grammar"))
    for key, value in (body.structured_outputs or {}).items():
        param = f"structured_outputs.{key}"
        if value is None or key in ("disable_any_whitespace", "whitespace_pattern", "backend"):
            continue
        if key == "json":
            found.append(Constraint("json", _json_text(value, param), param))
        elif key == "json_object":
            if value:
                found.append(Constraint("json_object", "", param))
        elif key == "choice":
            found.append(Constraint("choice", _choice_text(value, param), param))
        elif key in ("regex", "grammar"):
            if not isinstance(value, str):
                raise InvalidRequestError(f"'{param}' must be a string.", param=param)
            found.append(Constraint(key, value, param))
        else:
            raise InvalidRequestError(
                f"Unknown key '{key}' in 'structured_outputs'; use one of json, json_object, regex, choice, grammar.",
                param="structured_outputs",
            )
    if len(found) > 1:
        raise InvalidRequestError(
            f"This request sets {len(found)} output constraints ({', '.join(c.param for c in found)}); "
            "send only one.",
            param=found[1].param,
        )
    return found[0] if found else None


# Why 300: OpenAI's limit on logit_bias entries; the sampler applies them row by row each step.
MAX_LOGIT_BIAS_ENTRIES = 300


def num_prompts(body: CompletionRequest) -> int:
    """How many prompts a completion request carries, without tokenizing anything."""
    raw = body.prompt
    if isinstance(raw, str) or (raw and all(isinstance(p, int) for p in raw)):
        return 1
    return len(raw)


def _logit_bias(body: SamplingFields) -> dict[int, float]:
    if body.logit_bias and len(body.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise InvalidRequestError(
            f"'logit_bias' has {len(body.logit_bias)} entries; at most {MAX_LOGIT_BIAS_ENTRIES} are allowed.",
            param="logit_bias",
        )
    bias: dict[int, float] = {}
    for key, value in (body.logit_bias or {}).items():
        try:
            bias[int(key)] = float(value)
        except ValueError:
            raise InvalidRequestError(
                f"logit_bias key {key!r} is not a token id; use token ids as keys.", param="logit_bias"
            ) from None
    return bias


def _params(
    body: SamplingFields, max_tokens: int, logprobs: int | None, grammar: str | None = None
) -> SamplingParams:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    stop = [s for s in stop if s]
    if len(stop) > 16:
        raise InvalidRequestError("At most 16 'stop' strings are allowed.", param="stop")
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else 0
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=float(body.temperature) if body.temperature is not None else 1.0,
        top_p=float(body.top_p) if body.top_p is not None else 1.0,
        top_k=top_k,
        min_p=float(body.min_p or 0.0),
        repetition_penalty=float(body.repetition_penalty) if body.repetition_penalty is not None else 1.0,
        frequency_penalty=float(body.frequency_penalty or 0.0),
        presence_penalty=float(body.presence_penalty or 0.0),
        stop=stop,
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        logit_bias=_logit_bias(body),
        grammar=grammar,
    )


def check_context(prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
    if prompt_tokens + max_tokens > max_model_len:
        raise ContextLengthError(
            prompt_tokens=prompt_tokens, max_tokens=max_tokens, context_length=max_model_len
        )


def completion_params(
    body: CompletionRequest, prompt_lens: list[int], max_model_len: int, grammar: str | None = None
) -> list[SamplingParams]:
    _reject_unsupported(body)
    max_tokens = body.max_tokens if body.max_tokens is not None else DEFAULT_MAX_TOKENS
    for n in prompt_lens:
        check_context(n, max_tokens, max_model_len)
    params = _params(body, max_tokens, body.logprobs, grammar)
    return [params for _ in prompt_lens]


def chat_params(
    body: ChatCompletionRequest, prompt_len: int, max_model_len: int, grammar: str | None = None
) -> SamplingParams:
    _reject_unsupported(body)
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is None:  # OpenAI's chat default: as much as the context allows
        max_tokens = max_model_len - prompt_len
        if max_tokens < 1:
            check_context(prompt_len, 1, max_model_len)
    check_context(prompt_len, max_tokens, max_model_len)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequestError("'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
    return _params(body, max_tokens, logprobs, grammar)


def fan_out(prompts: list[list[int]], params: list[SamplingParams], n: int) -> list[Sequence]:
    """``n`` choices per prompt, in OpenAI's index order; sibling ``i`` uses ``seed + i``."""
    base = new_id("seq")
    out = []
    for p_idx, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
        for sibling in range(n):
            sib_params = replace(p, seed=p.seed + sibling) if p.seed is not None else p
            out.append(Sequence(f"{base}-{p_idx}-{sibling}", prompt, sib_params, sibling))
    return out


def chat_prompt(
    body: ChatCompletionRequest,
    tokenizer: ModelTokenizer,
    max_model_len: int,
    tools: ToolRequest | None = None,
) -> list[int]:
    """The chat's token ids through the model's template. Blocking (tokenizes): run it off the event loop."""
    messages = template_messages(chat_messages(body.messages))
    chars = sum(len(m["content"] or "") for m in messages)  # the template only adds to these
    max_tokens = body.max_completion_tokens or body.max_tokens or 1
    check_prompt_chars(chars, max_tokens, max_model_len, tokenizer.max_chars_per_token)
    template_tools = tools.tools if tools is not None and tools.mode != "none" else None
    return tokenizer.encode_chat(messages, body.add_generation_prompt, tools=template_tools)


def chat_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the chat template expects them (content parts flattened to text)."""
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequestError(
                        f"messages[{i}].content has a part of type {part.get('type')!r}; only text parts are "
                        "supported by this model.",
                        param="messages",
                    )
                parts.append(part["text"])
            content = "".join(parts)
        message: dict[str, Any] = {"role": m.role, "content": content or ""}
        extra = m.model_extra or {}
        if m.role == "assistant" and extra.get("tool_calls"):
            message["tool_calls"] = extra["tool_calls"]
            message["content"] = content or None  # a call-only turn has no text (templates test for it)
        if m.role == "tool" and "tool_call_id" in extra:
            message["tool_call_id"] = extra["tool_call_id"]
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out
