"""The app factory: one FastAPI app carrying every surface (docs/architecture.md, "Surfaces")."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outcrop import __version__
from outcrop.api import admin, console, keys, ops, stats
from outcrop.api.agent import kb_runtime as kb_runtime_routes
from outcrop.api.agent import knowledge as knowledge_routes
from outcrop.api.agent import prompts as prompt_routes
from outcrop.api.bedrock import batch as batch_routes
from outcrop.api.bedrock import control, logging_config
from outcrop.api.bedrock import guardrails as guardrail_routes
from outcrop.api.bedrock.errors import bedrock_error_response
from outcrop.api.bodylimit import body_too_large, limit_body
from outcrop.api.deps import Services
from outcrop.api.metrics import Metrics
from outcrop.api.openai import embeddings as openai_embeddings
from outcrop.api.openai import routes as openai_routes
from outcrop.api.openai.errors import openai_error_response
from outcrop.api.runtime import guardrails as guardrail_runtime_routes
from outcrop.api.runtime import routes as runtime_routes
from outcrop.api.sagemaker import control as sagemaker_control
from outcrop.api.sagemaker import runtime as sagemaker_runtime
from outcrop.api.sagemaker.errors import control_error_response, runtime_error_response
from outcrop.api.sagemaker.metrics import SageMakerMetrics
from outcrop.auth.audit import AuditLog
from outcrop.auth.bootstrap import ensure_admin
from outcrop.auth.guard import Guard
from outcrop.auth.keys import KeyStore, load_or_create_server_key
from outcrop.batch.service import build_batch_service
from outcrop.config import OutcropConfig
from outcrop.errors import InternalError, InvalidRequestError, NotFoundError, OutcropError
from outcrop.guardrails.service import GuardrailService
from outcrop.knowledge.service import KnowledgeService
from outcrop.prompts.service import PromptService
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import Registry
from outcrop.registry.tokenizers import TokenizerCache
from outcrop.sagemaker.service import SageMakerService
from outcrop.serving.invocation_log import InvocationLogger
from outcrop.serving.service import Serving
from outcrop.serving.throttling import Throttler
from outcrop.store.db import Database
from outcrop.store.gateway_board import request_rates
from outcrop.store.schema import import_jobs, imported_models
from outcrop.store.settings import SettingsStore
from outcrop.store.token_usage import TokenLedger

log = logging.getLogger("outcrop.api")


def _surface(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/model/"):
        return "runtime"
    if path.startswith("/outcrop/"):
        return "admin"
    if path in ("/health", "/metrics"):
        return "ops"
    if path == "/":
        return "sagemaker"
    if path.startswith("/endpoints/"):
        return "sagemaker-runtime"
    return "bedrock"


def error_response(request: Request, exc: OutcropError) -> Response:
    request_id = getattr(request.state, "request_id", "") or str(uuid.uuid4())
    surface = _surface(request.url.path)
    if surface == "openai":
        return openai_error_response(exc, request_id)
    if surface == "sagemaker":
        return control_error_response(exc, request_id)
    if surface == "sagemaker-runtime":
        return runtime_error_response(exc, request_id)
    return bedrock_error_response(exc, request_id)


def _store_state(db: Database) -> Callable[[], dict[str, dict[str, int]]]:
    def read() -> dict[str, dict[str, int]]:
        with db.engine.connect() as conn:
            jobs: dict[str, int] = dict(
                conn.execute(
                    sa.select(import_jobs.c.status, sa.func.count()).group_by(import_jobs.c.status)
                ).all()
            )
            models = conn.execute(sa.select(sa.func.count()).select_from(imported_models)).scalar_one()
        return {
            "import_jobs": {str(k): int(v) for k, v in jobs.items()},
            "imported_models": {"total": int(models)},
        }

    return read


def _has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero Content-Length, or a chunked one)."""
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class RequestContext:
    """Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware, and it leaves streams
    alone): gives every request an id, and after it ends records metrics and the audit line."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Always our own id, as AWS does: a caller's x-amzn-requestid never reaches logs or answers.
        request_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        too_large = body_too_large(scope)
        body_read = not _has_body(scope)
        limited = limit_body(receive)

        async def receive_tracked() -> Message:
            nonlocal body_read
            message = await limited()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-amzn-RequestId", request_id)
                if not body_read:
                    # Answered before the body was read (refused on its headers, or cut off at the
                    # limit): close the connection rather than read and discard the rest of it.
                    headers["connection"] = "close"
            await send(message)

        receive = receive_tracked

        try:
            if too_large is not None:  # refused on its Content-Length: not a byte of the body is read
                await error_response(Request(scope), too_large)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception:  # a bug escaped every handler: never show a stack trace to the caller
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            if not response_started:
                response = error_response(
                    Request(scope),
                    InternalError(
                        f"An internal error occurred (request id {request_id}); see the server log."
                    ),
                )
                await response(scope, receive, send_with_id)
        finally:
            self._record(scope, state, request_id, status, time.perf_counter() - started)

    def _record(
        self, scope: Scope, state: dict[str, Any], request_id: str, status: int, seconds: float
    ) -> None:
        route = scope.get("route")
        operation = getattr(route, "summary", None) or getattr(route, "path", "unmatched")
        surface = _surface(scope.get("path", ""))
        metrics = self.services.metrics
        metrics.requests.labels(surface, operation, str(status)).inc()
        metrics.latency.labels(surface, operation).observe(seconds)
        auth = state.get("auth")
        if auth is not None and scope.get("method") != "GET" and surface in ("bedrock", "admin", "sagemaker"):
            self.services.guard.audit.write(
                outcome="allowed" if status < 400 else "failed",
                principal=auth.principal.name,
                action=auth.action,
                resource=auth.resource,
                status=status,
                request_id=request_id,
                source=(scope.get("client") or (None,))[0],
            )


def build_services(config: OutcropConfig, *, start_workers: bool = True) -> Services:
    db = Database(config.database_url)
    db.migrate()
    registry = Registry(config, db)
    metrics = Metrics()
    metrics.add_state_reader(_store_state(db))
    worker = ImportWorker(registry) if start_workers else None
    serving = Serving(config, registry)
    metrics.add_serving_reader(serving.stats)
    key_store = KeyStore(db, load_or_create_server_key(config.server_key_path))
    if config.auth.enabled:
        ensure_admin(config, key_store)
    audit = AuditLog(config.resolved_data_dir / "audit" / "audit.jsonl", enabled=config.auth.audit_log)
    guardrails = GuardrailService(config.aws, db, registry, serving, metrics.registry)
    batch = build_batch_service(config, db, registry, serving, start_runner=start_workers, keys=key_store)
    if batch.runner is not None:
        batch.runner.guardrails = guardrails  # Converse records may name a guardrail
    return Services(
        config=config,
        db=db,
        registry=registry,
        metrics=metrics,
        import_worker=worker,
        serving=serving,
        tokenizers=TokenizerCache(registry),
        throttler=Throttler(config.throttling, TokenLedger(db), request_rates(db)),
        invocation_log=InvocationLogger(config, SettingsStore(db)),
        keys=key_store,
        guard=Guard(config, key_store, audit, registry, serving.resolve),
        started_at=time.time(),
        extra={
            "batch": batch,
            "sagemaker": SageMakerService(config, db, registry, serving),
            "sagemaker_metrics": SageMakerMetrics(metrics.registry),
            "prompts": PromptService(config, db),  # outcrop/prompts (bedrock-agent Prompt management)
            "guardrails": guardrails,
            # outcrop/knowledge (bedrock-agent knowledge bases, Retrieve; the seam RetrieveAndGenerate uses)
            "knowledge": KnowledgeService(config, db, registry, serving, start_runner=start_workers),
        },
    )


def create_app(
    config: OutcropConfig, *, services: Services | None = None, start_workers: bool = True
) -> FastAPI:
    services = services or build_services(config, start_workers=start_workers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if services.import_worker is not None:
            services.import_worker.start()
        await services.serving.start()
        services.throttler.start()
        services.invocation_log.start()
        services.extra["guardrails"].start()
        await services.extra["batch"].start()
        await services.extra["sagemaker"].start()
        await services.extra["knowledge"].start()
        sampler = asyncio.create_task(  # gauges of GET /outcrop/stats (outcrop/serving/stats.py)
            services.metrics.recent.sample_loop(services.serving.stats), name="outcrop-stats-sampler"
        )
        log.info(
            "outcrop ready",
            extra={"version": __version__, "database": services.db.engine.url.get_backend_name()},
        )
        yield
        sampler.cancel()
        await services.extra["knowledge"].stop()
        await services.extra["sagemaker"].stop()
        await services.extra["batch"].stop()
        await services.serving.stop()
        services.throttler.stop()
        await asyncio.to_thread(services.invocation_log.stop)  # ships what is left to S3
        if services.import_worker is not None:
            services.import_worker.release_claims()
            services.import_worker.stop()
        services.db.dispose()

    app = FastAPI(
        title="Outcrop",
        version=__version__,
        description="Self-hosted Bedrock Custom Model Import: Bedrock control plane and runtime, OpenAI API, admin.",
        lifespan=lifespan,
        dependencies=[Depends(services.guard)],
    )
    app.state.services = services

    app.add_middleware(RequestContext, services=services)

    @app.exception_handler(OutcropError)
    async def _outcrop_error(request: Request, exc: OutcropError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        return error_response(
            request, InvalidRequestError(f"1 validation error detected: '{where}': {first['msg']}")
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(
                request,
                NotFoundError("Path", request.url.path, "See /docs for the operations this server offers."),
            )
        if exc.status_code == 405:
            return error_response(
                request,
                InvalidRequestError(f"{request.method} is not allowed on {request.url.path}; see /docs."),
            )
        return error_response(request, InvalidRequestError(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        request_id = getattr(request.state, "request_id", "")
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
        return error_response(
            request,
            InternalError(f"An internal error occurred (request id {request_id}); see the server log."),
        )

    app.include_router(control.router)
    app.include_router(batch_routes.router)
    app.include_router(logging_config.router)
    app.include_router(prompt_routes.router)
    app.include_router(knowledge_routes.router)
    app.include_router(guardrail_routes.router)
    app.include_router(runtime_routes.router)
    app.include_router(guardrail_runtime_routes.router)
    app.include_router(kb_runtime_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(openai_embeddings.router)
    app.include_router(sagemaker_control.router)
    app.include_router(sagemaker_runtime.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(stats.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    return app
