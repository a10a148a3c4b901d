"""The boto3 ``bedrock-runtime`` client, unchanged, against imported models served by real copies."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, ServingServer, api, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runtime(serving_server: ServingServer) -> Any:
    return boto3_client("bedrock-runtime", serving_server.url)


def invoke(runtime: Any, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    response = runtime.invoke_model(modelId=model, body=json.dumps(body))
    return json.loads(response["body"].read()), response["ResponseMetadata"]["HTTPHeaders"]


def test_prompt_body_gets_the_superset_answer_and_usage_headers(
    runtime: Any, serving_server: ServingServer
) -> None:
    body, headers = invoke(
        runtime, serving_server.chat, {"prompt": "Hello", "max_gen_len": 12, "temperature": 0}
    )
    assert body["generation"] == body["outputs"][0]["text"] == body["choices"][0]["text"]
    assert body["generation_token_count"] == body["usage"]["completion_tokens"] <= 12
    assert body["stop_reason"] in ("stop", "length")
    assert headers["x-amzn-bedrock-output-token-count"] == str(body["generation_token_count"])
    assert headers["x-amzn-bedrock-input-token-count"] == str(body["prompt_token_count"])
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0


def test_greedy_invoke_is_deterministic_and_arn_addressing_works(
    runtime: Any, serving_server: ServingServer
) -> None:
    request = {"prompt": "The quick brown", "max_tokens": 10, "temperature": 0}
    by_name, _ = invoke(runtime, serving_server.chat, request)
    by_arn, _ = invoke(runtime, serving_server.chat_arn, request)
    assert by_name["choices"][0]["text"] == by_arn["choices"][0]["text"]


def test_messages_body_gets_a_chat_completion(runtime: Any, serving_server: ServingServer) -> None:
    body, _ = invoke(
        runtime, serving_server.chat, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    )
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_stream_chunks_add_up_to_the_whole_answer_with_metrics_last(
    runtime: Any, serving_server: ServingServer
) -> None:
    request = {"prompt": "你好 world", "max_gen_len": 16, "temperature": 0}
    whole, _ = invoke(runtime, serving_server.chat, request)
    response = runtime.invoke_model_with_response_stream(
        modelId=serving_server.chat, body=json.dumps(request)
    )
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    assert "".join(c["generation"] for c in chunks) == whole["generation"]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == whole["generation_token_count"]
    assert metrics["inputTokenCount"] == whole["prompt_token_count"]
    assert all("amazon-bedrock-invocationMetrics" not in c for c in chunks[:-1])


def test_converse_and_converse_stream_agree(runtime: Any, serving_server: ServingServer) -> None:
    request = {
        "modelId": serving_server.chat,
        "system": [{"text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"text": "Tell me a story"}]}],
        "inferenceConfig": {"maxTokens": 10, "temperature": 0},
    }
    answer = runtime.converse(**request)
    text = answer["output"]["message"]["content"][0]["text"]
    assert answer["stopReason"] in ("end_turn", "max_tokens")
    assert answer["usage"]["totalTokens"] == answer["usage"]["inputTokens"] + answer["usage"]["outputTokens"]
    events = list(runtime.converse_stream(**request)["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    streamed = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert streamed == text
    assert events[-1]["metadata"]["usage"] == answer["usage"]


def test_count_tokens_matches_what_an_invocation_uses(runtime: Any, serving_server: ServingServer) -> None:
    messages = [{"role": "user", "content": [{"text": "How many tokens is this?"}]}]
    counted = runtime.count_tokens(modelId=serving_server.chat, input={"converse": {"messages": messages}})
    answer = runtime.converse(
        modelId=serving_server.chat, messages=messages, inferenceConfig={"maxTokens": 2}
    )
    assert counted["inputTokens"] == answer["usage"]["inputTokens"]
    prompt = {"prompt": "count me", "max_gen_len": 2}
    counted = runtime.count_tokens(
        modelId=serving_server.chat, input={"invokeModel": {"body": json.dumps(prompt)}}
    )
    body, _ = invoke(runtime, serving_server.chat, prompt)
    assert counted["inputTokens"] == body["prompt_token_count"]


def test_chat_on_a_model_without_template_is_the_bedrock_validation_error(
    runtime: Any, serving_server: ServingServer
) -> None:
    with pytest.raises(runtime.exceptions.ValidationException, match="doesn't support the model"):
        runtime.converse(
            modelId=serving_server.plain, messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    body, _ = invoke(runtime, serving_server.plain, {"prompt": "completions still work", "max_gen_len": 3})
    assert body["generation_token_count"] >= 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputText": "x"}, "neither 'prompt' nor 'messages'"),
        ({"prompt": "x", "max_gen_len": -1}, "max_gen_len"),
        ({"prompt": "x", "max_gen_len": 100000}, "context length"),
    ],
)
def test_bad_bodies_are_validation_exceptions(
    runtime: Any, serving_server: ServingServer, body: dict[str, Any], needle: str
) -> None:
    with pytest.raises(runtime.exceptions.ValidationException, match=needle):
        invoke(runtime, serving_server.chat, body)


def test_unknown_model_is_resource_not_found(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        invoke(runtime, "no-such-model", {"prompt": "x"})


def test_cold_model_answers_model_not_ready_then_serves_after_retries(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server(OUTCROP_SERVING__WORKER_THREADS="1")
    import_and_wait(boto3_client("bedrock", server.url), tiny_model("mistral"), "cold")
    impatient = boto3_client("bedrock-runtime", server.url)
    with pytest.raises(impatient.exceptions.ModelNotReadyException, match="not ready") as info:
        invoke(impatient, "cold", {"prompt": "wake up", "max_gen_len": 2})
    assert int(info.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1
    patient = boto3_client(
        "bedrock-runtime",
        server.url,
        retries={"mode": "standard", "total_max_attempts": 12},
        read_timeout=120,
    )
    body, _ = invoke(patient, "cold", {"prompt": "wake up", "max_gen_len": 2})
    assert body["generation_token_count"] >= 1


def test_deleting_a_served_model_stops_its_copies(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:

    server = start_server(OUTCROP_SERVING__WORKER_THREADS="1")
    bedrock = boto3_client("bedrock", server.url)
    import_and_wait(bedrock, tiny_model("qwen3"), "doomed")
    warm = api.post(f"{server.url}/outcrop/models/doomed/warm", json={"copies": 1}, timeout=180)
    assert warm.status_code == 200 and warm.json()["copies"][0]["state"].lower() == "ready"
    bedrock.delete_imported_model(modelIdentifier="doomed")
    assert api.get(f"{server.url}/outcrop/copies").json()["copies"] == []
    runtime = boto3_client("bedrock-runtime", server.url)
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        invoke(runtime, "doomed", {"prompt": "x"})
