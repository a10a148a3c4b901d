"""OpenAI ``POST /v1/embeddings`` (thin: parse, check the model's kind and dimensions, call a copy).

The openai SDK's ``client.embeddings.create`` asks for base64 by default; the copy encodes
(little-endian float32, what the SDK decodes), so the gateway passes the answer through.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.api.inference import cold_start_policy, invocation
from outcrop.errors import InvalidRequestError, WrongModelKindError
from outcrop.protocol import embeddings as emb
from outcrop.serving.routing import EMBEDDINGS_PATH

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/embeddings", summary="CreateEmbedding")
async def create_embedding(request: Request, services: Services = Depends(get_services)) -> Response:
    body = await read_json_object(request)
    model_name = body.get("model")
    if not isinstance(model_name, str) or not model_name:
        raise InvalidRequestError(
            "'model' is required: the name of an imported embedding model (see GET /v1/models).",
            param="model",
        )
    parsed = emb.parse_openai(body)
    model = await services.serving.resolve(model_name)
    if not model.is_embedding:
        raise WrongModelKindError(model.name, model.kind, "embeddings requests")
    emb.check_dimensions(model, parsed.dimensions)
    async with invocation(services, request, model_name, "Embeddings") as call:
        resp = await services.serving.post(
            model_name,
            EMBEDDINGS_PATH,
            emb.openai_copy_body(parsed),
            cold_start=cold_start_policy(request, bedrock=False),
        )
    call.record(resp.get("usage") or {}, body, {"embeddings": len(resp.get("data") or [])})
    return JSONResponse(resp, headers={"x-request-id": getattr(request.state, "request_id", "")})


# The guard's action for this route: embeddings are model invocations, as completions are.
create_embedding.outcrop_action = lambda request: "bedrock:InvokeModel"  # type: ignore[attr-defined]
