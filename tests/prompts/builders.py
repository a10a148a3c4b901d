"""Builders for prompt requests, as boto3 bedrock-agent takes them (``**overrides`` change any member)."""

from __future__ import annotations

from typing import Any


def text_variant(
    text: str = "Tell me about {{topic}}.", variables: tuple[str, ...] = ("topic",), **overrides: Any
) -> dict[str, Any]:
    variant: dict[str, Any] = {
        "name": "main",
        "templateType": "TEXT",
        "modelId": "chat",
        "templateConfiguration": {"text": {"text": text, "inputVariables": [{"name": v} for v in variables]}},
        "inferenceConfiguration": {"text": {"temperature": 0.0, "maxTokens": 8}},
    }
    variant.update(overrides)
    return variant


def chat_variant(
    user: str = "Write about {{topic}} for {{audience}}.",
    system: str = "You are terse. Audience: {{audience}}.",
    variables: tuple[str, ...] = ("topic", "audience"),
    **overrides: Any,
) -> dict[str, Any]:
    variant: dict[str, Any] = {
        "name": "main",
        "templateType": "CHAT",
        "modelId": "chat",
        "templateConfiguration": {
            "chat": {
                "messages": [{"role": "user", "content": [{"text": user}]}],
                "system": [{"text": system}],
                "inputVariables": [{"name": v} for v in variables],
            }
        },
        "inferenceConfiguration": {"text": {"temperature": 0.0, "maxTokens": 8, "topP": 1.0}},
    }
    variant.update(overrides)
    return variant


def prompt_request(name: str = "explain", **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "name": name,
        "description": "Explains a topic",
        "defaultVariant": "main",
        "variants": [text_variant()],
    }
    request.update(overrides)
    return request
