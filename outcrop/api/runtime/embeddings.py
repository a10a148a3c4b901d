"""InvokeModel with an embeddings body (Titan ``inputText`` or Cohere ``texts``) on an embedding model.

``invoke_model`` calls :func:`maybe_invoke_embedding` first; it answers (and returns the
response) only for embeddings bodies, so text-generation bodies keep their own path. The
translation is in :mod:`outcrop.protocol.embeddings`.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from outcrop.api.deps import Services, read_json_object
from outcrop.api.inference import cold_start_policy, invocation
from outcrop.errors import WrongModelKindError
from outcrop.protocol import embeddings as emb
from outcrop.serving.routing import EMBEDDINGS_PATH


async def maybe_invoke_embedding(request: Request, services: Services, model_id: str) -> Response | None:
    """The InvokeModel answer for a Titan or Cohere embeddings body; None for any other body."""
    body = await read_json_object(request)
    if not emb.is_embedding_body(body):
        return None
    model = await services.serving.resolve(model_id)
    if not model.is_embedding:
        dialect = (
            "a Titan embeddings body (inputText)" if "inputText" in body else "a Cohere embed body (texts)"
        )
        raise WrongModelKindError(model.name, model.kind, dialect)
    if "inputText" in body:
        copy_body, types = emb.parse_titan(body, model)
    else:
        copy_body, cohere_types = emb.parse_cohere(body, model)
    async with invocation(services, request, model_id, "InvokeModel") as call:
        resp = await services.serving.post(
            model_id, EMBEDDINGS_PATH, copy_body, cold_start=cold_start_policy(request, bedrock=True)
        )
    if "inputText" in body:
        answer = emb.titan_answer(resp, types)
    else:
        answer = emb.cohere_answer(resp, copy_body["input"], cohere_types)
    usage = resp.get("usage") or {}
    call.record(usage, body, {"embeddings": len(resp.get("data") or [])})
    return JSONResponse(
        answer,
        headers={
            "x-amzn-bedrock-input-token-count": str(usage.get("prompt_tokens", 0)),
            "x-amzn-bedrock-output-token-count": "0",
            "x-amzn-bedrock-invocation-latency": str(call.latency_ms),
        },
    )
