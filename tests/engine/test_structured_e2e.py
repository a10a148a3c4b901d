"""Structured outputs and tool calls through a real worker process (engine core in its own
process) driven by the OpenAI SDK and LangChain's ChatOpenAI: every constrained answer of the
random-weight model parses and validates, alone and inside a busy batch, streamed and not."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.engine.conftest import WorkerProcess
from tests.engine.test_tools import ADD, SCHEMAS, TOOLS, WEATHER

pytestmark = pytest.mark.e2e

MODEL = "tiny-tools"


@pytest.fixture(scope="module")
def worker(tiny_models: dict[str, Path]) -> Iterator[WorkerProcess]:
    w = WorkerProcess(
        tiny_models["qwen2-tools"], "--served-name", MODEL, "--max-model-len", "2048", "--max-batch", "16"
    )
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def client(worker: WorkerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _ask(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], **extra}


def _schema_format(schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


class Forecast(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)
    windy: bool


def test_response_format_json_schema_validates_streamed_and_not(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(**_ask(response_format=_schema_format(WEATHER), max_tokens=120))
    jsonschema.validate(json.loads(done.choices[0].message.content or ""), WEATHER)
    stream = client.chat.completions.create(
        **_ask(response_format=_schema_format(WEATHER), max_tokens=120, stream=True, temperature=1.0)
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), WEATHER)


def test_sdk_parse_returns_the_pydantic_object(client: openai.OpenAI) -> None:
    parsed = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Forecast?"}],
        response_format=Forecast,
        max_tokens=120,
    )
    forecast = parsed.choices[0].message.parsed
    assert isinstance(forecast, Forecast) and 1 <= forecast.days <= 7


def test_constrained_requests_inside_a_busy_batch_all_validate(client: openai.OpenAI) -> None:
    results: dict[str, Any] = {}

    def plain(i: int) -> None:
        out = client.chat.completions.create(**_ask(max_tokens=40, temperature=1.0, stream=True))
        results[f"plain{i}"] = "".join(c.choices[0].delta.content or "" for c in out if c.choices)

    def constrained(i: int) -> None:
        if i % 2:
            out = client.chat.completions.create(
                **_ask(response_format=_schema_format(WEATHER), max_tokens=100, temperature=1.0)
            )
            results[f"json{i}"] = json.loads(out.choices[0].message.content or "")
        else:
            out = client.chat.completions.create(
                **_ask(tools=TOOLS, tool_choice="required", max_tokens=120, temperature=1.0)
            )
            results[f"tool{i}"] = out.choices[0].message.tool_calls

    threads = [threading.Thread(target=plain, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=constrained, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 16, sorted(results)
    for key, value in results.items():
        if key.startswith("json"):
            jsonschema.validate(value, WEATHER)
        elif key.startswith("tool"):
            assert value
            for call in value:
                jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_and_named_tool_calls_through_the_sdk(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "add"}}
    for choice in ("required", named):
        out = client.chat.completions.create(**_ask(tools=TOOLS, tool_choice=choice, max_tokens=120))
        assert out.choices[0].finish_reason == "tool_calls"
        calls = out.choices[0].message.tool_calls or []
        assert calls and all(c.type == "function" for c in calls)
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    stream = client.chat.completions.create(
        **_ask(tools=TOOLS, tool_choice=named, max_tokens=120, stream=True)
    )
    arguments, finish = "", None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            arguments += delta.function.arguments or "" if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), ADD)


def test_tool_round_trip_and_errors_in_the_sdk_shape(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(**_ask(tools=TOOLS, tool_choice="required", max_tokens=120))
    message = first.choices[0].message
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        message.model_dump(exclude_none=True),
        *[{"role": "tool", "tool_call_id": c.id, "content": "18 C"} for c in message.tool_calls or []],
    ]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=8)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    with pytest.raises(openai.BadRequestError, match="not in 'tools'"):
        client.chat.completions.create(
            **_ask(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
        )
    with pytest.raises(openai.BadRequestError, match="#/properties/a/type"):
        client.chat.completions.create(
            **_ask(
                response_format=_schema_format({"type": "object", "properties": {"a": {"type": "strnig"}}})
            )
        )
    with pytest.raises(openai.BadRequestError, match="65536 bytes"):
        client.chat.completions.create(**_ask(response_format=_schema_format({"x": "y" * 70_000})))


def test_langchain_chat_openai_binds_tools_and_structured_output(worker: WorkerProcess) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        base_url=f"{worker.base_url}/v1", api_key="unused", model=MODEL, max_tokens=120, max_retries=0
    )
    reply = llm.bind_tools(TOOLS, tool_choice="add").invoke("What is 2 + 3?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "add"
    jsonschema.validate(reply.tool_calls[0]["args"], ADD)
    forecast = llm.with_structured_output(Forecast, method="json_schema").invoke("Forecast for Oslo?")
    assert isinstance(forecast, Forecast)
