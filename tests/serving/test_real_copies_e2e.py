"""Real copies: Outcrop's own worker started by the ``local`` launcher and through a ``command``
template, and another OpenAI-compatible server (``transformers serve``) through a template."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from outcrop.cluster.pidfiles import start_ticks
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.registry.service import Registry
from outcrop.serving.service import ColdStartPolicy
from tests.conftest import TEST_API_KEY, ServerProcess, api, boto3_client, import_and_wait
from tests.serving.conftest import running

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HOLD = ColdStartPolicy(wait=True, max_wait_seconds=120)
WORKER_LIMITS = ["--max-model-len", "256", "--kv-cache-bytes", str(64 * 2**20)]


async def _exercise(config: OutcropConfig, registry: Registry) -> None:
    async with running(config, registry) as serving:
        done = await serving.post(
            "alpha",
            "/v1/completions",
            {"prompt": "Hello", "max_tokens": 5, "temperature": 0},
            cold_start=HOLD,
        )
        assert done["model"] == "alpha" and done["usage"]["completion_tokens"] >= 1
        chunks = [
            c
            async for c in serving.stream(
                "alpha",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0},
                cold_start=HOLD,
            )
        ]
        assert chunks and chunks[0]["object"] == "chat.completion.chunk"
        with pytest.raises(InvalidRequestError, match="max_tokens"):
            await serving.post(
                "alpha", "/v1/completions", {"prompt": "Hello", "max_tokens": 10_000}, cold_start=HOLD
            )
        tokens = await serving.post("alpha", "/v1/tokenize", {"prompt": "Hello"}, cold_start=HOLD)
        assert tokens["count"] >= 1
        (copy,) = serving.copies()
        assert copy.state.value == "Ready" and serving.stats()["models"]["alpha"]["cold_starts"] == 1


async def test_local_launcher_serves_the_imported_model_with_outcrops_worker(
    serving_config: Callable[..., OutcropConfig], serving_registry: Registry
) -> None:
    config = serving_config(**{"serving.launcher": "local", "serving.worker_extra_args": WORKER_LIMITS})
    await _exercise(config, serving_registry)


async def test_command_launcher_serves_through_a_template_of_outcrops_worker(
    serving_config: Callable[..., OutcropConfig], serving_registry: Registry
) -> None:
    template = (
        f"{sys.executable} -m outcrop.engine.worker --model-dir {{model_dir}} --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} {' '.join(WORKER_LIMITS)}"
    )
    config = serving_config(
        **{"serving.command_template": template, "serving.command_health_path": "/health"}
    )
    await _exercise(config, serving_registry)


def test_command_launcher_serves_through_another_openai_server(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    """The copy is ``transformers serve`` (an OpenAI-compatible server that installs here), which
    answers only to the folder it loaded: requests name it by ``{model_dir}``, callers never see it."""
    from openai import OpenAI

    transformers_cli = Path(sys.executable).parent / "transformers"
    template = f"{transformers_cli} serve {{model_dir}} --host {{host}} --port {{port}} --device cpu"
    server = start_server(
        OUTCROP_SERVING__LAUNCHER="command",
        OUTCROP_SERVING__COMMAND_TEMPLATE=template,
        OUTCROP_SERVING__COMMAND_REQUEST_MODEL="{model_dir}",
    )
    import_and_wait(boto3_client("bedrock", server.url), tiny_model("llama"), "peer")
    client = OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, timeout=180)
    chat = client.chat.completions.create(  # held through the cold start
        model="peer", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert chat.model == "peer" and chat.choices[0].message.content is not None
    chunks = list(
        client.chat.completions.create(
            model="peer", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
        )
    )
    assert chunks and all(c.model == "peer" for c in chunks)
    runtime = boto3_client("bedrock-runtime", server.url)
    out = runtime.invoke_model(modelId="peer", body=json.dumps({"prompt": "Hello", "max_gen_len": 4}))
    body = json.loads(out["body"].read())
    assert body["generation"] == body["outputs"][0]["text"] == body["choices"][0]["text"]
    (copy,) = api.get(f"{server.url}/outcrop/copies").json()["copies"]
    assert copy["state"] == "Ready"


def _copy_token(pid: int) -> str:
    """The copy's token, from its environment (where the launcher put it; same user, so readable)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (token,) = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"OUTCROP_COPY_TOKEN=")]
    return token.decode()


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if start_ticks(pid) is None:  # exited (a zombie counts as gone)
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the copy's /proc entry (Linux)")
def test_a_local_copy_answers_only_its_gateway_and_dies_with_it_when_it_is_killed(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    from openai import OpenAI

    server = start_server(
        OUTCROP_SERVING__LAUNCHER="local",
        OUTCROP_SERVING__WORKER_THREADS="1",
        OUTCROP_SERVING__WORKER_EXTRA_ARGS=json.dumps(WORKER_LIMITS),
    )
    import_and_wait(boto3_client("bedrock", server.url), tiny_model("llama"), "guarded")
    warm = api.post(f"{server.url}/outcrop/models/guarded/warm", json={"copies": 1}, timeout=180)
    assert warm.status_code == 200, warm.text
    (copy,) = api.get(f"{server.url}/outcrop/copies").json()["copies"]
    url, pid = copy["url"], copy["pid"]
    body = {"model": "guarded", "prompt": "Hello", "max_tokens": 2}

    # The copy's port is no side door: without its token (or with the gateway's own API key) it refuses.
    for headers in ({}, {"Authorization": f"Bearer {TEST_API_KEY}"}):
        refused = httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=30)
        assert refused.status_code == 401, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_api_key" and "through the Outcrop gateway" in error["message"]
    assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # the probe needs no secret
    token = _copy_token(pid)
    assert token not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    direct = httpx.post(
        f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert direct.status_code == 200, direct.text

    # Through the gateway, callers never see the token.
    client = OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, timeout=120, max_retries=0)
    done = client.completions.create(model="guarded", prompt="Hello", max_tokens=2)
    assert done.usage is not None and done.usage.completion_tokens >= 1

    server.kill()  # kill -9: no shutdown code runs in the gateway
    assert _gone_within(pid, 30.0), f"copy {pid} outlived its gateway"
