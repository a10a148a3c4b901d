"""Ops endpoints: ``/health`` for load balancers and ``/metrics`` for Prometheus."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from outcrop import __version__
from outcrop.api.deps import Services, get_services

router = APIRouter(tags=["ops"])


@router.get("/health", summary="Liveness and readiness of the gateway")
def health(services: Services = Depends(get_services)) -> JSONResponse:
    checks: dict[str, Any] = {}
    ok = True
    try:
        with services.db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        ok = False
        checks["database"] = f"unreachable: {type(exc).__name__}"
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "uptime_seconds": round(time.time() - services.started_at, 3),
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics")
def metrics(services: Services = Depends(get_services)) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
