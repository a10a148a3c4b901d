"""A runtime request whose ``modelId`` is a prompt ARN, as the plain request for the prompt's model.

Bedrock's rules (bedrock-runtime service model, Converse's documentation), kept here:

- Converse / ConverseStream: the prompt's messages (a TEXT template becomes one user message)
  come first and the request's ``messages`` are appended after them; the request may not send
  ``system``, ``inferenceConfig``, ``toolConfig`` or ``additionalModelRequestFields``, which the
  prompt defines (a ValidationException names the field). Everything else (``guardrailConfig``,
  ``requestMetadata``, ...) passes through.
- InvokeModel(+stream): the body carries only ``promptVariables``; Bedrock ignores anything else
  in it, and so does Outcrop. A TEXT prompt becomes a Bedrock-Llama body
  (``prompt``/``max_gen_len``), a CHAT prompt an OpenAI chat body (``messages``/``max_tokens``),
  answered as those bodies always are.
- ``promptVariables`` must name exactly the prompt's declared variables: each missing and each
  unknown name is reported in one ValidationException.

Pure functions of (prompt version, request body); the routes resolve the ARN and authorize.
"""

from __future__ import annotations

from typing import Any

from outcrop.errors import InvalidRequestError
from outcrop.prompts.spec import (
    PromptModelInferenceConfiguration,
    PromptVariant,
    Rendered,
    check_variables,
    parse_variables,
    render,
)
from outcrop.prompts.store import PromptVersion

# Converse members a prompt defines, which a request naming the prompt may not send.
DEFINED_BY_PROMPT = ("system", "inferenceConfig", "toolConfig", "additionalModelRequestFields")


def _variant(label: str, version: PromptVersion) -> PromptVariant:
    variant = version.content.variant()
    if variant is None:
        raise InvalidRequestError(
            f"Prompt {label} has no variant to run. Give it one (a template and a modelId) with UpdatePrompt.",
            param="modelId",
        )
    if not variant.modelId:
        raise InvalidRequestError(
            f"Prompt {label}'s variant '{variant.name}' names no modelId, so there is no model to run it on. "
            "Set the variant's modelId to an imported model with UpdatePrompt (then create a new version).",
            param="modelId",
        )
    return variant


def _filled(label: str, version: PromptVersion, body: dict[str, Any]) -> tuple[PromptVariant, Rendered]:
    variant = _variant(label, version)
    values = parse_variables(body.get("promptVariables"))
    check_variables(variant, values, label)
    return variant, render(variant, values)


def _converse_inference(config: PromptModelInferenceConfiguration) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.maxTokens:  # 0 (allowed by the shape) means "the default"
        out["maxTokens"] = config.maxTokens
    if config.temperature is not None:
        out["temperature"] = config.temperature
    if config.topP is not None:
        out["topP"] = config.topP
    if config.stopSequences:
        out["stopSequences"] = config.stopSequences
    return out


def converse_body(label: str, version: PromptVersion, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(model id, Converse body)`` for a Converse request on prompt ``label`` (its ARN as sent)."""
    for member in DEFINED_BY_PROMPT:
        if body.get(member) is not None:
            raise InvalidRequestError(
                f"'{member}' cannot be sent with a prompt from Prompt management ({label}): the prompt "
                f"defines it. Remove '{member}' from the request, or change the prompt with UpdatePrompt.",
                param=member,
            )
    appended = body.get("messages")
    if appended is not None and not isinstance(appended, list):
        raise InvalidRequestError(
            "'messages' must be a list of {role, content}; with a prompt they are appended after the "
            "prompt's own messages.",
            param="messages",
        )
    variant, r = _filled(label, version, body)
    if r.template_type == "TEXT":
        messages: list[Any] = [{"role": "user", "content": [{"text": r.text}]}]
    else:
        messages = list(r.messages)
    out = {k: v for k, v in body.items() if k not in ("promptVariables", "messages")}
    out["messages"] = messages + list(appended or [])
    if r.system:
        out["system"] = [{"text": s} for s in r.system]
    inference = _converse_inference(r.inference)
    if inference:
        out["inferenceConfig"] = inference
    if r.tool_config:
        out["toolConfig"] = r.tool_config
    if r.additional_fields:
        out["additionalModelRequestFields"] = r.additional_fields
    assert variant.modelId is not None  # _variant checked
    return variant.modelId, out


def _openai_tools(tool_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Converse's toolConfig.tools as OpenAI chat ``tools`` (cachePoint entries dropped)."""
    tools = []
    for tool in tool_config.get("tools") or []:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if not isinstance(spec, dict):
            continue
        function: dict[str, Any] = {"name": spec.get("name")}
        if spec.get("description"):
            function["description"] = spec["description"]
        function["parameters"] = (spec.get("inputSchema") or {}).get("json") or {"type": "object"}
        tools.append({"type": "function", "function": function})
    return tools


def invoke_body(label: str, version: PromptVersion, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(model id, InvokeModel body)`` for an InvokeModel request on prompt ``label``."""
    variant, r = _filled(label, version, body)
    out: dict[str, Any] = dict(r.additional_fields or {})
    config = r.inference
    if config.temperature is not None:
        out["temperature"] = config.temperature
    if config.topP is not None:
        out["top_p"] = config.topP
    if config.stopSequences:
        out["stop"] = config.stopSequences
    if r.template_type == "TEXT":
        out["prompt"] = r.text
        if config.maxTokens:
            out["max_gen_len"] = config.maxTokens
    else:
        messages: list[dict[str, Any]] = [{"role": "system", "content": s} for s in r.system]
        for m in r.messages:
            messages.append({"role": m["role"], "content": "".join(b["text"] for b in m["content"])})
        out["messages"] = messages
        if config.maxTokens:
            out["max_tokens"] = config.maxTokens
        if r.tool_config:
            out["tools"] = _openai_tools(r.tool_config)
    assert variant.modelId is not None  # _variant checked
    return variant.modelId, out
