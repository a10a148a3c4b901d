"""The pure translations of tool use and structured output (outcrop/protocol/tools.py, converse_tools.py,
responses.py) and the null copy's schema sampler, read as tables of cases."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from outcrop.errors import InvalidRequestError
from outcrop.protocol import bedrock_runtime as p
from outcrop.protocol import converse_tools as ct
from outcrop.protocol import responses as r
from outcrop.protocol import tools
from outcrop.testing.json_sample import sample

OBJECT = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": OBJECT}}]
HI = [{"role": "user", "content": [{"text": "Hi"}]}]


# -- OpenAI chat checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": "weather"}, "tools"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"tools": [*TOOLS, *TOOLS]}, "tools[1].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice.function.name",
        ),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_json": {"$schema": 3}}, "guided_json"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_regex": 5}, "guided_regex"),
        ({"structured_outputs": {"json": {"type": "nope"}}}, "structured_outputs.json"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": OBJECT}}},
            "response_format.json_schema.name",
        ),
    ],
)
def test_malformed_chat_tool_members_are_refused_naming_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tools.check_chat_tools({"messages": [{"role": "user", "content": "x"}], **body})
    assert info.value.param == param


def test_a_schema_over_the_limit_is_refused_with_its_size() -> None:
    schema = {"type": "object", "description": "x" * tools.MAX_SCHEMA_BYTES}
    with pytest.raises(InvalidRequestError) as info:
        tools.check_schema(schema, "guided_json")
    assert f"the limit is {tools.MAX_SCHEMA_BYTES} bytes" in info.value.message


def test_a_bad_part_of_a_schema_is_named() -> None:
    schema = {"type": "object", "properties": {"when": {"type": "dattime"}}}
    with pytest.raises(InvalidRequestError) as info:
        tools.check_schema(schema, "tools[0].function.parameters")
    assert info.value.message.startswith(
        "tools[0].function.parameters.properties.when.type is not valid JSON Schema"
    )


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "tool", "tool_call_id": "c1", "content": "x"}], "messages[0].tool_call_id"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_tool_messages_must_answer_a_call_made_before(messages: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tools.check_tool_messages(messages)
    assert info.value.param == param


def test_a_tool_message_answering_an_earlier_call_is_fine() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tools.check_tool_messages(
        [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]
    )


# -- Converse ------------------------------------------------------------------------------------


def test_converse_tool_turns_become_tool_calls_and_tool_messages() -> None:
    messages = [
        *HI,
        {
            "role": "assistant",
            "content": [
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "t1",
                        "content": [{"text": "cold"}, {"json": {"c": -3}}],
                        "status": "error",
                    }
                },
                {"text": "And tomorrow?"},
            ],
        },
    ]
    tool_config = {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": OBJECT}}}]}
    chat = p.converse_to_chat({"messages": messages, "toolConfig": tool_config})
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": 'Error: cold\n{"c": -3}'},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert "tool_choice" not in chat


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"auto": {}}, "auto"),
        ({"any": {}}, "required"),
        ({"tool": {"name": "weather"}}, {"type": "function", "function": {"name": "weather"}}),
    ],
)
def test_converse_tool_choice_maps_to_openais(choice: dict[str, Any], expected: Any) -> None:
    config = {
        "tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": OBJECT}}}],
        "toolChoice": choice,
    }
    assert ct.tool_config_to_chat(config)["tool_choice"] == expected


@pytest.mark.parametrize(
    ("tool_config", "param"),
    [
        ({"tools": []}, "toolConfig.tools"),
        ({"tools": [{"cachePoint": {"type": "default"}}], "toolChoice": {"any": {}}}, "toolConfig.tools"),
        ({"tools": [{"systemTool": {"name": "web"}}]}, "toolConfig.tools.0"),
        (
            {"tools": [{"toolSpec": {"name": "a b", "inputSchema": {"json": OBJECT}}}]},
            "toolConfig.tools.0.toolSpec.name",
        ),
        ({"tools": [{"toolSpec": {"name": "a"}}]}, "toolConfig.tools.0.toolSpec.inputSchema"),
        (
            {
                "tools": [{"toolSpec": {"name": "a", "inputSchema": {"json": OBJECT}}}],
                "toolChoice": {"some": {}},
            },
            "toolConfig.toolChoice",
        ),
    ],
)
def test_malformed_tool_config_is_a_validation_error_naming_the_member(tool_config: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        p.parse_converse({"messages": HI, "toolConfig": tool_config})
    assert info.value.param == param


def test_a_tool_use_in_a_user_turn_is_refused() -> None:
    messages = [{"role": "user", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]}]
    with pytest.raises(InvalidRequestError, match="toolUse blocks belong to assistant turns"):
        p.parse_converse(
            {
                "messages": messages,
                "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]},
            }
        )


def test_a_chat_answer_with_tool_calls_is_tool_use_blocks_with_json_input() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    resp = {"choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    out = p.chat_to_converse(resp, latency_ms=1)
    assert out["stopReason"] == "tool_use"
    assert out["output"]["message"]["content"] == [
        {"toolUse": {"toolUseId": "c1", "name": "weather", "input": {"city": "Oslo"}}}
    ]


def test_tool_arguments_that_are_not_json_are_malformed_tool_use() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": '}}
    resp = {"choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    assert p.chat_to_converse(resp, latency_ms=1)["stopReason"] == "malformed_tool_use"


def test_converse_stream_translator_opens_and_closes_blocks_in_order() -> None:
    blocks = ct.ConverseStreamTranslator()
    events: list[tuple[str, dict[str, Any]]] = []
    for delta in (
        {"content": "Let me check."},
        {
            "tool_calls": [
                {"index": 0, "id": "c1", "type": "function", "function": {"name": "a", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}
            ]
        },
    ):
        events += blocks.feed({"delta": delta})
    events += blocks.feed({"delta": {}, "finish_reason": "tool_calls"})
    closing, stop = blocks.end()
    events += closing
    assert [(name, payload["contentBlockIndex"]) for name, payload in events] == [
        ("contentBlockDelta", 0),
        ("contentBlockStop", 0),
        ("contentBlockStart", 1),
        ("contentBlockDelta", 1),
        ("contentBlockDelta", 1),
        ("contentBlockStop", 1),
        ("contentBlockStart", 2),
        ("contentBlockDelta", 2),
        ("contentBlockStop", 2),
    ]
    assert events[2][1]["start"] == {"toolUse": {"toolUseId": "c1", "name": "a"}} and stop == "tool_use"
    assert blocks.message()["content"][1] == {"toolUse": {"toolUseId": "c1", "name": "a", "input": {"x": 1}}}


def test_a_text_only_stream_keeps_its_one_block() -> None:
    blocks = ct.ConverseStreamTranslator()
    assert blocks.end() == ([("contentBlockStop", {"contentBlockIndex": 0})], "end_turn")


def test_output_config_becomes_a_json_schema_response_format() -> None:
    config = {
        "textFormat": {
            "type": "json_schema",
            "structure": {"jsonSchema": {"schema": json.dumps(OBJECT), "name": "city"}},
        }
    }
    chat = p.converse_to_chat({"messages": HI, "outputConfig": config})
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": OBJECT, "strict": True},
    }


# -- Responses -----------------------------------------------------------------------------------


def test_responses_input_items_become_chat_messages() -> None:
    request = r.parse_request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "cold"},
                {"type": "function_call_output", "call_id": "c2", "output": "warm"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": OBJECT}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": OBJECT}},
            "max_output_tokens": 9,
        }
    )
    chat = request.chat
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in chat["messages"][2]["tool_calls"]] == ["c1", "c2"]
    assert chat["tools"] == TOOLS and chat["tool_choice"] == {
        "type": "function",
        "function": {"name": "weather"},
    }
    assert chat["response_format"]["json_schema"] == {"name": "w", "schema": OBJECT}
    assert chat["max_tokens"] == 9 and chat["stream"] is False


def test_responses_stream_events_are_numbered_and_nested_in_order() -> None:
    request = r.parse_request({"model": "m", "input": "hi", "stream": True})
    stream = r.ResponsesStreamTranslator(request)
    events = stream.start()
    events += stream.feed({"delta": {"content": "Hel"}})
    events += stream.feed({"delta": {"content": "lo"}})
    events += stream.feed(
        {"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}}
    )
    events += stream.end({"prompt_tokens": 2, "completion_tokens": 3})
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello" and final["output"][1]["call_id"] == "c1"
    assert final["usage"]["total_tokens"] == 5 and final["status"] == "completed"


# -- the null copy's sampler ---------------------------------------------------------------------


class Place(BaseModel):
    name: str
    population: int | None = None


class Trip(BaseModel):
    title: str
    places: list[Place]
    rating: float
    home: Place | None = None


@pytest.mark.parametrize(
    "schema",
    [
        Trip.model_json_schema(),
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 10, "multipleOf": 5}},
            "required": ["n"],
        },
        {"type": "string", "minLength": 20, "format": "email"},
        {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 3},
        {"allOf": [{"type": "object", "properties": {"a": {"const": 1}}}, {"required": ["a"]}]},
        {"type": ["null", "number"], "exclusiveMaximum": 0},
    ],
)
def test_the_sampler_satisfies_the_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(sample(schema), schema)


# -- nothing but a 400 -----------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_tool_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["function", "web_search", 3]),
        "function": _json,
        "name": _json,
        "parameters": _json,
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tools": st.lists(_tool_like, max_size=2) | _json,
            "tool_choice": st.sampled_from(["auto", "none", "required", "x"]) | _json,
            "response_format": _json,
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["assistant", "tool", "user"])},
                    optional={"tool_calls": _json, "tool_call_id": _json, "content": _json},
                ),
                max_size=3,
            ),
            "guided_json": _json,
            "structured_outputs": _json,
            "input": _json,
            "text": _json,
            "instructions": _json,
            "max_output_tokens": _json,
        },
    )
)
def test_arbitrary_tool_members_are_a_400_or_accepted_never_a_crash(body: dict[str, Any]) -> None:
    for parse in (tools.check_chat_tools, lambda b: r.parse_request({"model": "m", "input": "x", **b})):
        try:
            parse(body)
        except InvalidRequestError:
            pass


_block = st.one_of(
    st.fixed_dictionaries({"text": _json}),
    st.fixed_dictionaries(
        {"toolUse": st.fixed_dictionaries({"toolUseId": _json, "name": _json, "input": _json})}
    ),
    st.fixed_dictionaries(
        {
            "toolResult": st.fixed_dictionaries(
                {"toolUseId": _json, "content": _json}, optional={"status": _json}
            )
        }
    ),
    _json,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant"]), "content": st.lists(_block, max_size=3)}
        ),
        max_size=4,
    ),
    st.one_of(
        st.none(),
        _json,
        st.fixed_dictionaries(
            {"tools": st.lists(st.fixed_dictionaries({"toolSpec": _json}), max_size=2)},
            optional={"toolChoice": _json},
        ),
    ),
    _json,
)
def test_arbitrary_converse_tool_bodies_are_a_validation_error_or_accepted(
    messages: Any, tool_config: Any, output_config: Any
) -> None:
    try:
        p.parse_converse({"messages": messages, "toolConfig": tool_config, "outputConfig": output_config})
    except InvalidRequestError:
        pass
