"""Embedding request bodies in each dialect -> the copy's ``/v1/embeddings`` body, and answers back.

Three dialects reach an embedding model:

- OpenAI ``POST /v1/embeddings``: ``input`` (str | [str] | token ids | [token ids]),
  ``encoding_format`` float | base64, ``dimensions``; answered in OpenAI's shape as is.
- InvokeModel with Titan's embeddings body: ``{"inputText", "dimensions", "normalize",
  "embeddingTypes"}`` -> ``{"embedding": [...], "inputTextTokenCount": n, "embeddingsByType"}``.
- InvokeModel with Cohere embed's body: ``{"texts", "input_type", "truncate",
  "embedding_types"}`` -> ``{"embeddings": [[...]], "id", "texts", "response_type"}``
  (``embeddings_floats``; ``embeddings_by_type`` when ``embedding_types`` is given).

``dimensions`` below the model's length is allowed only for a model imported as truncatable
(Matryoshka; see docs/embeddings.md); otherwise it is a 400 that says so.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from outcrop.engine.embedding_protocol import EmbeddingRequest, check_inputs
from outcrop.errors import InvalidRequestError
from outcrop.store.imports import ImportedModel

# Why 96: Cohere embed's limit on texts per request (Bedrock's documentation); clients batch by it.
COHERE_MAX_TEXTS = 96
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_TRUNCATE = ("NONE", "START", "END")
TITAN_EMBEDDING_TYPES = ("float", "binary")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_dimensions(model: ImportedModel, dimensions: int | None, param: str = "dimensions") -> None:
    """``dimensions`` must fit the model; below its length only when the model may be truncated."""
    if dimensions is None:
        return
    full = model.embedding_dimension or 0
    if full and dimensions > full:
        raise InvalidRequestError(
            f"'{param}' is {dimensions}, but model '{model.name}' makes vectors of {full}; ask for {full} or "
            "fewer, or leave it out.",
            param=param,
        )
    if full and dimensions < full and not model.embedding_truncatable:
        raise InvalidRequestError(
            f"'{param}' is {dimensions}, but model '{model.name}' was not trained for truncated vectors "
            f"(Matryoshka), so it answers only its full {full} dimensions. Leave '{param}' out, or import the "
            "model with the tag outcrop:matryoshka=true (or matryoshka_dimensions in "
            "config_sentence_transformers.json) if it was trained for it.",
            param=param,
        )


# ------------------------------------------------------------------ OpenAI


def parse_openai(body: dict[str, Any]) -> EmbeddingRequest:
    """An OpenAI embeddings body, checked (the copy's own model, so both refuse alike)."""
    try:
        request = EmbeddingRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        field = loc[0] if loc else None
        kind = first.get("type", "")
        if kind == "extra_forbidden":
            message = f"Unknown parameter '{field}'; remove it (see the OpenAI embeddings API)."
        elif kind == "missing":
            message = (
                f"'{field}' is required: the text(s) to embed."
                if field == "input"
                else f"'{field}' is required."
            )
        elif field == "input":
            message = (
                f"'input' is {_shown(body.get('input'))}; it must be a string, a list of strings, a list of token "
                "ids, or a list of token-id lists."
            )
        elif field == "encoding_format":
            message = f"'encoding_format' is {_shown(body.get('encoding_format'))}; use 'float' or 'base64'."
        else:
            message = f"Invalid value for '{'.'.join(loc)}': {first.get('msg')}."
        raise InvalidRequestError(message, param=field) from None
    if body.get("normalize") is not None or body.get("priority") is not None:
        raise InvalidRequestError(
            "'normalize' and 'priority' are not OpenAI embeddings parameters; remove them.", param="normalize"
        )
    try:
        check_inputs(request.inputs())
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="input") from None
    return request


def openai_copy_body(request: EmbeddingRequest) -> dict[str, Any]:
    return request.model_dump(exclude_none=True, exclude={"priority", "model"})


# ------------------------------------------------------------------ Bedrock InvokeModel bodies


def is_embedding_body(body: dict[str, Any]) -> bool:
    """A Titan (``inputText``) or Cohere (``texts``) embeddings body rather than a text-generation one."""
    return ("inputText" in body or "texts" in body) and "prompt" not in body and "messages" not in body


def parse_titan(body: dict[str, Any], model: ImportedModel) -> tuple[dict[str, Any], list[str]]:
    """Titan's ``{"inputText", "dimensions", "normalize", "embeddingTypes"}`` -> (copy body, embedding types)."""
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise InvalidRequestError(
            f"'inputText' is {_shown(text)}; it must be a non-empty string (the text to embed).",
            param="inputText",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidRequestError(
            f"'dimensions' is {_shown(dimensions)}; it must be a positive integer.", param="dimensions"
        )
    check_dimensions(model, dimensions)
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise InvalidRequestError(
            f"'normalize' is {_shown(normalize)}; it must be true or false.", param="normalize"
        )
    types = body.get("embeddingTypes", ["float"])
    if not (isinstance(types, list) and types and all(t in TITAN_EMBEDDING_TYPES for t in types)):
        raise InvalidRequestError(
            f"'embeddingTypes' is {_shown(types)}; it must be a non-empty list of 'float' and/or 'binary'.",
            param="embeddingTypes",
        )
    copy: dict[str, Any] = {"input": [text], "encoding_format": "float", "normalize": normalize}
    if dimensions is not None:
        copy["dimensions"] = dimensions
    return copy, list(dict.fromkeys(types))


def titan_answer(resp: dict[str, Any], types: list[str]) -> dict[str, Any]:
    vector = resp["data"][0]["embedding"]
    by_type: dict[str, Any] = {}
    if "float" in types:
        by_type["float"] = vector
    if "binary" in types:
        by_type["binary"] = [1 if x > 0 else 0 for x in vector]
    return {
        "embedding": vector,
        "inputTextTokenCount": int((resp.get("usage") or {}).get("prompt_tokens", 0)),
        "embeddingsByType": by_type,
    }


def parse_cohere(body: dict[str, Any], model: ImportedModel) -> tuple[dict[str, Any], list[str] | None]:
    """Cohere embed's ``{"texts", "input_type", "truncate", "embedding_types"}`` -> (copy body, types)."""
    texts = body.get("texts")
    if not (isinstance(texts, list) and texts and all(isinstance(t, str) and t for t in texts)):
        raise InvalidRequestError(
            f"'texts' is {_shown(texts)}; it must be a non-empty list of non-empty strings.", param="texts"
        )
    if len(texts) > COHERE_MAX_TEXTS:
        raise InvalidRequestError(
            f"'texts' holds {len(texts)} strings; at most {COHERE_MAX_TEXTS} per request. Split it.",
            param="texts",
        )
    input_type = body.get("input_type")
    if input_type is not None and input_type not in COHERE_INPUT_TYPES:
        raise InvalidRequestError(
            f"'input_type' is {_shown(input_type)}; use one of {', '.join(COHERE_INPUT_TYPES)}.",
            param="input_type",
        )
    truncate = body.get("truncate")
    if truncate is not None and truncate not in COHERE_TRUNCATE:
        raise InvalidRequestError(
            f"'truncate' is {_shown(truncate)}; use one of {', '.join(COHERE_TRUNCATE)}.", param="truncate"
        )
    types = body.get("embedding_types")
    if types is not None and types != ["float"]:
        raise InvalidRequestError(
            f"'embedding_types' is {_shown(types)}; this model answers ['float'] only (leave it out for the "
            "plain float list).",
            param="embedding_types",
        )
    dimensions = body.get("output_dimension")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidRequestError(
            f"'output_dimension' is {_shown(dimensions)}; it must be a positive integer.",
            param="output_dimension",
        )
    check_dimensions(model, dimensions, "output_dimension")
    copy: dict[str, Any] = {"input": list(texts), "encoding_format": "float"}
    if dimensions is not None:
        copy["dimensions"] = dimensions
    return copy, types


def cohere_answer(resp: dict[str, Any], texts: list[str], types: list[str] | None) -> dict[str, Any]:
    vectors = [item["embedding"] for item in sorted(resp["data"], key=lambda d: d["index"])]
    if types:
        return {
            "id": str(uuid.uuid4()),
            "texts": texts,
            "embeddings": {"float": vectors},
            "response_type": "embeddings_by_type",
        }
    return {
        "id": str(uuid.uuid4()),
        "texts": texts,
        "embeddings": vectors,
        "response_type": "embeddings_floats",
    }
