"""Tools and structured output through the gateway, with the real clients (openai, boto3), end to end.

A real ``outcrop serve`` on loopback whose copies are null copies (``outcrop.testing.nullcopy``,
started by the ``command`` launcher: the production seam) that answer tool calls and JSON per
vLLM's contract, deterministically: ``required`` / named / ``auto`` calls with arguments that
satisfy the tool's schema, a text answer after a tool result, JSON valid against a
``response_format`` schema (docs/tools.md). What is asserted is what each client parses.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from botocore.exceptions import ClientError
from pydantic import BaseModel

from tests.conftest import (
    AUTH,
    TEST_API_KEY,
    ServerProcess,
    api,
    boto3_client,
    import_and_wait,
    server_env,
)

pytestmark = pytest.mark.e2e

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "A city name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
    },
    {"type": "function", "function": {"name": "get_time", "description": "Time", "parameters": TIME_SCHEMA}},
]
CONVERSE_TOOLS = [
    {"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": WEATHER_SCHEMA}}},
    {"toolSpec": {"name": "get_time", "description": "Time", "inputSchema": {"json": TIME_SCHEMA}}},
]
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CONVERSE_ASK = [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}]
MODEL = "toolful"


class Forecast(BaseModel):
    city: str
    temperature_celsius: float
    sunny: bool
    tags: list[str]


def _nullcopy_template(*args: str) -> str:
    return (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} --model-dir {{model_dir}} {' '.join(args)}"
    ).strip()


def _serve(root: Path, model_folder: Path, *nullcopy_args: str) -> ServerProcess:
    env = server_env(
        root,
        OUTCROP_SERVING__LAUNCHER="command",
        OUTCROP_SERVING__COMMAND_TEMPLATE=_nullcopy_template(*nullcopy_args),
    )
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    dest = root / MODEL
    shutil.copytree(model_folder, dest)
    import_and_wait(boto3_client("bedrock", server.url), dest, MODEL)
    response = api.post(f"{server.url}/outcrop/models/{MODEL}/warm", json={"copies": 1}, timeout=120)
    assert response.status_code == 200, response.text
    return server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tools-server")
    server = _serve(root, tiny_model_cache(family="llama"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def runtime(server: ServerProcess) -> Any:
    return boto3_client("bedrock-runtime", server.url)


def _valid_call(name: str, arguments: Any) -> None:
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(value, SCHEMAS[name])


# -- OpenAI chat ------------------------------------------------------------------------------


def test_openai_chat_required_tool_choice_returns_parseable_calls_for_every_tool(
    client: openai.OpenAI,
) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=OPENAI_TOOLS, tool_choice="required"
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    for call in calls:
        assert call.type == "function" and call.id
        _valid_call(call.function.name, call.function.arguments)


def test_openai_chat_named_tool_choice_calls_that_tool_only(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=OPENAI_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = answer.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]
    _valid_call("get_time", calls[0].function.arguments)


def test_openai_chat_streams_tool_call_deltas_in_openais_chunk_shape(client: openai.OpenAI) -> None:
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=ASK, tools=OPENAI_TOOLS, tool_choice="required", stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    call["id"], call["name"] = delta.id, delta.function.name if delta.function else None
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    assert finish == "tool_calls" and sorted(calls) == [0, 1]
    for call in calls.values():
        assert call["id"]
        _valid_call(call["name"], call["arguments"])


def test_openai_chat_tool_round_trip_ends_in_a_text_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=OPENAI_TOOLS[:1], parallel_tool_calls=False
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: list[Any] = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=OPENAI_TOOLS[:1])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


def test_openai_chat_parse_returns_the_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Forecast)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast) and parsed.city


def test_openai_chat_json_object_and_guided_choice_pass_through(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, extra_body={"guided_choice": ["sunny", "rainy"]}
    )
    assert answer.choices[0].message.content == "sunny"


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
            "tools[0].function.parameters",
            "not valid JSON Schema",
        ),
        (
            {"tools": OPENAI_TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
            "'nope', which is not in tools",
        ),
        ({"tool_choice": "required"}, "tool_choice", "has no tools"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "big",
                            "parameters": {
                                "type": "object",
                                "properties": {
                                    f"p{i}": {"type": "string", "description": "x" * 100} for i in range(700)
                                },
                            },
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
            "the limit is 65536 bytes",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools[0].function.name",
            "1 to 64",
        ),
        ({"functions": [{"name": "f"}]}, "functions", "send 'tools'"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 3}}}},
            "response_format.json_schema.schema",
            "not valid JSON Schema",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format", "json_object"),
    ],
    ids=[
        "bad-schema",
        "unknown-tool-choice",
        "required-without-tools",
        "oversized-schema",
        "bad-name",
        "legacy-functions",
        "bad-response-schema",
        "bad-response-format",
    ],
)
def test_openai_chat_malformed_tool_requests_are_400_naming_the_param(
    client: openai.OpenAI, extra: dict[str, Any], param: str, needle: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, extra_body=extra)
    error: Any = info.value.body
    assert info.value.status_code == 400 and error["param"] == param and needle in error["message"], error


def test_openai_chat_tool_message_for_an_unknown_call_id_is_400(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages, tools=OPENAI_TOOLS)
    error: Any = info.value.body
    assert error["param"] == "messages[2].tool_call_id" and "'call_2'" in error["message"]


# -- OpenAI Responses ---------------------------------------------------------------------------

RESPONSES_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather",
        "parameters": WEATHER_SCHEMA,
        "strict": True,
    }
]


def test_responses_plain_text(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Hello", instructions="Be brief.", max_output_tokens=8
    )
    assert response.object == "response" and response.output_text == "null copy answer"
    assert response.usage is not None and response.usage.output_tokens > 0 and response.store is False


def test_responses_function_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=RESPONSES_TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    _valid_call("get_weather", calls[0].arguments)
    follow_up: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        calls[0].model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temperature": 21}'},
    ]
    second = client.responses.create(model=MODEL, input=follow_up, tools=RESPONSES_TOOLS)
    assert second.output_text and not [item for item in second.output if item.type == "function_call"]


def test_responses_stream_text_events_accumulate(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Hello") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.content_part.added" in kinds
    # the null copy's text stops at max_tokens: the response says so
    assert final.output_text == "null copy answer" and final.status == "incomplete"
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_function_call_arguments(client: openai.OpenAI) -> None:
    deltas = []
    with client.responses.stream(
        model=MODEL, input="Weather?", tools=RESPONSES_TOOLS, tool_choice="required"
    ) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert call.arguments == "".join(deltas) and final.status == "completed"
    _valid_call("get_weather", call.arguments)


def test_responses_parse_returns_the_pydantic_model(client: openai.OpenAI) -> None:
    response = client.responses.parse(model=MODEL, input="Forecast for Paris", text_format=Forecast)
    assert isinstance(response.output_parsed, Forecast)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": RESPONSES_TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
            "text.format.schema",
        ),
        ({"background": True}, "background"),
    ],
    ids=["previous-response", "hosted-tool", "unknown-tool-choice", "bad-schema", "background"],
)
def test_responses_unsupported_or_malformed_requests_are_400(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="hi", extra_body=extra)
    error: Any = info.value.body
    assert error["param"] == param and error["message"], error


def test_responses_function_call_output_for_an_unknown_call_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model=MODEL, input=[{"type": "function_call_output", "call_id": "call_9", "output": "x"}]
        )
    error: Any = info.value.body
    assert error["param"] == "input[0].call_id"


def test_responses_needs_a_key_like_chat_completions(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/v1/responses", json={"model": MODEL, "input": "hi"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    ok = httpx.post(f"{server.url}/v1/responses", json={"model": MODEL, "input": "hi"}, headers=AUTH)
    assert ok.status_code == 200


# -- Bedrock Converse -----------------------------------------------------------------------------


def test_converse_any_tool_choice_answers_tool_use_blocks(runtime: Any) -> None:
    answer = runtime.converse(
        modelId=MODEL, messages=CONVERSE_ASK, toolConfig={"tools": CONVERSE_TOOLS, "toolChoice": {"any": {}}}
    )
    assert answer["stopReason"] == "tool_use"
    uses = [block["toolUse"] for block in answer["output"]["message"]["content"] if "toolUse" in block]
    assert [u["name"] for u in uses] == ["get_weather", "get_time"]
    for use in uses:
        assert isinstance(use["input"], dict) and use["toolUseId"]
        _valid_call(use["name"], use["input"])


def test_converse_full_tool_round_trip(runtime: Any) -> None:
    config = {"tools": CONVERSE_TOOLS[:1], "toolChoice": {"auto": {}}}
    first = runtime.converse(modelId=MODEL, messages=CONVERSE_ASK, toolConfig=config)
    assert first["stopReason"] == "tool_use"
    message = first["output"]["message"]
    use = next(block["toolUse"] for block in message["content"] if "toolUse" in block)
    result = {
        "toolResult": {
            "toolUseId": use["toolUseId"],
            "content": [{"json": {"temperature": 21}}, {"text": "sunny"}],
            "status": "success",
        }
    }
    messages = [*CONVERSE_ASK, message, {"role": "user", "content": [result]}]
    second = runtime.converse(modelId=MODEL, messages=messages, toolConfig=config)
    assert second["stopReason"] == "end_turn"
    assert second["output"]["message"]["content"] == [{"text": "null copy answer"}]


def test_converse_named_tool_choice(runtime: Any) -> None:
    answer = runtime.converse(
        modelId=MODEL,
        messages=CONVERSE_ASK,
        toolConfig={"tools": CONVERSE_TOOLS, "toolChoice": {"tool": {"name": "get_time"}}},
    )
    uses = [block["toolUse"] for block in answer["output"]["message"]["content"] if "toolUse" in block]
    assert [u["name"] for u in uses] == ["get_time"]


def test_converse_stream_tool_use_events_parse_in_botocore(runtime: Any) -> None:
    stream = runtime.converse_stream(
        modelId=MODEL, messages=CONVERSE_ASK, toolConfig={"tools": CONVERSE_TOOLS, "toolChoice": {"any": {}}}
    )
    starts: dict[int, dict[str, Any]] = {}
    inputs: dict[int, str] = {}
    stops: list[int] = []
    stop_reason = None
    for event in stream["stream"]:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            starts[start["contentBlockIndex"]] = start["start"]["toolUse"]
        elif "contentBlockDelta" in event:
            delta = event["contentBlockDelta"]
            inputs[delta["contentBlockIndex"]] = (
                inputs.get(delta["contentBlockIndex"], "") + delta["delta"]["toolUse"]["input"]
            )
        elif "contentBlockStop" in event:
            stops.append(event["contentBlockStop"]["contentBlockIndex"])
        elif "messageStop" in event:
            stop_reason = event["messageStop"]["stopReason"]
    assert stop_reason == "tool_use" and stops == [0, 1]
    assert [starts[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    for i in (0, 1):
        assert starts[i]["toolUseId"]
        _valid_call(starts[i]["name"], inputs[i])


def test_converse_output_config_json_schema(runtime: Any) -> None:
    schema = Forecast.model_json_schema()
    answer = runtime.converse(
        modelId=MODEL,
        messages=CONVERSE_ASK,
        outputConfig={
            "textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "forecast"}},
            }
        },
    )
    jsonschema.validate(json.loads(answer["output"]["message"]["content"][0]["text"]), schema)


def _validation_error(info: pytest.ExceptionInfo[ClientError]) -> str:
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(info.value.response["Error"]["Message"])


@pytest.mark.parametrize(
    ("messages", "tool_config", "needle"),
    [
        (
            CONVERSE_ASK,
            {"tools": CONVERSE_TOOLS, "toolChoice": {"tool": {"name": "nope"}}},
            "toolChoice.tool.name",
        ),
        (
            CONVERSE_ASK,
            {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "objekt"}}}}]},
            "not valid JSON Schema",
        ),
        (
            [
                *CONVERSE_ASK,
                {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t1", "name": "get_time", "input": {}}}],
                },
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t2", "content": [{"text": "noon"}]}}],
                },
            ],
            {"tools": CONVERSE_TOOLS},
            "toolUseId 't2'",
        ),
        (
            [
                *CONVERSE_ASK,
                {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t1", "name": "get_time", "input": {}}}],
                },
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "noon"}]}}],
                },
            ],
            None,
            "The toolConfig field must be defined",
        ),
    ],
    ids=["unknown-tool-choice", "bad-input-schema", "unknown-tool-use-id", "tool-blocks-without-tool-config"],
)
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_converse_malformed_tool_requests_are_validation_exceptions(
    runtime: Any, messages: list[Any], tool_config: Any, needle: str, operation: str
) -> None:
    extra = {"toolConfig": tool_config} if tool_config is not None else {}
    with pytest.raises(ClientError) as info:
        getattr(runtime, operation)(modelId=MODEL, messages=messages, **extra)
    assert needle in _validation_error(info)


def test_invoke_model_messages_body_takes_tools(runtime: Any) -> None:
    body = {"messages": ASK, "max_tokens": 64, "tools": OPENAI_TOOLS, "tool_choice": "required"}
    answer = json.loads(runtime.invoke_model(modelId=MODEL, body=json.dumps(body))["body"].read())
    calls = answer["choices"][0]["message"]["tool_calls"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls" and len(calls) == 2
    body = {
        "messages": ASK,
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
        "tools": OPENAI_TOOLS,
    }
    with pytest.raises(ClientError) as info:
        runtime.invoke_model(modelId=MODEL, body=json.dumps(body))
    assert "'nope'" in _validation_error(info)


def test_structured_requests_are_counted(server: ServerProcess, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=ASK, tools=OPENAI_TOOLS, tool_choice="required")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'outcrop_structured_requests_total{kind="tools",operation="ChatCompletions"}' in metrics


# -- a model without tool support -------------------------------------------------------------------


def test_a_copy_that_cannot_use_tools_answers_in_bedrocks_words_on_every_surface(
    tmp_path: Path, tiny_model_cache: Callable[..., Path]
) -> None:
    server = _serve(tmp_path, tiny_model_cache(family="llama"), "--no-tools")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=MODEL, messages=ASK, tools=OPENAI_TOOLS)
        assert info.value.body["message"] == "This model doesn't support tool use."  # type: ignore[index]
        runtime = boto3_client("bedrock-runtime", server.url)
        with pytest.raises(ClientError) as error:
            runtime.converse(modelId=MODEL, messages=CONVERSE_ASK, toolConfig={"tools": CONVERSE_TOOLS})
        assert _validation_error(error) == "This model doesn't support tool use."
    finally:
        server.stop()


# -- LangChain ----------------------------------------------------------------------------------


def get_weather(city: str, unit: str) -> str:
    """The weather in a city.

    Args:
        city: A city name.
        unit: celsius or fahrenheit.
    """
    return f"21 {unit} in {city}"


def _langchain_aws(server: ServerProcess) -> Any:
    langchain_aws = pytest.importorskip("langchain_aws")
    return langchain_aws.ChatBedrockConverse(
        model=MODEL,
        provider="meta",
        max_tokens=64,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _langchain_openai(server: ServerProcess) -> Any:
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        model=MODEL, base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_tokens=64, max_retries=0
    )


@pytest.mark.parametrize(
    "make", [_langchain_aws, _langchain_openai], ids=["ChatBedrockConverse", "ChatOpenAI"]
)
def test_langchain_bind_tools_returns_tool_calls(
    server: ServerProcess, make: Callable[[ServerProcess], Any]
) -> None:
    chat = make(server).bind_tools([get_weather])
    answer = chat.invoke("What is the weather in Paris?")
    assert [call["name"] for call in answer.tool_calls] == ["get_weather"]
    assert set(answer.tool_calls[0]["args"]) >= {"city", "unit"}


@pytest.mark.parametrize(
    "make", [_langchain_aws, _langchain_openai], ids=["ChatBedrockConverse", "ChatOpenAI"]
)
def test_langchain_bind_tools_streams_tool_call_chunks(
    server: ServerProcess, make: Callable[[ServerProcess], Any]
) -> None:
    chat = make(server).bind_tools([get_weather])
    total = None
    for chunk in chat.stream("What is the weather in Paris?"):
        total = chunk if total is None else total + chunk
    assert total is not None and [call["name"] for call in total.tool_calls] == ["get_weather"]
    assert set(total.tool_calls[0]["args"]) >= {"city", "unit"}


@pytest.mark.parametrize(
    "make", [_langchain_aws, _langchain_openai], ids=["ChatBedrockConverse", "ChatOpenAI"]
)
def test_langchain_with_structured_output_returns_the_pydantic_model(
    server: ServerProcess, make: Callable[[ServerProcess], Any]
) -> None:
    forecast = make(server).with_structured_output(Forecast).invoke("Forecast for Paris")
    assert isinstance(forecast, Forecast)


@pytest.mark.parametrize(
    "make", [_langchain_aws, _langchain_openai], ids=["ChatBedrockConverse", "ChatOpenAI"]
)
def test_langchain_tool_round_trip_with_a_tool_message(
    server: ServerProcess, make: Callable[[ServerProcess], Any]
) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    chat = make(server).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    first = chat.invoke(messages)
    call = first.tool_calls[0]
    messages += [first, ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])]
    answer = chat.invoke(messages)
    assert answer.text and not answer.tool_calls


def test_count_tokens_takes_a_tool_conversation(runtime: Any) -> None:
    """Counted with the model's chat template; one that cannot render tool calls is a 400, never a 500."""
    messages = [
        *CONVERSE_ASK,
        {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": "t1", "name": "get_time", "input": {"zone": "UTC"}}}],
        },
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "noon"}]}}]},
    ]
    request = {"converse": {"messages": messages, "toolConfig": {"tools": CONVERSE_TOOLS}}}
    try:
        counted = runtime.count_tokens(modelId=MODEL, input=request)
    except ClientError as error:  # the tiny model's template joins content strings only
        assert error.response["Error"]["Code"] == "ValidationException"
        assert "chat template" in error.response["Error"]["Message"]
    else:
        assert counted["inputTokens"] > 0
    without_config = {"converse": {"messages": messages}}
    with pytest.raises(ClientError) as info:
        runtime.count_tokens(modelId=MODEL, input=without_config)
    assert "toolConfig field must be defined" in _validation_error(info)
