"""The worker as a real process on loopback, driven by real clients."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from outcrop.engine.loader import MANIFEST_NAME
from tests.engine.conftest import WorkerProcess

pytestmark = pytest.mark.e2e


def _client(worker: WorkerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.base_url}/v1", api_key="unused", max_retries=0)


def _metric(worker: WorkerProcess, name: str) -> float:
    for line in httpx.get(f"{worker.base_url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_openai_client_completes_and_streams_chat(llama_worker: WorkerProcess) -> None:
    client = _client(llama_worker)
    assert [m.id for m in client.models.list()] == ["tiny-llama"]
    done = client.completions.create(model="tiny-llama", prompt="Hello", max_tokens=5, temperature=0)
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage is not None
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "你好，世界！😀 🚀"}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "你好，世界！😀 🚀"}],
        max_tokens=24,
        temperature=0,
    )
    assert text == plain.choices[0].message.content
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )


def test_openai_client_sees_bad_requests_as_bad_request_errors(llama_worker: WorkerProcess) -> None:
    client = _client(llama_worker)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-llama", prompt="Hello", max_tokens=10_000)
    assert "10000 max_tokens" in str(info.value)


def test_client_disconnect_cancels_generation(llama_worker: WorkerProcess) -> None:
    before = _metric(llama_worker, 'outcrop_engine_requests_finished_total{finish_reason="abort"}')
    body = {"model": "m", "prompt": "Hello", "max_tokens": 240, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{llama_worker.base_url}/v1/completions", json=body, timeout=30) as r:
        for _ in r.iter_lines():
            break  # read one event, then hang up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _metric(llama_worker, 'outcrop_engine_requests_finished_total{finish_reason="abort"}') > before:
            break
        time.sleep(0.05)
    assert (
        _metric(llama_worker, 'outcrop_engine_requests_finished_total{finish_reason="abort"}') == before + 1
    )
    assert _metric(llama_worker, "outcrop_engine_requests_running") == 0


def test_non_streaming_disconnect_cancels_generation(llama_worker: WorkerProcess) -> None:
    before = _metric(llama_worker, 'outcrop_engine_requests_finished_total{finish_reason="abort"}')
    body = {"model": "m", "prompt": "Hello", "max_tokens": 250, "ignore_eos": True, "n": 4}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{llama_worker.base_url}/v1/completions", json=body, timeout=0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            _metric(llama_worker, 'outcrop_engine_requests_finished_total{finish_reason="abort"}')
            >= before + 4
        ):
            break
        time.sleep(0.05)
    assert (
        _metric(llama_worker, 'outcrop_engine_requests_finished_total{finish_reason="abort"}') == before + 4
    )


def test_sigterm_drains_in_flight_requests_then_exits_zero(
    tiny_models: dict[str, Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(tiny_models["llama"])
    body = {"model": "m", "prompt": "Hello", "max_tokens": 120, "ignore_eos": True, "stream": True}
    events: list[str] = []
    started = threading.Event()

    def consume() -> None:
        with httpx.stream("POST", f"{worker.base_url}/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                    started.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert started.wait(20)
    worker.proc.send_signal(signal.SIGTERM)
    reader.join(60)
    assert worker.proc.wait(30) == 0
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{worker.base_url}/health", timeout=2)


def test_worker_refuses_a_model_whose_files_do_not_match_the_manifest(
    tiny_models: dict[str, Path], tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["llama"], folder)
    size = (folder / "model.safetensors").stat().st_size
    manifest = {"files": {"model.safetensors": {"sha256": "0" * 64, "size": size}}}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    worker = start_worker(folder, wait=False)
    assert worker.proc.wait(60) == 1
    assert "model.safetensors has sha256" in worker.output()
