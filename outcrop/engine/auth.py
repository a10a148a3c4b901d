"""The copy's half of its gateway's secret: every route but ``/health`` needs the copy's token.

A launcher generates one token per copy (``secrets.token_urlsafe``) and puts it in the copy's
environment (``OUTCROP_COPY_TOKEN``, read by :func:`outcrop.envs.copy_token`; never on the
command line, which every local user can read with ``ps``). The gateway's copy client sends
``Authorization: Bearer <token>`` on every call, so the only way to a copy's completions is
through a gateway, with its policies, throttling, audit and invocation log. ``/health`` stays
open: load balancers and the gateway's start-up probe need no secret, and it serves no model.

A request without the token, or with another one, gets 401 in OpenAI's error shape (the same
type and code as the gateway's own 401). The token is compared in constant time.

A copy started by hand without ``OUTCROP_COPY_TOKEN`` (``python -m outcrop.engine.worker ...``)
serves unauthenticated and says so in its log: every launcher sets the variable.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("outcrop.engine.auth")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes a caller without the token may use: the readiness probe (it serves no model).
OPEN_PATHS = frozenset({"/health"})
# The gateway's OpenAI dialect answers a bad key with these (outcrop.api.openai.errors); the copy too.
UNAUTHORIZED_TYPE = "authentication_error"
UNAUTHORIZED_CODE = "invalid_api_key"


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for any other value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def refusal(path: str, authorization: bytes | None, token: bytes) -> str | None:
    """Why a request for ``path`` with this ``Authorization`` value is refused; None: it may pass."""
    if path in OPEN_PATHS:
        return None
    presented = bearer_token(authorization)
    if presented is None:
        what = (
            "no Authorization header"
            if not authorization
            else "an Authorization header that is not 'Bearer <token>'"
        )
        return (
            f"This model copy requires its gateway's token, and the request to {path} carried {what}. "
            "Send requests through the Outcrop gateway (it holds the token), not to the copy's port."
        )
    if not hmac.compare_digest(presented, token):
        return (
            f"The bearer token sent to {path} is not this model copy's token. Send requests through the "
            "Outcrop gateway that started the copy (it holds the token), not to the copy's port."
        )
    return None


class RequireCopyToken:
    """ASGI middleware: 401 (OpenAI's error shape) for a request without the copy's token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("RequireCopyToken needs a non-empty token")
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value
                break
        why = refusal(scope["path"], authorization, self.token)
        if why is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps(
            {"error": {"message": why, "type": UNAUTHORIZED_TYPE, "param": None, "code": UNAUTHORIZED_CODE}},
            separators=(",", ":"),
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="outcrop-copy"'),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def protect(app: ASGIApp, token: str | None) -> ASGIApp:
    """``app`` behind the copy's token; ``app`` itself (logged as unauthenticated) when there is none."""
    if not token:
        log.warning(
            "OUTCROP_COPY_TOKEN is not set: this copy answers anyone who reaches its port. "
            "Start copies through an Outcrop gateway (its launchers set the token)."
        )
        return app
    return RequireCopyToken(app, token)
