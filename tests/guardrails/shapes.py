"""Check raw JSON answers against botocore's shapes: no member the model lacks, every required member
present (at every level), enum values valid. botocore drops unknown fields when it parses, so the raw
body is what is checked."""

from __future__ import annotations

from typing import Any

from tests.api.sagemaker_shapes import record_raw_bodies

__all__ = ["check_event", "check_output", "problems", "record_raw_bodies"]


def problems(shape: Any, value: Any, where: str = "") -> list[str]:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where} (not an object)"]
        found = [f"{where}.{m} (required, missing)" for m in shape.required_members if m not in value]
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            found += (
                [f"{path} (not in the model)"]
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
            return [f"{where} (not a map)"]
        return [bad for k, item in value.items() for bad in problems(shape.value, item, f"{where}[{k}]")]
    if kind == "string":
        enum = shape.metadata.get("enum")
        if not isinstance(value, str) or (enum and value not in enum):
            return [f"{where} ({value!r} is not a valid {shape.name})"]
    if kind in ("integer", "long") and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{where} (not an integer)"]
    if kind in ("float", "double") and not isinstance(value, int | float):
        return [f"{where} (not a number)"]
    if kind == "timestamp" and not isinstance(value, str | int | float):
        return [f"{where} (not a timestamp)"]
    if kind == "boolean" and not isinstance(value, bool):
        return [f"{where} (not a boolean)"]
    return []


def check_output(client: Any, operation: str, raw: dict[str, Any]) -> None:
    shape = client.meta.service_model.operation_model(operation).output_shape
    assert problems(shape, raw) == [], f"{operation}: {problems(shape, raw)}"


def check_event(client: Any, shape_name: str, raw: dict[str, Any]) -> None:
    shape = client.meta.service_model.shape_for(shape_name)
    assert problems(shape, raw) == [], f"{shape_name}: {problems(shape, raw)}"
