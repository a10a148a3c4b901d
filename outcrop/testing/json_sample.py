"""A deterministic JSON value that satisfies a JSON Schema, for the null copy's tool calls and JSON answers.

Covers what tool and response schemas use (objects, arrays, strings with formats and lengths,
numbers with bounds, enums, consts, ``anyOf`` / ``oneOf`` / ``allOf``, local ``$ref`` into
``$defs`` as pydantic writes them); not a general generator (``pattern`` is not honoured).
"""

from __future__ import annotations

import math
from typing import Any

# Past this depth only required properties are filled, so recursive schemas (trees) end.
FULL_DEPTH = 4
# And past this one an object is left empty: no schema a test uses nests deeper.
MAX_DEPTH = 24
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "null@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}
_TEXT = "null copy"


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value: int | float = 1
    if low is not None and value < low:
        value = math.ceil(low) if integer else low
    if high is not None and value > high:
        value = math.floor(high) if integer else high
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        value = math.ceil(value / step) * step
        value = int(value) if integer else value
    return value


def _string(schema: dict[str, Any]) -> str:
    text = _FORMATS.get(schema.get("format", ""), _TEXT)
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(text) < low:
        text = text + "x" * (low - len(text))
    if high is not None and len(text) > int(high):
        text = text[: int(high)]
    return text


def sample(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value valid against ``schema`` (``root`` resolves ``$ref``s; defaults to ``schema``)."""
    root = schema if root is None else root
    if schema is True or schema == {}:
        return _TEXT
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema and isinstance(root, dict):
        try:
            target = _resolve(str(schema["$ref"]), root) if str(schema["$ref"]).startswith("#") else {}
        except (KeyError, IndexError, TypeError):
            target = {}  # a reference this sampler cannot follow: any value
        return sample(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next(
                (o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), options[0]
            )
            return sample(chosen, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        return sample(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        if depth >= MAX_DEPTH:
            return {}
        keep = [k for k in properties if depth < FULL_DEPTH or k in required]
        return {k: sample(properties[k], root, depth + 1) for k in keep}
    if kind == "array":
        count = int(schema.get("minItems", 1))
        if schema.get("maxItems") is not None:
            count = min(count, int(schema["maxItems"]))
        prefix = schema.get("prefixItems") or []
        items = [sample(p, root, depth + 1) for p in prefix[:count]]
        while len(items) < count:
            items.append(sample(schema.get("items", {}), root, depth + 1))
        return items
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    return None
