"""Authentication and authorization of every API request (a global FastAPI dependency).

Bedrock surfaces take AWS SigV4 (as boto3 signs) or ``Authorization: Bearer <api key>``; the
OpenAI surface takes the bearer key. The action comes from the route (its Bedrock operation
name), the resource from the model the request names. ``/health``, ``/metrics`` and the
``/console`` page (which holds no data) are open.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from outcrop.auth import policies
from outcrop.auth.audit import AuditLog
from outcrop.auth.keys import KeyStore, Principal
from outcrop.auth.sigv4 import UNKNOWN_KEY, SignedRequest, check_headers, verify_signature
from outcrop.config import OutcropConfig
from outcrop.errors import AccessDeniedError, AuthenticationError, UnrecognizedClientError
from outcrop.prompts.service import is_prompt_arn
from outcrop.registry import arns

# The console page holds no data: what it shows it fetches with the key the user types.
OPEN_ENDPOINTS = frozenset({"health", "metrics", "console"})
# Routes whose operation is not a Bedrock one: endpoint function name -> action.
ACTION_OVERRIDES = {
    "list_models": "bedrock:ListImportedModels",
    "completions": "bedrock:InvokeModel",
    "chat_completions": "bedrock:InvokeModel",
    "responses": "bedrock:InvokeModel",
    "import_job_detail": "bedrock:GetModelImportJob",
    "model_detail": "bedrock:GetImportedModel",
    "list_copies": "outcrop:ListCopies",
    "endpoint_metrics": "outcrop:GetEndpointMetrics",
    "warm_model": "outcrop:WarmModel",
    "create_key": "outcrop:CreateKey",
    "list_keys": "outcrop:ListKeys",
    "delete_key": "outcrop:DeleteKey",
    "rotate_key": "outcrop:RotateKey",
    "get_stats": "outcrop:GetStats",
    "update_model_scaling": "outcrop:UpdateModelScaling",
    "read_audit": "outcrop:ReadAudit",
}
# Routes open to every authenticated caller that authorize each item themselves (a caller may
# always list its own key; others' need outcrop:ListKeys on their ARN: outcrop/api/keys.py).
HANDLER_AUTHORIZED = frozenset({"list_keys"})
MODEL_PARAMS = ("modelId", "modelIdentifier", "identifier")
ANONYMOUS = Principal("anonymous", "anonymous", "", None, policies.admin(), 0.0)


@dataclass
class AuthContext:
    principal: Principal
    action: str
    resource: str


class Guard:
    def __init__(
        self,
        config: OutcropConfig,
        keys: KeyStore | None,
        audit: AuditLog,
        registry: Any,
        resolve: Callable[[str], Awaitable[Any]],
    ) -> None:
        self.config = config
        self.keys = keys
        self.audit = audit
        self.registry = registry
        self.resolve = resolve  # name or ARN -> ImportedModel, cached (serving's resolver)

    def action_for(self, request: Request) -> str | None:
        route = request.scope.get("route")
        name = getattr(route, "name", None)
        if name is None or name in OPEN_ENDPOINTS:
            return None
        if name in ACTION_OVERRIDES:
            return ACTION_OVERRIDES[name]
        custom = getattr(getattr(route, "endpoint", None), "outcrop_action", None)
        if custom is not None:  # a route whose action depends on the request (SageMaker's X-Amz-Target)
            return str(custom(request))
        summary = getattr(route, "summary", None) or name
        return f"bedrock:{summary}" if summary.isalnum() else f"outcrop:{name}"

    async def _resource(self, request: Request) -> tuple[str, str | None]:
        """The ARN the request acts on ('*' for none), and the model's name when the caller named it by name."""
        custom = getattr(getattr(request.scope.get("route"), "endpoint", None), "outcrop_resource", None)
        if custom is not None:  # a route that names its own resource (SageMaker endpoint ARNs)
            return str(await custom(request, self.config)), None
        identifier = next((request.path_params[p] for p in MODEL_PARAMS if p in request.path_params), None)
        if identifier is None and request.url.path.startswith("/v1/") and request.method == "POST":
            try:
                identifier = json.loads(await request.body() or b"{}").get("model")
            except (ValueError, AttributeError, RecursionError):  # the route answers a bad body
                identifier = None
        if not isinstance(identifier, str) or not identifier:
            return "*", None
        if is_prompt_arn(identifier):  # a runtime call on a prompt (Prompt management): its ARN as sent
            return identifier, None
        if request.url.path.startswith("/model-import-jobs") or request.url.path.startswith(
            "/outcrop/import-jobs"
        ):
            return "*", None
        try:
            model = await self.resolve(identifier)
        except Exception:  # unknown or malformed: the route answers that, if the caller may ask
            return arns.model_arn(self.config.aws, "unknown"), None
        # The name only when the caller used it: a denied caller learns no name it did not know.
        return self.registry.model_arn(model), (model.name if model.name == identifier else None)

    async def _authenticate(self, request: Request) -> Principal:
        assert self.keys is not None
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("AWS4-HMAC-SHA256"):
            headers = {k.lower(): v for k, v in request.headers.items()}
            # Everything that needs no body first: an unknown key or a bad scope never gets its body
            # read (and a body is only ever read up to the limit: outcrop.api.bodylimit).
            credential = check_headers(headers, region=self.config.aws.region)
            hit = self.keys.by_access_key(credential.access_key)
            if hit is None:
                raise UnrecognizedClientError(UNKNOWN_KEY)
            signer, secret = hit
            signed = SignedRequest(
                method=request.method,
                raw_path=request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
                query_string=request.scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=await request.body(),
            )
            verify_signature(signed, credential, secret)
            return signer
        api_key = request.headers.get("x-api-key") or (
            authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        )
        if api_key:
            principal = self.keys.by_api_key(api_key)
            if principal is not None:
                return principal
            raise AuthenticationError("The API key is not valid. Create one with `outcrop keys create`.")
        raise AuthenticationError(
            "Missing credentials: sign the request with AWS SigV4 (boto3 does) or send "
            "'Authorization: Bearer <api key>'. The admin credentials are in <data-dir>/credentials.json."
        )

    async def __call__(self, request: Request) -> None:
        action = self.action_for(request)
        if action is None:
            return
        if not self.config.auth.enabled:
            request.state.auth = AuthContext(ANONYMOUS, action, "*")
            return
        source = request.client.host if request.client else None
        try:
            principal = await self._authenticate(request)
        except AuthenticationError as exc:
            self.audit.write(
                outcome="unauthenticated",
                action=action,
                path=request.url.path,
                source=source,
                reason=exc.message[:120],
                request_id=getattr(request.state, "request_id", ""),
            )
            raise
        resource, model_name = await self._resource(request)
        request.state.auth = AuthContext(principal, action, resource)
        if getattr(request.scope.get("route"), "name", None) in HANDLER_AUTHORIZED:
            return
        if not policies.evaluate(principal.policy, action, resource):
            self.audit.write(
                outcome="denied",
                principal=principal.name,
                action=action,
                resource=resource,
                source=source,
                request_id=getattr(request.state, "request_id", ""),
            )
            named = f" (the imported model '{model_name}')" if model_name else ""
            raise AccessDeniedError(
                f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource}{named}. "
                "Use a key whose policy allows it (an admin can create one: `outcrop keys create NAME --policy ...`)."
            )

    @staticmethod
    def allows(request: Request, action: str, resource: str) -> bool:
        """For listings: may the caller see this item?"""
        auth: AuthContext | None = getattr(request.state, "auth", None)
        return auth is None or policies.evaluate(auth.principal.policy, action, resource)


def principal_name(request: Request) -> str | None:
    auth: AuthContext | None = getattr(request.state, "auth", None)
    return None if auth is None or auth.principal is ANONYMOUS else auth.principal.name
