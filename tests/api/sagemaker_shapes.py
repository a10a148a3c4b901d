"""Check our raw JSON 1.1 answers (SageMaker: timestamps as epoch numbers) against botocore's output
shapes: every field we send must exist in the service model (botocore drops unknown fields when it
parses, so the raw body is what is checked). The REST-JSON surfaces use tests/shapes.py."""

from __future__ import annotations

from typing import Any

from tests.shapes import record_raw_bodies

__all__ = ["check_shape", "record_raw_bodies", "unknown_fields"]


def unknown_fields(shape: Any, value: Any, where: str = "") -> list[str]:
    """Paths in ``value`` that ``shape`` does not declare (and values of the wrong JSON kind)."""
    if shape is None:
        return [where] if value not in (None, {}) else []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where} (not an object)"]
        found = []
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            found += [path] if key not in shape.members else unknown_fields(shape.members[key], item, path)
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where} (not a list)"]
        return [
            bad for i, item in enumerate(value) for bad in unknown_fields(shape.member, item, f"{where}[{i}]")
        ]
    if kind == "string":
        enum = shape.metadata.get("enum")
        if not isinstance(value, str) or (enum and value not in enum):
            return [f"{where} ({value!r} is not a valid {shape.name})"]
    if kind in ("integer", "long") and not isinstance(value, int):
        return [f"{where} (not an integer)"]
    if kind in ("float", "double", "timestamp") and not isinstance(value, int | float):
        return [f"{where} (not a number)"]
    return []


def check_shape(client: Any, operation: str, raw: dict[str, Any]) -> None:
    shape = client.meta.service_model.operation_model(operation).output_shape
    assert unknown_fields(shape, raw) == [], f"{operation} answered fields its output shape lacks"
    for member in shape.required_members if shape is not None else []:
        assert member in raw, f"{operation} left out required member {member}"
