"""Issue 14's client list, each through the real server with the real client (boto3, openai).

What third-party clients branch on: stopReason ``stop_sequence``, Bedrock's own words for
out-of-order turns, tool requests reaching the model, per-token ``top_logprobs``, OpenAI's context-length error
(LiteLLM's ContextWindowExceededError keys on it), ``GET /v1/models/{id}`` and ``x-request-id``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
from botocore.exceptions import ClientError

from outcrop.protocol.bedrock_runtime import MUST_ALTERNATE, MUST_START_WITH_USER
from tests.conftest import TEST_API_KEY, ServingServer, boto3_client

pytestmark = pytest.mark.e2e

USER_HI = {"role": "user", "content": [{"text": "Tell me a story"}]}


@pytest.fixture(scope="module")
def runtime(serving_server: ServingServer) -> Any:
    return boto3_client("bedrock-runtime", serving_server.url)


@pytest.fixture(scope="module")
def client(serving_server: ServingServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serving_server.url}/v1", api_key=TEST_API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def greedy_text(runtime: Any, serving_server: ServingServer) -> str:
    """What the chat model says to USER_HI, greedily; the stop-sequence tests cut it."""
    answer = runtime.converse(
        modelId=serving_server.chat, messages=[USER_HI], inferenceConfig={"maxTokens": 16, "temperature": 0}
    )
    text = str(answer["output"]["message"]["content"][0]["text"])
    assert len(text) >= 2, f"the tiny model said too little to cut: {text!r}"
    return text


def _a_stop_inside(text: str) -> str:
    return text[len(text) // 2]


def _validation_message(info: pytest.ExceptionInfo[ClientError]) -> str:
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(info.value.response["Error"]["Message"])


def test_converse_that_hits_a_stop_sequence_reports_stop_sequence(
    runtime: Any, serving_server: ServingServer, greedy_text: str
) -> None:
    stop = _a_stop_inside(greedy_text)
    answer = runtime.converse(
        modelId=serving_server.chat,
        messages=[USER_HI],
        inferenceConfig={"maxTokens": 16, "temperature": 0, "stopSequences": [stop]},
    )
    assert answer["stopReason"] == "stop_sequence"
    assert answer["output"]["message"]["content"][0]["text"] == greedy_text[: greedy_text.index(stop)]


def test_converse_stream_that_hits_a_stop_sequence_reports_stop_sequence(
    runtime: Any, serving_server: ServingServer, greedy_text: str
) -> None:
    response = runtime.converse_stream(
        modelId=serving_server.chat,
        messages=[USER_HI],
        inferenceConfig={"maxTokens": 16, "temperature": 0, "stopSequences": [_a_stop_inside(greedy_text)]},
    )
    stops = [e["messageStop"]["stopReason"] for e in response["stream"] if "messageStop" in e]
    assert stops == ["stop_sequence"]


def test_converse_without_a_stop_sequence_that_hits_never_says_stop_sequence(
    runtime: Any, serving_server: ServingServer
) -> None:
    answer = runtime.converse(
        modelId=serving_server.chat,
        messages=[USER_HI],
        inferenceConfig={"maxTokens": 4, "temperature": 0, "stopSequences": ["\u2603never\u2603"]},
    )
    assert answer["stopReason"] in ("end_turn", "max_tokens")


@pytest.mark.parametrize("style", ["prompt", "messages"])
def test_invoke_model_names_the_stop_string_that_ended_the_text(
    runtime: Any, serving_server: ServingServer, greedy_text: str, style: str
) -> None:
    stop = _a_stop_inside(greedy_text)
    body: dict[str, Any] = (
        {"prompt": "Tell me a story", "max_gen_len": 16}
        if style == "prompt"
        else {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 16}
    )
    response = runtime.invoke_model(
        modelId=serving_server.chat, body=json.dumps({**body, "temperature": 0, "stop": [stop]})
    )
    answer = json.loads(response["body"].read())
    choice = answer["choices"][0]
    if choice["finish_reason"] == "stop" and choice.get("stop_reason") is None:
        pytest.skip("the model ended before the stop string (this prompt style differs from Converse's)")
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop
    if style == "prompt":
        assert answer["stop_reason"] == "stop"  # Bedrock Llama's own word for it


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "assistant", "content": [{"text": "Hi"}]}, USER_HI], MUST_START_WITH_USER),
        ([USER_HI, USER_HI], MUST_ALTERNATE),
        ([USER_HI, {"role": "assistant", "content": [{"text": "a"}]}, {**USER_HI}, USER_HI], MUST_ALTERNATE),
    ],
)
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_converse_turns_out_of_order_are_refused_in_bedrocks_words(
    runtime: Any, serving_server: ServingServer, messages: list[Any], expected: str, operation: str
) -> None:
    with pytest.raises(ClientError) as info:
        getattr(runtime, operation)(modelId=serving_server.chat, messages=messages)
    assert _validation_message(info) == expected


def test_bedrocks_turn_order_messages_are_word_for_word() -> None:
    assert MUST_START_WITH_USER == (
        "A conversation must start with a user message. Try again with a conversation that starts with a "
        "user message."
    )
    assert MUST_ALTERNATE == (
        "A conversation must alternate between user and assistant roles. Make sure the conversation "
        "alternates between user and assistant roles and try again."
    )


def test_converse_tool_config_reaches_the_model_not_dropped(
    runtime: Any, serving_server: ServingServer
) -> None:
    """The copy answers a tool request with tool use, or with Bedrock's words when it cannot use tools."""
    tool = {
        "toolSpec": {
            "name": "weather",
            "description": "The weather in a city",
            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
        }
    }
    try:
        answer = runtime.converse(
            modelId=serving_server.chat,
            messages=[USER_HI],
            toolConfig={"tools": [tool], "toolChoice": {"any": {}}},
            inferenceConfig={"maxTokens": 32},
        )
    except ClientError as error:
        assert error.response["Error"]["Code"] == "ValidationException"
        assert "tool" in error.response["Error"]["Message"]
    else:
        assert answer["stopReason"] in ("tool_use", "max_tokens")


def test_invoke_model_messages_body_passes_top_logprobs_through(
    runtime: Any, serving_server: ServingServer
) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    response = runtime.invoke_model(modelId=serving_server.chat, body=json.dumps(body))
    tokens = json.loads(response["body"].read())["choices"][0]["logprobs"]["content"]
    assert tokens and all(len(t["top_logprobs"]) == 2 for t in tokens)


def test_openai_over_long_prompt_is_context_length_exceeded_in_openais_words(
    client: openai.OpenAI, serving_server: ServingServer
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=serving_server.chat, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=8
        )
    assert info.value.status_code == 400 and info.value.code == "context_length_exceeded"
    error: Any = info.value.body  # the SDK's message is prefixed with "Error code: 400 - "
    assert re.match(r"This model's maximum context length is \d+ tokens\. ", error["message"])


def test_openai_retrieves_one_model_and_404s_an_unknown_one(
    client: openai.OpenAI, serving_server: ServingServer
) -> None:
    model = client.models.retrieve(serving_server.chat)
    assert model.id == serving_server.chat and model.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found" and "no-such-model" in info.value.message


def test_openai_successful_answers_carry_a_request_id(
    client: openai.OpenAI, serving_server: ServingServer
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=serving_server.chat, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert raw.headers.get("x-request-id")
    assert client.models.with_raw_response.list().headers.get("x-request-id")
    streamed = client.chat.completions.with_raw_response.create(
        model=serving_server.chat, messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
    )
    assert streamed.headers.get("x-request-id")
    list(streamed.parse())


@pytest.mark.parametrize(
    "message", [{"role": "user"}, {"role": "user", "content": None}, {"role": "system"}], ids=str
)
def test_openai_message_without_content_is_a_400(
    client: openai.OpenAI, serving_server: ServingServer, message: dict[str, Any]
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=serving_server.chat, messages=[message], max_tokens=2)  # type: ignore[list-item]
    assert "content" in info.value.message and info.value.param is not None
