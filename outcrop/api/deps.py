"""What the routers share: the services container and body parsing with clear errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from outcrop.api import jsonbody
from outcrop.api.bodylimit import MAX_BODY_BYTES
from outcrop.api.metrics import Metrics
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import Registry
from outcrop.store.db import Database

if TYPE_CHECKING:
    from outcrop.auth.guard import Guard
    from outcrop.auth.keys import KeyStore
    from outcrop.registry.tokenizers import TokenizerCache
    from outcrop.serving.invocation_log import InvocationLogger
    from outcrop.serving.service import Serving
    from outcrop.serving.throttling import Throttler

M = TypeVar("M", bound=BaseModel)

# Bedrock's InvokeModel accepts bodies up to 25,000,000 bytes; nothing Outcrop takes is larger.


@dataclass
class Services:
    """Everything a request handler may need; built once by the app factory."""

    config: OutcropConfig
    db: Database
    registry: Registry
    metrics: Metrics
    import_worker: ImportWorker | None = None
    serving: Serving = None  # type: ignore[assignment]  # set by the app factory
    tokenizers: TokenizerCache = None  # type: ignore[assignment]  # set by the app factory
    throttler: Throttler = None  # type: ignore[assignment]  # set by the app factory
    invocation_log: InvocationLogger = None  # type: ignore[assignment]  # set by the app factory
    keys: KeyStore = None  # type: ignore[assignment]  # set by the app factory
    guard: Guard = None  # type: ignore[assignment]  # set by the app factory
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def import_worker_wake(self) -> None:
        if self.import_worker is not None:
            self.import_worker.wake()


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def describe_validation_error(exc: ValidationError) -> str:
    """'1 validation error detected: ...' in Bedrock's wording, naming each field and the constraint."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        found = err.get("input")
        shown = "" if err["type"] == "missing" else f"Value {json.dumps(found, default=str)[:80]} at "
        parts.append(f"{shown}'{where}' failed to satisfy constraint: {err['msg']}")
    count = len(exc.errors())
    return f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(parts)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequestError saying what is wrong with it."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequestError(
            f"The request body has {len(raw):,} bytes; the limit is {MAX_BODY_BYTES:,}."
        )
    data = jsonbody.loads(raw or b"{}")  # bounded depth and number size (outcrop.api.jsonbody)
    if not isinstance(data, dict):
        raise InvalidRequestError(f"The request body must be a JSON object, not {type(data).__name__}.")
    return data


async def parse_body(request: Request, model: type[M]) -> M:
    data = await read_json_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None
