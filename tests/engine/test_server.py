"""The HTTP contract in-process (TestClient): schemas, parameters and every 400 path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outcrop.engine.engine import EngineRequest
from outcrop.engine.runtime import WorkerOptions, WorkerRuntime, WorkerStatus
from outcrop.engine.sampling import SamplingParams
from outcrop.engine.server import create_app
from tests.engine.conftest import make_runtime


@pytest.fixture(scope="module")
def client(tiny_models: dict[str, Path]) -> Iterator[TestClient]:
    runtime = make_runtime(tiny_models["llama"], max_batch=8, served_name="tiny-llama")
    with TestClient(create_app(runtime)) as c:
        yield c


@pytest.fixture(scope="module")
def nochat_client(tiny_models: dict[str, Path]) -> Iterator[TestClient]:
    runtime = make_runtime(tiny_models["llama-nochat"], max_batch=2)
    with TestClient(create_app(runtime)) as c:
        yield c


def _complete(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/completions", json={"model": "tiny-llama", "prompt": "Hello", **body})


def _sse(text: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_completion_has_the_openai_shape_and_usage(client: TestClient) -> None:
    r = _complete(client, max_tokens=5, temperature=0, ignore_eos=True)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny-llama"
    assert body["choices"][0]["finish_reason"] == "length"
    prompt_tokens = client.post("/v1/tokenize", json={"prompt": "Hello"}).json()["count"]
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 5,
        "total_tokens": prompt_tokens + 5,
    }


def test_n_gives_distinct_indexed_choices_and_counts_the_prompt_once(client: TestClient) -> None:
    body = _complete(client, max_tokens=6, n=3, temperature=1.0, seed=1, ignore_eos=True).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in body["choices"]}) > 1
    assert body["usage"]["completion_tokens"] == 18
    assert (
        body["usage"]["prompt_tokens"]
        == client.post("/v1/tokenize", json={"prompt": "Hello"}).json()["count"]
    )


def test_same_seed_gives_the_same_completion(client: TestClient) -> None:
    a = _complete(client, max_tokens=12, temperature=1.0, top_p=0.95, top_k=50, seed=42).json()
    b = _complete(client, max_tokens=12, temperature=1.0, top_p=0.95, top_k=50, seed=42).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_list_prompts_and_token_prompts_are_accepted(client: TestClient) -> None:
    tokens = client.post("/v1/tokenize", json={"prompt": "Hello"}).json()["tokens"]
    by_tokens = _complete(client, prompt=tokens, max_tokens=4, temperature=0).json()
    by_text = _complete(client, max_tokens=4, temperature=0).json()
    assert by_tokens["choices"][0]["text"] == by_text["choices"][0]["text"]
    two = _complete(client, prompt=["Hello", "你好"], max_tokens=3, temperature=0).json()
    assert [c["index"] for c in two["choices"]] == [0, 1]


def test_logprobs_on_completions(client: TestClient) -> None:
    body = _complete(client, max_tokens=4, temperature=0, logprobs=2, ignore_eos=True).json()
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert all(len(t) <= 2 for t in lp["top_logprobs"])


def test_streamed_completion_equals_the_plain_one_and_ends_with_usage(client: TestClient) -> None:
    plain = _complete(client, max_tokens=20, temperature=0, ignore_eos=True).json()["choices"][0]["text"]
    r = _complete(
        client,
        max_tokens=20,
        temperature=0,
        ignore_eos=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == plain
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 20


def test_chat_completion_streams_role_then_content(client: TestClient) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "你好 😀"}]
    plain = client.post(
        "/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 8, "temperature": 0}
    ).json()
    assert plain["object"] == "chat.completion"
    assert plain["choices"][0]["message"]["role"] == "assistant"
    r = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True},
    )
    events = _sse(r.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert content == plain["choices"][0]["message"]["content"]
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(e["object"] == "chat.completion.chunk" for e in events)


def test_stop_strings_are_not_returned(client: TestClient) -> None:
    full = _complete(client, max_tokens=30, temperature=0, ignore_eos=True).json()["choices"][0]["text"]
    stop = full[8:11]
    body = _complete(client, max_tokens=30, temperature=0, ignore_eos=True, stop=stop).json()
    assert body["choices"][0]["text"] == full[: full.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"
    streamed = _complete(client, max_tokens=30, temperature=0, ignore_eos=True, stop=[stop], stream=True)
    assert "".join(e["choices"][0]["text"] for e in _sse(streamed.text)) == full[: full.index(stop)]


def test_tokenize_counts_prompts_and_chats(client: TestClient) -> None:
    r = client.post("/v1/tokenize", json={"prompt": "你好 😀"}).json()
    assert r["count"] == len(r["tokens"]) > 0
    chat = client.post("/v1/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["count"] > 1


def test_health_models_and_metrics(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-llama"
    assert health["device"] == "cpu" and health["dtype"] == "float32" and health["memory_bytes"] > 0
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-llama"
    _complete(client, max_tokens=2)
    text = client.get("/metrics").text
    for name in (
        "outcrop_engine_requests_running",
        "outcrop_engine_requests_waiting",
        "outcrop_engine_requests_paused",
        "outcrop_engine_generation_tokens_total",
        "outcrop_engine_time_to_first_token_seconds_bucket",
        "outcrop_engine_time_per_output_token_seconds_bucket",
        "outcrop_engine_kv_cache_usage_ratio",
    ):
        assert name in text


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"prompt": "Hello", "max_tokens": 100000}, "max_tokens", "100000 max_tokens"),
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": []}, "prompt", "empty"),
        ({"prompt": "Hello", "max_tokenz": 5}, "max_tokenz", "Unknown field"),
        ({"prompt": "Hello", "max_tokens": "5"}, "max_tokens", "valid integer"),
        ({"prompt": "Hello", "temperature": "hot"}, "temperature", "temperature"),
        ({"prompt": "Hello", "temperature": 5}, "temperature", "temperature"),
        ({"prompt": 42}, "prompt", "prompt"),
        ({"prompt": [10**9]}, "prompt", "vocabulary"),
        ({"prompt": "Hello", "n": 0}, "n", "n"),
        ({"prompt": "Hello", "echo": True}, "echo", "echo"),
        ({"max_tokens": 5}, "prompt", "required"),
        ({"prompt": "Hello", "priority": "high"}, "priority", "valid integer"),
        ({"prompt": "Hello", "priority": 1.5}, "priority", "valid integer"),
        ({"prompt": "Hello", "seed": 2**80}, "seed", "9223372036854775807"),
        ({"prompt": "Hello", "seed": -(2**64)}, "seed", "-9223372036854775808"),
        ({"prompt": "Hello", "top_k": 2**40}, "top_k", "2147483647"),
        ({"prompt": "Hello", "max_tokens": 2**70}, "max_tokens", "2147483647"),
        ({"prompt": "Hello", "logit_bias": {"5": 1e6}}, "logit_bias", "100"),
        ({"prompt": "Hello", "logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias", "at most 300"),
        ({"prompt": "Hello", "logprobs": 21}, "logprobs", "20"),
    ],
)
def test_bad_completion_requests_are_400_openai_errors(
    client: TestClient, body: dict[str, Any], param: str, fragment: str
) -> None:
    r = client.post("/v1/completions", json={"model": "m", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_priority_is_accepted_on_completions_chat_and_streams(client: TestClient) -> None:
    assert _complete(client, max_tokens=2, priority=10).status_code == 200
    assert _complete(client, max_tokens=2, priority=10, stream=True).status_code == 200
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "priority": -1}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200, r.text


def test_context_overflow_names_both_numbers_and_the_limit(client: TestClient) -> None:
    error = _complete(client, max_tokens=300).json()["error"]
    count = client.post("/v1/tokenize", json={"prompt": "Hello"}).json()["count"]
    assert f"{count} prompt tokens + 300 max_tokens" in error["message"] and "256" in error["message"]
    assert error["code"] == "context_length_exceeded"


def test_chat_seed_beyond_64_bits_is_400_naming_the_bound(client: TestClient) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "seed": 2**80}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "seed" and "9223372036854775807" in r.json()["error"]["message"]


def test_edge_seeds_of_the_64_bit_range_generate(client: TestClient) -> None:
    for seed in (2**63 - 1, -(2**63)):
        r = _complete(client, max_tokens=2, temperature=1.0, n=2, seed=seed)
        assert r.status_code == 200, r.text


def test_prompt_far_over_the_context_is_refused_by_its_length(client: TestClient) -> None:
    r = _complete(client, prompt="word " * 1_000_000)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "at least" in error["message"] and "context length is 256" in error["message"]
    chat = {"model": "m", "messages": [{"role": "user", "content": "word " * 1_000_000}]}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_prompt_under_the_length_bound_but_over_the_context_gets_the_exact_count(client: TestClient) -> None:
    prompt = "word " * 1000  # tokenized (the cheap bound cannot refuse it), then over 256 tokens
    count = client.post("/v1/tokenize", json={"prompt": prompt}).json()["count"]
    assert count > 256
    error = _complete(client, prompt=prompt).json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"needs {count} prompt tokens" in error["message"]


def test_not_json_and_wrong_shapes_are_400(client: TestClient) -> None:
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 400
    r = client.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "wizard", "content": "x"}]}
    )
    assert r.status_code == 400
    r = client.post("/v1/tokenize", json={})
    assert r.status_code == 400


def test_chat_on_a_model_without_template_is_a_clear_400(nochat_client: TestClient) -> None:
    r = nochat_client.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 400
    assert "chat template" in r.json()["error"]["message"]
    ok = nochat_client.post("/v1/completions", json={"model": "m", "prompt": "Hello", "max_tokens": 2})
    assert ok.status_code == 200


def test_health_is_503_until_loaded(tiny_models: dict[str, Path]) -> None:
    runtime = WorkerRuntime(WorkerOptions(model_dir=tiny_models["llama"]))
    with TestClient(create_app(runtime)) as c:
        assert runtime.status is WorkerStatus.LOADING
        assert c.get("/health").status_code == 503
        r = c.post("/v1/completions", json={"model": "m", "prompt": "x"})
        assert r.status_code == 503 and "Retry-After" in r.headers


def test_requests_beyond_the_kv_budget_wait_and_all_complete(tiny_models: dict[str, Path]) -> None:
    # A pool of 4 blocks (16 tokens of 512 bytes each, + the scratch block) for 6 requests of 2
    # blocks each: the others queue (or are preempted and recomputed) instead of failing.
    runtime = make_runtime(tiny_models["llama"], max_batch=8, kv_cache_bytes=5 * 16 * 512)
    assert runtime.engine is not None and runtime.engine.blocks.num_blocks == 4
    with TestClient(create_app(runtime)) as c:
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> int:
            body = {"model": "m", "prompt": f"Hello {i}", "max_tokens": 20, "ignore_eos": True}
            return c.post("/v1/completions", json=body).json()["usage"]["completion_tokens"]

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(one, range(6))) == [20] * 6


def test_more_choices_than_a_copy_can_ever_hold_is_400_naming_the_limit(tiny_models: dict[str, Path]) -> None:
    runtime = make_runtime(tiny_models["llama"], max_batch=2, max_queued=1)
    with TestClient(create_app(runtime)) as c:
        r = c.post("/v1/completions", json={"model": "m", "prompt": "Hello", "n": 4, "max_tokens": 2})
        assert r.status_code == 400 and "Retry-After" not in r.headers
        error = r.json()["error"]
        assert error["code"] == "too_many_choices" and error["param"] == "n"
        assert "at most 3 sequences" in error["message"] and "smaller n" in error["message"]
        r = c.post("/v1/completions", json={"model": "m", "prompt": ["a", "b"], "n": 2, "max_tokens": 2})
        assert r.status_code == 400 and "2 prompt(s) x n=2" in r.json()["error"]["message"]
        chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "n": 4, "max_tokens": 2}
        assert c.post("/v1/chat/completions", json=chat).json()["error"]["code"] == "too_many_choices"
        ok = c.post("/v1/completions", json={"model": "m", "prompt": "Hello", "n": 3, "max_tokens": 2})
        assert ok.status_code == 200


@asynccontextmanager
async def _ready_but_not_stepping(app: Any) -> AsyncIterator[None]:
    """A copy whose engine thread never runs: what is queued stays queued."""
    app.state.runtime.status = WorkerStatus.READY
    yield


def test_a_full_queue_sheds_load_with_503(tiny_models: dict[str, Path]) -> None:
    runtime = make_runtime(tiny_models["llama"], max_batch=2, max_queued=1)
    assert runtime.engine is not None
    with TestClient(create_app(runtime, lifespan=_ready_but_not_stepping)) as c:
        for i in range(3):  # two slots' worth and the one queue place
            runtime.engine.add_request(EngineRequest(f"busy-{i}", [1, 2, 3], SamplingParams()))
        r = c.post("/v1/completions", json={"model": "m", "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert "--max-queued" in r.json()["error"]["message"]
