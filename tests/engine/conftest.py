"""Fixtures for the engine tests: tiny models of each family (built once per session),
in-process engines and apps, and real worker subprocesses for the e2e layer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outcrop.engine.engine import Engine, EngineRequest, RequestOutput
from outcrop.engine.runtime import WorkerOptions, WorkerRuntime
from outcrop.engine.sampling import SamplingParams
from outcrop.testing.tiny_models import build_tiny_model

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "mixtral")
REPO_ROOT = Path(__file__).resolve().parents[2]


# A Qwen2.5-style chat template that renders ``tools`` and tool turns (the tiny models' own
# ChatML template has no tool support, which is what the "doesn't support tool use" test needs).
QWEN_TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% else %}You are a helpful assistant.{% endif %}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0]['role'] == 'system' %}<|im_start|>system
{{ messages[0]['content'] }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "user" or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == "assistant" %}<|im_start|>assistant{% if message.content %}
{{ message.content }}{% endif %}{% for tool_call in message.tool_calls %}{% set call = tool_call.function %}
<tool_call>
{"name": "{{ call.name }}", "arguments": {{ call.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def build_tools_model(path: Path) -> Path:
    """A tiny Qwen2 model whose chat template supports tools (Qwen2.5's format)."""
    out = build_tiny_model(path, family="qwen2")
    (out / "chat_template.jinja").write_text(QWEN_TOOLS_TEMPLATE)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model folder per family, plus ``llama-nochat`` (no chat template) and
    ``qwen2-tools`` (a chat template with tool support)."""
    root = tmp_path_factory.mktemp("engine-models")
    models = {family: build_tiny_model(root / family, family=family) for family in FAMILIES}
    models["llama-nochat"] = build_tiny_model(root / "llama-nochat", family="llama", chat_template=False)
    models["qwen2-tools"] = build_tools_model(root / "qwen2-tools")
    return models


def make_runtime(model_dir: Path, **overrides: Any) -> WorkerRuntime:
    """A loaded runtime (no HTTP); ``overrides`` are ``WorkerOptions`` fields."""
    options = WorkerOptions(
        model_dir=model_dir, **{"max_model_len": 256, "kv_cache_bytes": 64 * 2**20, **overrides}
    )
    runtime = WorkerRuntime(options)
    runtime.load()
    return runtime


@pytest.fixture(scope="session")
def llama_runtime(tiny_models: dict[str, Path]) -> WorkerRuntime:
    return make_runtime(tiny_models["llama"], max_batch=8)


def greedy(max_tokens: int = 12, **overrides: Any) -> SamplingParams:
    return SamplingParams(**{"max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, **overrides})


def run_engine(
    engine: Engine, requests: list[EngineRequest], max_steps: int = 10_000
) -> dict[str, list[RequestOutput]]:
    """Submit ``requests`` and step until all finish; outputs per request id."""
    for r in requests:
        engine.add_request(r)
    outputs: dict[str, list[RequestOutput]] = {r.request_id: [] for r in requests}
    done: set[str] = set()
    for _ in range(max_steps):
        for request, out in engine.step():
            outputs[request.request_id].append(out)
            if out.finished:
                done.add(request.request_id)
        if len(done) == len(requests):
            return outputs
    raise AssertionError("engine did not finish in time")


def tokens_of(outs: list[RequestOutput]) -> list[int]:
    return [t for o in outs for t in o.token_ids]


# ---------------------------------------------------------------- worker subprocesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    def __init__(self, model_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "outcrop.engine.worker",
            "--model-dir",
            str(model_dir),
            "--port",
            str(self.port),
        ]
        cmd += ["--max-model-len", "256", "--kv-cache-bytes", str(64 * 2**20), *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait_ready(self, timeout_seconds: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("worker did not become ready")

    def output(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.read() if self.proc.poll() is not None else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(model_dir: Path, *extra: str, wait: bool = True) -> WorkerProcess:
        worker = WorkerProcess(model_dir, *extra)
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for w in started:
        w.stop()


@pytest.fixture(scope="module")
def llama_worker(tiny_models: dict[str, Path]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tiny_models["llama"], "--served-name", "tiny-llama")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
