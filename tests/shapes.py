"""Check raw JSON answers of the REST-JSON AWS surfaces (bedrock, bedrock-runtime, bedrock-agent)
against botocore's shapes: no member the service model lacks, every required member present at every
level, strings matching their enums and patterns, ISO 8601 timestamps. botocore drops unknown fields
when it parses, so the raw body is what is checked."""

from __future__ import annotations

import json
import re
from typing import Any


def record_raw_bodies(client: Any) -> dict[str, Any]:
    """The raw JSON body of each operation's last successful answer, by operation name."""
    seen: dict[str, Any] = {}

    def keep(response_dict: dict[str, Any], operation_model: Any, **_: Any) -> None:
        body = response_dict.get("body")
        if isinstance(body, bytes) and response_dict.get("status_code", 500) < 300 and body[:1] == b"{":
            seen[operation_model.name] = json.loads(body)

    client.meta.events.register("before-parse", keep)
    return seen


def problems(shape: Any, value: Any, where: str = "") -> list[str]:
    kind = shape.type_name
    if kind == "structure":
        if shape.metadata.get("document"):
            return []
        if not isinstance(value, dict):
            return [f"{where} (not an object)"]
        found = [f"{where}.{m} (required, missing)" for m in shape.required_members if m not in value]
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            found += (
                [f"{path} (not in {shape.name})"]
                if key not in shape.members
                else problems(shape.members[key], item, path)
            )
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where} (not a list)"]
        return [bad for i, item in enumerate(value) for bad in problems(shape.member, item, f"{where}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where} (not an object)"]
        return [bad for k, item in value.items() for bad in problems(shape.value, item, f"{where}[{k}]")]
    if kind == "string":
        enum, pattern = shape.metadata.get("enum"), shape.metadata.get("pattern")
        if not isinstance(value, str) or (enum and value not in enum):
            return [f"{where} ({value!r} is not a valid {shape.name})"]
        if pattern and not re.fullmatch(pattern, value):
            return [f"{where} ({value!r} does not match {shape.name}'s pattern)"]
    if kind == "timestamp" and not isinstance(value, str):
        return [f"{where} (not an ISO 8601 timestamp)"]
    if kind in ("integer", "long") and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{where} (not an integer)"]
    if kind in ("float", "double") and not isinstance(value, int | float):
        return [f"{where} (not a number)"]
    if kind == "boolean" and not isinstance(value, bool):
        return [f"{where} (not a boolean)"]
    return []


def check_output(client: Any, operation: str, raw: dict[str, Any]) -> None:
    shape = client.meta.service_model.operation_model(operation).output_shape
    assert problems(shape, raw) == [], f"{operation}: {problems(shape, raw)}"


def check_event(client: Any, shape_name: str, raw: dict[str, Any]) -> None:
    shape = client.meta.service_model.shape_for(shape_name)
    assert problems(shape, raw) == [], f"{shape_name}: {problems(shape, raw)}"
