"""Job state changes are published: a structured log line and, when configured, a webhook POST
with the fields of Bedrock's EventBridge "Batch Inference Job State Change" detail."""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from typing import Any

import httpx

from outcrop.batch.store import BatchJob
from outcrop.config import OutcropConfig

log = logging.getLogger("outcrop.batch")

# Why 5 s: a webhook is a notification, never allowed to slow the runner; it is sent from a
# short-lived thread and a slow receiver only loses its own notification.
WEBHOOK_TIMEOUT_SECONDS = 5.0


def job_arn(config: OutcropConfig, job_id: str) -> str:
    return f"arn:aws:bedrock:{config.aws.region}:{config.aws.account_id}:model-invocation-job/{job_id}"


def state_change_detail(config: OutcropConfig, job: BatchJob, status: str | None = None) -> dict[str, Any]:
    """Bedrock's event detail: version, accountId, batchJobName, batchJobArn, batchModelId, status, ..."""
    created = dt.datetime.fromtimestamp(job.created_at, tz=dt.UTC)
    return {
        "version": "0.0",
        "accountId": config.aws.account_id,
        "batchJobName": job.name,
        "batchJobArn": job_arn(config, job.id),
        "batchModelId": job.model_id,
        "status": status or job.status.value,
        "failureMessage": job.message or "",
        "creationTime": created.strftime("%b %d, %Y, %I:%M:%S %p").replace(" 0", " "),
    }


def publish(config: OutcropConfig, job: BatchJob, status: str | None = None) -> None:
    """Announce that ``job`` entered ``status`` (default: the status it has now)."""
    detail = state_change_detail(config, job, status)
    log.info(
        "batch job state change",
        extra={"job": job.name, "job_id": job.id, "status": detail["status"], "model": job.model_id},
    )
    url = config.batch.webhook_url
    if not url:
        return
    event = {
        "version": "0",
        "source": "aws.bedrock",
        "detail-type": "Batch Inference Job State Change",
        "account": config.aws.account_id,
        "region": config.aws.region,
        "time": dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "resources": [detail["batchJobArn"]],
        "detail": detail,
    }

    _sender().put((url, event))


_queue: queue.Queue[tuple[str, dict[str, Any]]] | None = None
_lock = threading.Lock()


def _sender() -> queue.Queue[tuple[str, dict[str, Any]]]:
    """One background thread posts the events in the order they happened."""
    global _queue
    with _lock:
        if _queue is None:
            _queue = queue.Queue()
            threading.Thread(target=_send_loop, args=(_queue,), name="batch-webhook", daemon=True).start()
        return _queue


def _send_loop(events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
    with httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS) as http:
        while True:
            url, event = events.get()
            try:
                http.post(url, json=event)
            except httpx.HTTPError as exc:
                log.warning(
                    "batch webhook failed",
                    extra={"url": url, "error": str(exc), "job": event["detail"]["batchJobName"]},
                )
