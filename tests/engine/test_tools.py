"""Tool calls: validation, per-family parsers of the model's own format, streamed deltas, and
the chat surface in process (TestClient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from outcrop.engine.server import create_app
from outcrop.engine.tools import (
    HermesParser,
    Llama3Parser,
    MistralParser,
    ToolCallStream,
    ToolRequest,
    parser_for,
    template_messages,
    tool_request,
)
from outcrop.errors import InvalidRequestError
from tests.engine.conftest import QWEN_TOOLS_TEMPLATE, make_runtime

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}


def _tools(**overrides: Any) -> list[dict[str, Any]]:
    return json.loads(json.dumps(TOOLS))


# ---------------------------------------------------------------- parsers


def test_hermes_parser_reads_qwen_tool_calls_and_the_text_before() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    content, calls = HermesParser().parse(text)
    assert content == "Let me check.\n"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("add", {"a": 1, "b": 2}),
    ]
    assert HermesParser().parse("no calls here") == ("no calls here", [])


def test_mistral_parser_reads_both_formats() -> None:
    content, calls = MistralParser().parse('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]')
    assert content is None and calls[0].name == "add" and json.loads(calls[0].arguments) == {"a": 1, "b": 2}
    content, calls = MistralParser().parse('Sure[TOOL_CALLS]add[ARGS]{"a": 3, "b": 4}')
    assert content == "Sure" and calls[0].name == "add" and json.loads(calls[0].arguments) == {"a": 3, "b": 4}


def test_llama3_parser_reads_json_calls_with_and_without_python_tag() -> None:
    _, calls = Llama3Parser().parse('{"name": "add", "parameters": {"a": 1, "b": 2}}')
    assert calls[0].name == "add" and json.loads(calls[0].arguments) == {"a": 1, "b": 2}
    _, calls = Llama3Parser().parse(
        '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}; {"name": "get_weather", "parameters": {}}'
    )
    assert [c.name for c in calls] == ["add", "get_weather"]
    assert Llama3Parser().parse("{not a call") == ("{not a call", [])
    assert Llama3Parser().parse('{"answer": 42}') == ('{"answer": 42}', [])


def test_the_parser_comes_from_the_chat_template_then_the_family() -> None:
    assert isinstance(parser_for(QWEN_TOOLS_TEMPLATE, "llama"), HermesParser)
    assert isinstance(parser_for("{{ '[TOOL_CALLS]' }}", None), MistralParser)
    assert isinstance(parser_for("{{ '<|python_tag|>' }}", None), Llama3Parser)
    assert isinstance(parser_for("", "mixtral"), MistralParser)
    assert isinstance(parser_for("", "llama"), Llama3Parser)
    assert isinstance(parser_for("", "qwen3"), HermesParser)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("tools", "choice", "needle"),
    [
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "not in 'tools'"),
        (TOOLS, "sometimes", "Invalid 'tool_choice'"),
        (None, "required", "only allowed when 'tools'"),
        ([{"type": "retrieval"}], "auto", "only function tools"),
        ([{"type": "function", "function": {"name": "bad name"}}], "auto", "is invalid"),
        ([TOOLS[0], TOOLS[0]], "auto", "must be unique"),
        ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "auto", "JSON schema object"),
    ],
)
def test_bad_tools_or_tool_choice_are_refused(tools: Any, choice: Any, needle: str) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        tool_request(tools, choice, None)


def test_tool_results_must_answer_an_earlier_call() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    messages = [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
    ]
    out = template_messages(messages)
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"a": 1, "b": 2}  # an object for the template
    with pytest.raises(InvalidRequestError, match="answers no tool call"):
        template_messages([*messages, {"role": "tool", "content": "x", "tool_call_id": "call_9"}])
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        template_messages(
            [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "a", "arguments": "{"}}]}]
        )


# ---------------------------------------------------------------- streaming


def test_auto_stream_sends_text_then_holds_from_the_call_marker() -> None:
    stream = ToolCallStream(ToolRequest(_tools(), "auto"), HermesParser())
    sent = ""
    for piece in [
        "Let me ",
        "check <tool",
        '_call>\n{"name": "add", ',
        '"arguments": {"a": 1, "b": 2}}\n</tool_call>',
    ]:
        content, calls = stream.feed(piece)
        assert calls == []
        sent += content
    assert sent == "Let me check "
    content, deltas = stream.finish()
    assert content == ""
    assert deltas[0]["index"] == 0 and deltas[0]["function"] == {"name": "add", "arguments": ""}
    assert deltas[0]["id"].startswith("call_") and deltas[0]["type"] == "function"
    assert json.loads(deltas[1]["function"]["arguments"]) == {"a": 1, "b": 2}


def test_auto_stream_gives_back_held_text_that_was_no_call() -> None:
    stream = ToolCallStream(ToolRequest(_tools(), "auto"), Llama3Parser())
    assert stream.feed('{"answer"') == ("", [])
    assert stream.finish() == ('{"answer"', [])


def test_named_stream_sends_argument_fragments_as_they_come() -> None:
    stream = ToolCallStream(ToolRequest(_tools(), "named", name="add"), HermesParser())
    _, first = stream.feed('{"a": ')
    assert first[0]["function"] == {"name": "add", "arguments": ""} and first[1]["function"] == {
        "arguments": '{"a": '
    }
    _, more = stream.feed("1}")
    assert more == [{"index": 0, "function": {"arguments": "1}"}}]
    stream.finish()
    assert stream.calls[0].arguments == '{"a": 1}'


# ---------------------------------------------------------------- chat surface, in process


@pytest.fixture(scope="module")
def client(tiny_models: dict[str, Path]) -> Iterator[TestClient]:
    runtime = make_runtime(
        tiny_models["qwen2-tools"], max_batch=8, max_model_len=2048, served_name="tiny-tools"
    )
    with TestClient(create_app(runtime)) as c:
        yield c


def _chat(client: TestClient, **body: Any) -> Any:
    return client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": _tools(), **body},
    )


def _check_calls(message: dict[str, Any], names: set[str]) -> None:
    assert message["tool_calls"], message
    for call in message["tool_calls"]:
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"]["name"] in names
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_required_and_named_tool_choice_give_valid_calls(client: TestClient, temperature: float) -> None:
    for choice, names in (
        ("required", {"get_weather", "add"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
    ):
        r = _chat(client, tool_choice=choice, temperature=temperature, max_tokens=150)
        assert r.status_code == 200, r.text
        choice_out = r.json()["choices"][0]
        assert choice_out["finish_reason"] == "tool_calls"
        assert choice_out["message"]["content"] is None
        _check_calls(choice_out["message"], names)


def test_no_parallel_calls_gives_exactly_one(client: TestClient) -> None:
    r = _chat(
        client, tool_choice="required", parallel_tool_calls=False, temperature=1.0, seed=4, max_tokens=150
    )
    assert len(r.json()["choices"][0]["message"]["tool_calls"]) == 1


def test_tool_choice_none_and_auto_answer_text(client: TestClient) -> None:
    for choice in ("none", "auto"):
        r = _chat(client, tool_choice=choice, max_tokens=8)
        assert r.status_code == 200
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_full_tool_round_trip_renders_through_the_template(client: TestClient) -> None:
    first = _chat(client, tool_choice="required", max_tokens=150).json()["choices"][0]["message"]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
        *[{"role": "tool", "tool_call_id": c["id"], "content": "18 C, sunny"} for c in first["tool_calls"]],
    ]
    r = _chat(client, messages=messages, max_tokens=8)
    assert r.status_code == 200, r.text
    bad = [*messages[:2], {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]
    r = _chat(client, messages=bad, max_tokens=8)
    assert r.status_code == 400 and "answers no tool call" in r.json()["error"]["message"]


def test_streamed_required_and_named_calls_arrive_as_openai_deltas(client: TestClient) -> None:
    for choice in ("required", {"type": "function", "function": {"name": "add"}}):
        r = _chat(client, tool_choice=choice, max_tokens=150, stream=True, temperature=0.9)
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        calls: dict[int, dict[str, Any]] = {}
        for event in events:
            for delta in event["choices"][0]["delta"].get("tool_calls", []):
                call = calls.setdefault(delta["index"], {"name": "", "arguments": ""})
                if "id" in delta:
                    assert delta["type"] == "function" and delta["function"]["arguments"] == ""
                    call["id"], call["name"] = delta["id"], delta["function"]["name"]
                call["arguments"] += delta["function"].get("arguments", "")
        assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert calls
        for call in calls.values():
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_a_model_without_tool_support_says_so(tiny_models: dict[str, Path]) -> None:
    runtime = make_runtime(tiny_models["qwen2"], max_batch=2)
    with TestClient(create_app(runtime)) as c:
        r = c.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "tools": _tools()}
        )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "This model doesn't support tool use."


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not in 'tools'"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strnig"}}}],
                "tool_choice": "required",
            },
            "tools[0].function.parameters' is malformed at #/type",
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": "y" * 70000}}}],
                "tool_choice": "required",
            },
            "65536 bytes",
        ),
    ],
)
def test_bad_tool_requests_are_a_clear_400(client: TestClient, body: dict[str, Any], needle: str) -> None:
    r = _chat(client, **body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


@pytest.mark.parametrize("step", [1, 3, 7, 200])
def test_required_stream_sends_each_call_as_it_is_written(step: int) -> None:
    text = (
        '[{"name": "add", "arguments": {"a": 1, "s": "x}\\"y", "l": [1, {"b": 2}]}}, '
        '{"name": "get_weather", "arguments": {}}]'
    )
    stream = ToolCallStream(ToolRequest(_tools(), "required"), HermesParser())
    deltas = []
    for i in range(0, len(text), step):
        content, calls = stream.feed(text[i : i + step])
        assert content == ""
        deltas += calls
    assert stream.finish() == ("", [])
    headers = [d for d in deltas if "id" in d]
    assert [(d["index"], d["function"]["name"]) for d in headers] == [(0, "add"), (1, "get_weather")]
    arguments = ["", ""]
    for d in deltas:
        arguments[d["index"]] += d["function"]["arguments"]
    assert [json.loads(a) for a in arguments] == [{"a": 1, "s": 'x}"y', "l": [1, {"b": 2}]}, {}]
    assert [c.name for c in stream.calls] == ["add", "get_weather"]


def test_mistral_models_get_nine_character_call_ids() -> None:
    tools = ToolRequest(_tools(), "named", name="add", short_ids=True)
    (call,) = tools.forced_calls('{"a": 1, "b": 2}')
    assert len(call.id) == 9 and call.id.isalnum()
    assert (
        ToolRequest(_tools(), "required")
        .forced_calls('[{"name": "add", "arguments": {}}]')[0]
        .id.startswith("call_")
    )
