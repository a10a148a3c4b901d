"""GET /outcrop/stats through a real server: requests made with real clients show in the series."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServingServer, api

pytestmark = pytest.mark.e2e


def stats(url: str, **params: Any) -> dict[str, Any]:
    response = api.get(f"{url}/outcrop/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def total(body: dict[str, Any], series: str) -> float:
    return sum(v for v in body["series"][series] if v is not None)


def key(url: str, policy: str) -> str:
    response = api.post(
        f"{url}/outcrop/keys", json={"name": f"stats-{uuid.uuid4().hex[:8]}", "policy": policy}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["apiKey"])


def test_requests_tokens_latency_and_ttft_show_in_the_series(serving_server: ServingServer) -> None:
    url = serving_server.url
    before = stats(url)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="test-api-key-0001", max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    for _ in range(3):
        client.chat.completions.create(model=serving_server.chat, messages=messages, max_tokens=4)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model=serving_server.chat,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=4,
        stream=True,
    )
    assert list(stream)
    with pytest.raises(openai.BadRequestError):  # the copy refuses it: counted as an error
        client.completions.create(model=serving_server.plain, prompt="hi", max_tokens=4, logprobs=-3)

    after = stats(url, minutes=5)
    assert after["stepSeconds"] == 10 and len(after["timestamps"]) == 30
    for values in [*after["series"].values(), *after["copies"].values()]:
        assert len(values) == len(after["timestamps"])
    assert total(after, "requests") - total(before, "requests") == 5
    assert total(after, "errors") - total(before, "errors") == 1
    assert total(after, "tokensPerSecond") > total(before, "tokensPerSecond")
    assert any(v is not None and v > 0 for v in after["series"]["latencyP95Ms"])
    assert any(v is not None and v > 0 for v in after["series"]["ttftP50Ms"])
    # Both models have a copy running (the fixture warmed them), and nothing waits.
    assert after["copies"][serving_server.chat][-1] >= 1
    assert after["copies"][serving_server.plain][-1] >= 1
    assert after["series"]["queueDepth"][-1] == 0


def test_minutes_out_of_range_names_the_fix(serving_server: ServingServer) -> None:
    response = api.get(f"{serving_server.url}/outcrop/stats", params={"minutes": "600"})
    assert response.status_code == 400
    assert "'minutes' is '600'" in response.json()["message"] and "1 to 60" in response.json()["message"]


def test_read_only_keys_may_read_stats_and_invoke_only_keys_may_not(serving_server: ServingServer) -> None:
    url = serving_server.url
    read_only = httpx.get(
        f"{url}/outcrop/stats", headers={"Authorization": f"Bearer {key(url, 'read-only')}"}
    )
    assert read_only.status_code == 200, read_only.text
    invoke_only = httpx.get(
        f"{url}/outcrop/stats", headers={"Authorization": f"Bearer {key(url, 'invoke-only')}"}
    )
    assert invoke_only.status_code == 403
    assert "outcrop:GetStats" in invoke_only.json()["message"]
