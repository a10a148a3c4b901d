"""The watched folder submits each dropped file once (even across restarts); state changes reach a webhook."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.store.imports import ListFilter
from tests.batch.conftest import prompt_record, read_jsonl, running, wait_until, write_jsonl
from tests.batch.test_runner import _request

pytestmark = pytest.mark.anyio


async def _jobs_when(service: Any, count: int, timeout: float = 20) -> list[Any]:
    for _ in range(int(timeout / 0.05)):
        jobs = service.store.list_jobs(ListFilter(ascending=True)).items
        if len(jobs) >= count:
            return list(jobs)
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} jobs")


async def test_dropped_files_become_jobs_once_even_across_restarts(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    watch = tmp_path / "watch"
    config = batch_config(
        **{"batch.watch_uri": str(watch), "batch.watch_model": "alpha", "batch.poll_seconds": 0.1}
    )
    write_jsonl(watch / "toprocess" / "monday.jsonl", [prompt_record(i) for i in range(5)])
    async with running(config) as service:
        (job,) = await _jobs_when(service, 1)
        assert (await wait_until(service, job.id)).status.value == "Completed"
        assert len(read_jsonl(watch / "processed" / job.id / "monday.jsonl.out")) == 5
    async with running(config) as service:  # a restart: the same file is not submitted again
        await asyncio.sleep(0.5)
        assert len(service.store.list_jobs(ListFilter()).items) == 1
        write_jsonl(watch / "toprocess" / "tuesday.jsonl", [prompt_record(i) for i in range(3)])
        jobs = await _jobs_when(service, 2)
        second = await wait_until(service, jobs[1].id)
        assert second.status.value == "Completed" and second.name.startswith("watch-tuesday-")
        await asyncio.sleep(0.3)
        assert len(service.store.list_jobs(ListFilter()).items) == 2


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


async def test_every_state_change_is_posted_to_the_webhook(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(i) for i in range(3)])
    async with running(batch_config(**{"batch.webhook_url": url})) as service:
        job = service.create_job(_request("hooked", tmp_path / "in.jsonl", tmp_path / "out"))
        await wait_until(service, job.id)
        for _ in range(100):
            if any(e["detail"]["status"] == "Completed" for e in received):
                break
            await asyncio.sleep(0.05)
    statuses = [e["detail"]["status"] for e in received]
    assert statuses == ["Submitted", "Validating", "Scheduled", "InProgress", "Completed"]
    event = received[-1]
    assert event["source"] == "aws.bedrock" and event["detail-type"] == "Batch Inference Job State Change"
    assert event["detail"]["batchJobName"] == "hooked" and event["detail"]["batchModelId"] == "alpha"
    assert event["detail"]["batchJobArn"].endswith(f"model-invocation-job/{job.id}")
