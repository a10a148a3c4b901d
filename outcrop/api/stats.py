"""``GET /outcrop/stats``: the last hour of this gateway's traffic in 10 s steps, for the console's charts.

The numbers come from the gateway's own counters (:mod:`outcrop.serving.stats`); no Prometheus
server is needed. Action ``outcrop:GetStats`` (the admin and read-only policies allow it).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from outcrop.api.deps import Services, get_services
from outcrop.errors import InvalidRequestError

router = APIRouter(prefix="/outcrop", tags=["outcrop admin"])

# Why 60: the ring buffer holds one hour (360 steps of 10 s).
MAX_MINUTES = 60


def _minutes(request: Request) -> int:
    raw = request.query_params.get("minutes")
    if raw is None or raw == "":
        return MAX_MINUTES
    try:
        minutes = int(raw)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= MAX_MINUTES:
        raise InvalidRequestError(
            f"'minutes' is {raw!r}; it must be a whole number from 1 to {MAX_MINUTES} "
            f"(the gateway keeps the last hour), e.g. ?minutes=15.",
            param="minutes",
        )
    return minutes


@router.get("/stats", summary="Requests, errors, latency, tokens/s, copies and queue depth of the last hour")
async def get_stats(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    # On the event loop: the serving layer's state is the loop's (a worker thread could see it mid-change).
    minutes = _minutes(request)
    recent = services.metrics.recent
    if services.metrics.serving_reader is not None:
        recent.sample_serving(services.metrics.serving_reader)  # the current step shows the gauges now
    return recent.series(minutes)
