"""Admin API for principals and their keys (``outcrop keys``). Secrets are shown once, on create/rotate.

Listing: every authenticated caller may list keys and always sees its own; another principal's
key (its id, prefixes and policy) is shown only when the caller's policy allows
``outcrop:ListKeys`` on that principal's ARN (``arn:aws:iam::000000000000:user/<name>``), which
the built-in admin policy does and read-only and invoke-only do not.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from outcrop.api.bedrock.protocol import iso8601
from outcrop.api.deps import Services, get_services, read_json_object
from outcrop.auth import policies
from outcrop.auth.guard import ANONYMOUS, AuthContext
from outcrop.auth.keys import NewCredentials, Principal
from outcrop.errors import InvalidRequestError
from outcrop.registry import arns

router = APIRouter(prefix="/outcrop/keys", tags=["outcrop admin"])


def _principal_body(p: Principal) -> dict[str, Any]:
    return {
        "name": p.name,
        "accessKeyId": p.access_key_id,
        "apiKeyPrefix": p.api_key_prefix,
        "policy": p.policy,
        "createdAt": iso8601(p.created_at),
    }


def _credentials_body(c: NewCredentials) -> dict[str, Any]:
    return {**_principal_body(c.principal), "secretAccessKey": c.secret_access_key, "apiKey": c.api_key}


def _model_names(value: Any) -> list[str]:
    """'models': the imported models an invoke-only key may call (a list of names or ARNs)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        shown = f"a {type(value).__name__}" if not isinstance(value, list) else "a list with non-string items"
        raise InvalidRequestError(
            f"'models' is {shown}; it must be a list of imported model names or ARNs, like "
            '["my-llama", "my-qwen"] (`outcrop keys create NAME --model my-llama`).',
            param="models",
        )
    return list(value)


@router.post("", summary="CreateKey")
async def create_key(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = await read_json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not arns.MODEL_NAME_RE.fullmatch(name) or len(name) > 64:
        raise InvalidRequestError("'name' must be 1-64 letters, digits, '-' or '_'.", param="name")
    kind = body.get("policy", "invoke-only")
    if isinstance(kind, str):
        if kind not in policies.BUILT_IN:
            raise InvalidRequestError(
                f"Unknown policy {kind!r}; built-in: {', '.join(policies.BUILT_IN)}, or give a policy "
                "document (a JSON object with a 'Statement' list; `outcrop keys create NAME --policy "
                "file://policy.json`).",
                param="policy",
            )
        names = _model_names(body.get("models"))
        if kind == "invoke-only" and names:
            models = [services.registry.model_arn(services.registry.get_model(m)) for m in names]
            policy = policies.invoke_only(models)
        else:
            policy = policies.BUILT_IN[kind]()
    else:
        policy = policies.validate(kind)
    return _credentials_body(services.keys.create(name, policy))


def may_see_key(viewer: Principal | None, key: Principal) -> bool:
    """Its own key, or another's with outcrop:ListKeys on that principal's ARN (None: auth is off)."""
    if viewer is None or viewer.id == key.id:
        return True
    return policies.evaluate(viewer.policy, policies.LIST_KEYS_ACTION, key.arn)


@router.get("", summary="ListKeys")
def list_keys(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    auth: AuthContext | None = getattr(request.state, "auth", None)
    viewer = None if auth is None or auth.principal is ANONYMOUS else auth.principal
    return {"keys": [_principal_body(p) for p in services.keys.list() if may_see_key(viewer, p)]}


@router.delete("/{name}", summary="DeleteKey")
def delete_key(name: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    services.keys.delete(name)
    return {}


@router.post("/{name}/rotate", summary="RotateKey")
def rotate_key(name: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return _credentials_body(services.keys.rotate(name))
