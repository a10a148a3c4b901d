"""The SageMaker control plane: boto3 ``sagemaker`` speaks JSON 1.1, every operation a ``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``. Thin: parse, call the service, answer.

Authorization: the action is ``sagemaker:<Operation>`` and the resource the ARN of the model,
endpoint config, endpoint or inference component the body names (``*`` for listings); the guard reads both through the
``outcrop_action`` / ``outcrop_resource`` attributes of the route's function.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from outcrop.api import jsonbody
from outcrop.api.deps import MAX_BODY_BYTES, Services, get_services
from outcrop.api.sagemaker.errors import JSON_11
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.sagemaker import protocol as p
from outcrop.sagemaker.service import SageMakerService, parse

router = APIRouter(tags=["sagemaker"])

TARGET_PREFIX = "SageMaker."

Handler = Callable[[SageMakerService, dict[str, Any]], dict[str, Any]]


def _empty(fn: Callable[[SageMakerService, dict[str, Any]], None]) -> Handler:
    def run(svc: SageMakerService, body: dict[str, Any]) -> dict[str, Any]:
        fn(svc, body)
        return {}

    return run


OPERATIONS: dict[str, Handler] = {
    "CreateModel": lambda s, b: {"ModelArn": s.create_model(parse(p.CreateModelInput, b))},
    "DescribeModel": lambda s, b: s.describe_model(parse(p.ModelNameInput, b).ModelName),
    "ListModels": lambda s, b: s.list_models(parse(p.ListInput, b)),
    "DeleteModel": _empty(lambda s, b: s.delete_model(parse(p.ModelNameInput, b).ModelName)),
    "CreateEndpointConfig": lambda s, b: {
        "EndpointConfigArn": s.create_endpoint_config(parse(p.CreateEndpointConfigInput, b))
    },
    "DescribeEndpointConfig": lambda s, b: s.describe_endpoint_config(
        parse(p.EndpointConfigNameInput, b).EndpointConfigName
    ),
    "ListEndpointConfigs": lambda s, b: s.list_endpoint_configs(parse(p.ListInput, b)),
    "DeleteEndpointConfig": _empty(
        lambda s, b: s.delete_endpoint_config(parse(p.EndpointConfigNameInput, b).EndpointConfigName)
    ),
    "CreateEndpoint": lambda s, b: {"EndpointArn": s.create_endpoint(parse(p.CreateEndpointInput, b))},
    "UpdateEndpoint": lambda s, b: {"EndpointArn": s.update_endpoint(parse(p.UpdateEndpointInput, b))},
    "DescribeEndpoint": lambda s, b: s.describe_endpoint(parse(p.EndpointNameInput, b).EndpointName),
    "ListEndpoints": lambda s, b: s.list_endpoints(parse(p.ListInput, b)),
    "DeleteEndpoint": _empty(lambda s, b: s.delete_endpoint(parse(p.EndpointNameInput, b).EndpointName)),
    "CreateInferenceComponent": lambda s, b: {
        "InferenceComponentArn": s.components.create(parse(p.CreateInferenceComponentInput, b))
    },
    "DescribeInferenceComponent": lambda s, b: s.components.describe(
        parse(p.InferenceComponentNameInput, b).InferenceComponentName
    ),
    "ListInferenceComponents": lambda s, b: s.components.list(parse(p.ListInferenceComponentsInput, b)),
    "UpdateInferenceComponent": lambda s, b: {
        "InferenceComponentArn": s.components.update(parse(p.UpdateInferenceComponentInput, b))
    },
    "DeleteInferenceComponent": _empty(
        lambda s, b: s.components.delete(parse(p.InferenceComponentNameInput, b).InferenceComponentName)
    ),
}
# The body member that names each operation's resource, and that resource's ARN type.
_RESOURCE_MEMBERS = (
    ("InferenceComponentName", "inference-component"),
    ("EndpointName", "endpoint"),
    ("EndpointConfigName", "endpoint-config"),
    ("ModelName", "model"),
)


def operation_of(request: Request) -> str:
    """The operation ``X-Amz-Target`` names ('' when it names none)."""
    target = request.headers.get("x-amz-target", "")
    return target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""


def _action(request: Request) -> str:
    return f"sagemaker:{operation_of(request) or 'UnknownOperation'}"


async def _resource(request: Request, config: OutcropConfig) -> str:
    operation = operation_of(request)
    if operation.startswith("List"):
        return "*"
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):  # the route answers a bad body
        return "*"
    for member, kind in _RESOURCE_MEMBERS:
        if isinstance(body, dict) and isinstance(body.get(member), str):
            name = body[member].lower()
            return f"arn:aws:sagemaker:{config.aws.region}:{config.aws.account_id}:{kind}/{name}"
    return "*"


@router.post("/", summary="SageMaker")
async def sagemaker_control(request: Request, services: Services = Depends(get_services)) -> Response:
    operation = operation_of(request)
    handler = OPERATIONS.get(operation)
    if handler is None:
        target = request.headers.get("x-amz-target") or "(none)"
        raise InvalidRequestError(
            f"X-Amz-Target {target!r} is not a SageMaker operation this server offers; it offers "
            f"{', '.join(sorted(OPERATIONS))} (use boto3.client('sagemaker', endpoint_url=...)).",
            param="X-Amz-Target",
        )
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequestError(
            f"The request body has {len(raw):,} bytes; the limit is {MAX_BODY_BYTES:,}."
        )
    body = jsonbody.loads(raw or b"{}")
    if not isinstance(body, dict):
        raise InvalidRequestError(f"The request body must be a JSON object, not {type(body).__name__}.")
    # In a thread: the operations touch the store (and, for a folder CreateModel, the import source).
    answer = await asyncio.to_thread(handler, services.extra["sagemaker"], body)
    return Response(json.dumps(answer, separators=(",", ":")), media_type=JSON_11)


sagemaker_control.outcrop_action = _action  # type: ignore[attr-defined]
sagemaker_control.outcrop_resource = _resource  # type: ignore[attr-defined]
