"""Bedrock's per-document metadata sidecars: ``<document>.metadata.json`` next to the document.

Two shapes, as Bedrock accepts them::

    {"metadataAttributes": {"genre": "drama", "year": 2021, "public": true, "tags": ["a", "b"]}}

    {"metadataAttributes": {"genre": {"value": {"type": "STRING", "stringValue": "drama"},
                                      "includeForEmbedding": true}}}

Values are strings, numbers, booleans or lists of strings. Bedrock limits a sidecar to 10 KB and
reserves keys starting with ``x-amz-bedrock-kb-`` (the store writes those itself).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from outcrop.knowledge.parsing import DocumentParseError
from outcrop.knowledge.types import MetadataValue

SIDECAR_SUFFIX = ".metadata.json"
# Bedrock's documented limit for one metadata file.
MAX_SIDECAR_BYTES = 10 * 1024
RESERVED_PREFIX = "x-amz-bedrock-kb-"

_TYPED_FIELDS = {
    "STRING": "stringValue",
    "NUMBER": "numberValue",
    "BOOLEAN": "booleanValue",
    "STRING_LIST": "stringListValue",
}


def is_sidecar(path: Path | str) -> bool:
    """Whether ``path`` is a metadata sidecar (never ingested as a document itself)."""
    return str(path).lower().endswith(SIDECAR_SUFFIX)


def sidecar_for(document: Path) -> Path:
    """The sidecar path Bedrock looks for next to ``document``: ``<name>.metadata.json``."""
    return document.with_name(document.name + SIDECAR_SUFFIX)


def document_for(sidecar: Path) -> Path:
    """The document a sidecar describes."""
    return sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])


def read_sidecar(path: Path) -> dict[str, MetadataValue]:
    """Parse one sidecar. Raises :class:`DocumentParseError` with a sentence naming the problem."""
    path = Path(path)
    name = path.name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentParseError(f"{name}: cannot be read ({e.strerror or e}).", path=str(path)) from e
    if len(data) > MAX_SIDECAR_BYTES:
        raise DocumentParseError(
            f"{name}: is {len(data)} bytes, over Bedrock's {MAX_SIDECAR_BYTES}-byte limit for a metadata "
            "file; keep fewer or shorter attributes.",
            path=str(path),
        )
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DocumentParseError(
            f'{name}: is not valid JSON ({e}); write it as {{"metadataAttributes": {{"key": "value"}}}}.',
            path=str(path),
        ) from e
    return parse_sidecar(doc, name=name)


def parse_sidecar(doc: Any, *, name: str = "metadata file") -> dict[str, MetadataValue]:
    """Validate an already-decoded sidecar document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metadataAttributes"), dict):
        raise DocumentParseError(
            f"{name}: needs a top-level object 'metadataAttributes' "
            '(e.g. {"metadataAttributes": {"year": 2024}}).'
        )
    out: dict[str, MetadataValue] = {}
    for key, raw in doc["metadataAttributes"].items():
        if not key or not isinstance(key, str):
            raise DocumentParseError(f"{name}: metadata keys must be non-empty strings.")
        if key.lower().startswith(RESERVED_PREFIX):
            raise DocumentParseError(
                f"{name}: key '{key}' is reserved (keys starting with '{RESERVED_PREFIX}' are set by the "
                "knowledge base); rename it."
            )
        out[key] = _value(raw, key, name)
    return out


def _value(raw: Any, key: str, name: str) -> MetadataValue:
    if isinstance(raw, dict):  # the typed shape
        inner = raw.get("value", raw)
        if not isinstance(inner, dict) or inner.get("type") not in _TYPED_FIELDS:
            raise DocumentParseError(
                f"{name}: attribute '{key}' needs a 'value' with 'type' one of {', '.join(_TYPED_FIELDS)}."
            )
        field = _TYPED_FIELDS[inner["type"]]
        if field not in inner:
            raise DocumentParseError(f"{name}: attribute '{key}' of type {inner['type']} needs '{field}'.")
        raw = inner[field]
        if inner["type"] == "NUMBER" and isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                raise DocumentParseError(f"{name}: attribute '{key}': '{raw}' is not a number.") from None
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int | float):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise DocumentParseError(f"{name}: attribute '{key}' must be a finite number.")
        return raw
    if isinstance(raw, list):
        if not all(isinstance(v, str) for v in raw):
            raise DocumentParseError(
                f"{name}: attribute '{key}' is a list; lists may hold only strings (Bedrock's STRING_LIST)."
            )
        return list(raw)
    raise DocumentParseError(
        f"{name}: attribute '{key}' has a {type(raw).__name__} value; allowed: string, number, boolean, "
        "list of strings."
    )
