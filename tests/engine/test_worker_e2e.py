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


def _concurrently(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    results: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _post(worker: WorkerProcess, path: str, body: dict[str, object]) -> Callable[[], httpx.Response]:
    return lambda: httpx.post(f"{worker.base_url}{path}", json=body, timeout=60)


def test_a_seed_beyond_64_bits_fails_alone_while_other_requests_complete(llama_worker: WorkerProcess) -> None:
    good = {
        "model": "tiny-llama",
        "prompt": "Hello",
        "max_tokens": 20,
        "temperature": 1.0,
        "ignore_eos": True,
    }
    chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "seed": 2**80}
    *goods, bad, bad_chat = _concurrently(
        *[_post(llama_worker, "/v1/completions", {**good, "seed": i}) for i in range(3)],
        _post(llama_worker, "/v1/completions", {**good, "seed": 2**80}),
        _post(llama_worker, "/v1/chat/completions", chat),
    )
    for r in (bad, bad_chat):
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "seed" and "9223372036854775807" in r.json()["error"]["message"]
    for r in goods:
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 20


def test_big_prompts_get_400_while_health_and_small_requests_answer(llama_worker: WorkerProcess) -> None:
    huge = "word " * 1_200_000  # 6 MB: refused by its length, never tokenized
    over_context = "word " * 2000  # under the length bound, so tokenized (off the event loop)
    small = {"model": "tiny-llama", "prompt": "Hello", "max_tokens": 4}
    big_huge, big_chat, big_over, health, ok = _concurrently(
        _post(llama_worker, "/v1/completions", {"model": "tiny-llama", "prompt": huge}),
        _post(
            llama_worker,
            "/v1/chat/completions",
            {"model": "tiny-llama", "messages": [{"role": "user", "content": huge}]},
        ),
        _post(llama_worker, "/v1/completions", {"model": "tiny-llama", "prompt": over_context}),
        lambda: httpx.get(f"{llama_worker.base_url}/health", timeout=60),
        _post(llama_worker, "/v1/completions", small),
    )
    for r in (big_huge, big_chat, big_over):
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "at least" in big_huge.json()["error"]["message"]
    assert "at least" not in big_over.json()["error"]["message"]
    assert health.status_code == 200 and ok.status_code == 200


# ---------------------------------------------------------------- the engine-core process


def _core_pid(worker: WorkerProcess) -> int:
    """The worker's engine-core child (a multiprocessing spawn child, not its resource tracker)."""
    children: set[int] = set()
    for task in Path(f"/proc/{worker.proc.pid}/task").iterdir():
        children |= {int(pid) for pid in (task / "children").read_text().split()}
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return pid
    raise AssertionError(f"no engine-core child among {children}")


def test_health_reports_the_core_process_and_the_block_pool(llama_worker: WorkerProcess) -> None:
    health = httpx.get(f"{llama_worker.base_url}/health").json()
    assert health["engine"] == "core process" and health["prefix_caching"] is True
    assert health["kv_cache_blocks"] > 0 and health["block_size"] == 16
    assert health["kv_cache_free_blocks"] <= health["kv_cache_blocks"]
    assert health["max_batch"] == 32  # the CPU default


def test_a_repeated_prefix_is_served_from_the_prefix_cache_with_the_same_output(
    llama_worker: WorkerProcess,
) -> None:
    client = _client(llama_worker)
    prompt = "You are a careful assistant. Answer in one short sentence. " * 4 + "Question: why?"
    hits = "outcrop_engine_prefix_cache_hits_total"
    first = client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0)
    before = _metric(llama_worker, hits)
    again = client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0)
    assert again.choices[0].text == first.choices[0].text
    assert _metric(llama_worker, hits) - before >= 16 * ((first.usage.prompt_tokens - 1) // 16)


def test_a_stop_string_ends_the_request_and_the_core_frees_its_blocks(llama_worker: WorkerProcess) -> None:
    client = _client(llama_worker)
    full = (
        client.completions.create(
            model="tiny-llama",
            prompt="Once upon",
            max_tokens=40,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        .choices[0]
        .text
    )
    stop = full[12:15]
    cut = client.completions.create(
        model="tiny-llama",
        prompt="Once upon",
        max_tokens=40,
        temperature=0,
        stop=[stop],
        extra_body={"ignore_eos": True},
    )
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == full[: full.index(stop)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        health = httpx.get(f"{llama_worker.base_url}/health").json()
        if health["running"] == 0 and health["kv_cache_free_blocks"] == health["kv_cache_blocks"]:
            break
        time.sleep(0.05)
    assert health["running"] == 0 and health["kv_cache_free_blocks"] == health["kv_cache_blocks"]


def test_a_dying_core_takes_health_down_and_fails_requests_in_flight(
    tiny_models: dict[str, Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    import os

    worker = start_worker(tiny_models["llama"])
    body = {"model": "m", "prompt": "Hello", "max_tokens": 240, "ignore_eos": True, "stream": True}
    events: list[str] = []
    with httpx.stream("POST", f"{worker.base_url}/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        events.append(next(lines))
        os.kill(_core_pid(worker), signal.SIGKILL)
        events += list(lines)  # the stream ends (with an error event) instead of hanging
    assert any("error" in e for e in events), events[-3:]
    health = httpx.get(f"{worker.base_url}/health")
    assert health.status_code == 503 and health.json()["status"] == "failed"
    assert "engine core" in health.json()["detail"]
    again = httpx.post(f"{worker.base_url}/v1/completions", json={**body, "stream": False}, timeout=30)
    assert again.status_code == 503 and "error" in again.json()


def test_a_killed_worker_takes_its_core_with_it(
    tiny_models: dict[str, Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    """kill -9 of the API process mid-stream: the core notices within a second and exits at once
    (no socket linger, no step loop left running on a GPU nobody reads)."""
    worker = start_worker(tiny_models["llama"])
    core = _core_pid(worker)
    body = {"model": "m", "prompt": "Hello", "max_tokens": 240, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{worker.base_url}/v1/completions", json=body, timeout=30) as r:
        next(r.iter_lines())
        worker.proc.kill()
        worker.proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(core):
        time.sleep(0.05)
    assert not _running(core), "the engine core outlived its worker by more than 5 s"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child of a killed parent waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
