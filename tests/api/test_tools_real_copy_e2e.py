"""Tools and structured output end to end on a REAL copy: boto3, the OpenAI SDK and LangChain ->
``outcrop serve`` -> Outcrop's own worker, whose constrained decoding makes even a random-weight
tiny model answer with calls and JSON that validate against their schemas.

(tests/api/test_tools_e2e.py covers the wire shapes against null copies; tests/engine covers the
copy alone; this file is the two together, as a user runs them.)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import (
    TEST_API_KEY,
    ServerProcess,
    api,
    boto3_client,
    import_and_wait,
    server_env,
)
from tests.engine.conftest import build_tools_model

pytestmark = pytest.mark.e2e

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["order_id", "urgent"],
}
TOOL_CONFIG = {
    "tools": [{"toolSpec": {"name": "lookup_order", "inputSchema": {"json": ORDER_SCHEMA}}}],
    "toolChoice": {"any": {}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tools-real-copy")
    model = build_tools_model(root / "qwen2-tools")
    proc = ServerProcess(data_dir=root / "data", env=server_env(root), import_root=root).start()
    import_and_wait(boto3_client("bedrock", proc.url), model, "toolsy")
    response = api.post(f"{proc.url}/outcrop/models/toolsy/warm", json={"copies": 1}, timeout=180)
    assert response.status_code == 200, response.text
    yield proc
    proc.stop()
    shutil.rmtree(model, ignore_errors=True)


def test_converse_tool_round_trip_on_a_real_copy(server: ServerProcess) -> None:
    runtime = boto3_client("bedrock-runtime", server.url)
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": "Where is order 42?"}]}]
    answer = runtime.converse(
        modelId="toolsy", messages=messages, toolConfig=TOOL_CONFIG, inferenceConfig={"maxTokens": 256}
    )
    assert answer["stopReason"] == "tool_use"
    use = next(b["toolUse"] for b in answer["output"]["message"]["content"] if "toolUse" in b)
    assert use["name"] == "lookup_order"
    jsonschema.validate(use["input"], ORDER_SCHEMA)  # a random-weight model, constrained: always valid

    messages += [
        answer["output"]["message"],
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": {"eta": "2d"}}]}}
            ],
        },
    ]
    tools = {**TOOL_CONFIG, "toolChoice": {"auto": {}}}
    final = runtime.converse(
        modelId="toolsy", messages=messages, toolConfig=tools, inferenceConfig={"maxTokens": 8}
    )
    assert final["output"]["message"]["role"] == "assistant"
    assert final["usage"]["inputTokens"] > answer["usage"]["inputTokens"]  # the tool result reached the model


def test_converse_stream_named_tool_on_a_real_copy(server: ServerProcess) -> None:
    runtime = boto3_client("bedrock-runtime", server.url)
    events = list(
        runtime.converse_stream(
            modelId="toolsy",
            messages=[{"role": "user", "content": [{"text": "Check order 7"}]}],
            toolConfig={**TOOL_CONFIG, "toolChoice": {"tool": {"name": "lookup_order"}}},
            inferenceConfig={"maxTokens": 256},
        )["stream"]
    )
    starts = [e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e]
    assert [s["name"] for s in starts] == ["lookup_order"]
    arguments = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    )
    jsonschema.validate(json.loads(arguments), ORDER_SCHEMA)
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["tool_use"]


class Order(BaseModel):
    order_id: str
    urgent: bool


def test_openai_structured_output_and_required_tools_on_a_real_copy(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_retries=0)
    parsed = client.chat.completions.parse(
        model="toolsy",
        messages=[{"role": "user", "content": "Describe order 9"}],
        response_format=Order,
        max_tokens=256,
    )
    assert isinstance(parsed.choices[0].message.parsed, Order)

    tool = {"type": "function", "function": {"name": "lookup_order", "parameters": ORDER_SCHEMA}}
    completion = client.chat.completions.create(
        model="toolsy",
        messages=[{"role": "user", "content": "Where is order 3?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=256,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_order"  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), ORDER_SCHEMA)  # type: ignore[union-attr]


def test_langchain_chat_openai_with_structured_output_on_a_real_copy(server: ServerProcess) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model="toolsy", base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_tokens=256, max_retries=0
    )
    result = chat.with_structured_output(Order, method="json_schema").invoke("Describe order 11")
    assert isinstance(result, Order)


def test_a_tool_choice_naming_an_unknown_tool_is_a_validation_exception(server: ServerProcess) -> None:
    runtime = boto3_client("bedrock-runtime", server.url)
    with pytest.raises(runtime.exceptions.ValidationException) as info:
        runtime.converse(
            modelId="toolsy",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
            toolConfig={**TOOL_CONFIG, "toolChoice": {"tool": {"name": "nope"}}},
        )
    assert "nope" in str(info.value)
