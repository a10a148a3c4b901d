"""Bedrock's ``RetrievalFilter`` grammar, translated into the vector store's SQL ``WHERE`` clause.

The grammar (botocore ``bedrock-agent-runtime`` ``RetrievalFilter``): exactly one operator per
object; ``andAll`` / ``orAll`` take 2 to 5 filters; every other operator takes ``{"key": ...,
"value": ...}``. Metadata lives in one JSON column, so comparisons use Lance's JSON functions
(``json_get_string``, ``json_get_float``, ``json_array_contains``); Bedrock's reserved keys
``x-amz-bedrock-kb-source-uri`` and ``x-amz-bedrock-kb-data-source-id`` map to real columns.

Semantics as Bedrock documents them: ``equals`` / ``notEquals`` compare strings, numbers or
booleans; ``greaterThan`` & co. take numbers; ``in`` / ``notIn`` a list of strings; ``startsWith``
a string (on string attributes); ``listContains`` a string that is a member of a list
attribute; ``stringContains`` a string that is a substring of a string attribute, or of a member
of a list attribute. A document without the key never matches (``notEquals`` and ``notIn``
included, as in Bedrock's vector stores).
"""

from __future__ import annotations

import json
from typing import Any

from outcrop.errors import InvalidRequestError
from outcrop.knowledge.types import DATA_SOURCE_ID_KEY, SOURCE_URI_KEY

COMPARISONS = (
    "equals",
    "notEquals",
    "greaterThan",
    "greaterThanOrEquals",
    "lessThan",
    "lessThanOrEquals",
    "in",
    "notIn",
    "startsWith",
    "listContains",
    "stringContains",
)
COMBINATIONS = ("andAll", "orAll")
OPERATORS = COMPARISONS + COMBINATIONS
# Reserved keys stored as columns of their own.
COLUMNS = {SOURCE_URI_KEY: "source_uri", DATA_SOURCE_ID_KEY: "data_source_id"}
METADATA_COLUMN = "metadata"
MAX_DEPTH = 5
_NUMERIC = {"greaterThan": ">", "greaterThanOrEquals": ">=", "lessThan": "<", "lessThanOrEquals": "<="}


class FilterError(InvalidRequestError):
    """Raised when a Retrieve filter has an operator, key or value the store cannot take; the message
    names the operator or field and the fix. Retrying does not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="vectorSearchConfiguration.filter")


def to_sql(spec: dict[str, Any] | None) -> str | None:
    """The ``WHERE`` clause for a ``RetrievalFilter`` (None: no filter)."""
    if spec is None:
        return None
    return _node(spec, "filter", 0)


def _node(spec: Any, where: str, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where} nests andAll/orAll more than {MAX_DEPTH} levels deep; flatten it.")
    if not isinstance(spec, dict) or len(spec) != 1:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise FilterError(
            f"{where} must be an object with exactly one operator (one of {', '.join(OPERATORS)}); got {got}."
        )
    ((op, arg),) = spec.items()
    if op in COMBINATIONS:
        if not isinstance(arg, list) or not 2 <= len(arg) <= 5:
            raise FilterError(f"{where}.{op} takes a list of 2 to 5 filters.")
        joiner = " AND " if op == "andAll" else " OR "
        return (
            "("
            + joiner.join(_node(item, f"{where}.{op}[{i}]", depth + 1) for i, item in enumerate(arg))
            + ")"
        )
    if op not in COMPARISONS:
        raise FilterError(
            f"{where} uses the operator '{op}', which does not exist. Use one of: {', '.join(OPERATORS)}."
        )
    if not isinstance(arg, dict) or set(arg) != {"key", "value"}:
        raise FilterError(f'{where}.{op} takes {{"key": "<metadata attribute>", "value": ...}}.')
    key, value = arg["key"], arg["value"]
    if not isinstance(key, str) or not 1 <= len(key) <= 100:
        raise FilterError(f"{where}.{op}.key must be a metadata attribute name of 1 to 100 characters.")
    return _comparison(op, key, value, f"{where}.{op}")


def _comparison(op: str, key: str, value: Any, where: str) -> str:
    column = COLUMNS.get(key)
    string_expr = column or f"json_get_string({METADATA_COLUMN}, {_quote(key)})"
    exists = "TRUE" if column else f"json_exists({METADATA_COLUMN}, {_quote(_path(key))})"
    if op in ("equals", "notEquals"):
        negate = "NOT " if op == "notEquals" else ""
        if isinstance(value, bool):
            if column:
                raise FilterError(f"{where}: '{key}' is a string; compare it with a string.")
            expr = f"json_get_bool({METADATA_COLUMN}, {_quote(key)}) = {str(value).upper()}"
        elif isinstance(value, int | float):
            if column:
                raise FilterError(f"{where}: '{key}' is a string; compare it with a string.")
            expr = f"json_get_float({METADATA_COLUMN}, {_quote(key)}) = {float(value)!r}"
        elif isinstance(value, str):
            expr = f"{string_expr} = {_quote(value)}"
        else:
            raise FilterError(f"{where}.value must be a string, a number or a boolean.")
        return f"({exists} AND {negate}COALESCE({expr}, FALSE))"
    if op in _NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FilterError(f"{where}.value must be a number: {op} compares numeric attributes.")
        if column:
            raise FilterError(f"{where}: '{key}' is a string; {op} compares numbers.")
        return f"COALESCE(json_get_float({METADATA_COLUMN}, {_quote(key)}) {_NUMERIC[op]} {float(value)!r}, FALSE)"
    if op in ("in", "notIn"):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise FilterError(f"{where}.value must be a non-empty list of strings.")
        negate = "NOT " if op == "notIn" else ""
        members = ", ".join(_quote(v) for v in value)
        return f"({exists} AND {negate}COALESCE({string_expr} IN ({members}), FALSE))"
    if not isinstance(value, str):
        raise FilterError(f"{where}.value must be a string.")
    if op == "startsWith":
        return f"COALESCE(starts_with({string_expr}, {_quote(value)}), FALSE)"
    if op == "listContains":
        if column:
            raise FilterError(f"{where}: '{key}' is a string, not a list; use equals or stringContains.")
        return (
            f"COALESCE(json_array_contains({METADATA_COLUMN}, {_quote(_path(key))}, {_quote(value)}), FALSE)"
        )
    # stringContains: a substring of a string attribute, or of a list attribute's members (tested
    # on the list's JSON text, so a substring spanning two members' quotes would also match).
    text = column or f"json_extract({METADATA_COLUMN}, {_quote(_path(key))})"
    return f"COALESCE(strpos({text}, {_quote(value)}) > 0, FALSE)"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _path(key: str) -> str:
    """A JSONPath naming one top-level key, whatever characters it holds."""
    return "$[" + json.dumps(key) + "]"
