"""A batch record's retries follow the exception classes' ``retryable``; its errorCode their Bedrock status."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from outcrop import errors
from outcrop.batch.inputs import Record
from outcrop.batch.records import CONVERSE, INVOKE_MODEL, RecordCall
from outcrop.serving.service import ColdStartPolicy, Serving

COMPLETION = {"choices": [{"text": "ok", "finish_reason": "stop"}], "usage": {"prompt_tokens": 1}}


class ScriptedServing:
    """Stands in for Serving at RecordCall's constructor: answers each post with the next outcome."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.posts = 0

    async def post(self, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        self.posts += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return cast(dict[str, Any], outcome)


def run(serving: ScriptedServing, attempts: int = 3) -> tuple[dict[str, Any], bool]:
    call = RecordCall(
        serving=cast(Serving, serving),
        model_key="m",
        model_name="m",
        chat_capable=True,
        invocation_type=INVOKE_MODEL,
        cold_start=ColdStartPolicy(wait=True, max_wait_seconds=1),
        deadline_seconds=5,
        max_attempts=attempts,
    )
    outcome = asyncio.run(call.run(Record(0, 1, "r1", {"prompt": "x", "max_gen_len": 2})))
    return outcome.line, outcome.ok


def test_a_retryable_error_is_tried_again_and_can_succeed() -> None:
    serving = ScriptedServing(errors.ThrottlingError("busy", retry_after_seconds=0.01), COMPLETION)
    line, ok = run(serving)
    assert ok and serving.posts == 2 and line["modelOutput"]["generation"] == "ok"


@pytest.mark.parametrize(
    "error",
    [
        errors.ConflictError("the model is being deleted"),
        errors.QuotaExceededError("full", quota="records", limit=1),
        errors.AccessDeniedError("not yours"),
        errors.InvalidRequestError("bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_non_retryable_error_fails_the_record_at_once_with_its_bedrock_status(
    error: errors.OutcropError,
) -> None:
    serving = ScriptedServing(error, COMPLETION)
    line, ok = run(serving)
    assert not ok and serving.posts == 1
    assert line["error"] == {"errorCode": error.bedrock_status, "errorMessage": error.message}
    assert line["error"]["errorCode"] < 500


def test_a_retryable_error_that_persists_fails_after_the_last_attempt() -> None:
    busy = errors.ThrottlingError("busy", retry_after_seconds=0.01)
    serving = ScriptedServing(busy, busy)
    line, ok = run(serving, attempts=2)
    assert not ok and serving.posts == 2 and line["error"]["errorCode"] == 429


class RecordingServing(ScriptedServing):
    """A ScriptedServing that keeps the bodies the records sent to the copy."""

    def __init__(self, *outcomes: Any) -> None:
        super().__init__(*outcomes)
        self.bodies: list[dict[str, Any]] = []

    async def post(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.bodies.append(args[2])
        return await super().post(*args, **kwargs)


def test_a_converse_record_with_a_tool_config_calls_the_copy_with_tools_and_answers_tool_use() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    answer = {
        "choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    serving = RecordingServing(answer)
    record_call = RecordCall(
        serving=cast(Serving, serving),
        model_key="m",
        model_name="m",
        chat_capable=True,
        invocation_type=CONVERSE,
        cold_start=ColdStartPolicy(wait=True, max_wait_seconds=1),
        deadline_seconds=5,
        max_attempts=1,
    )
    spec = {"name": "weather", "inputSchema": {"json": {"type": "object"}}}
    model_input = {
        "messages": [{"role": "user", "content": [{"text": "Weather in Oslo?"}]}],
        "toolConfig": {"tools": [{"toolSpec": spec}], "toolChoice": {"any": {}}},
    }
    outcome = asyncio.run(record_call.run(Record(0, 1, "r1", model_input)))
    assert outcome.ok and serving.bodies[0]["tool_choice"] == "required"
    output = outcome.line["modelOutput"]
    assert output["stopReason"] == "tool_use"
    assert output["output"]["message"]["content"] == [
        {"toolUse": {"toolUseId": "c1", "name": "weather", "input": {"city": "Oslo"}}}
    ]


def test_a_record_with_a_malformed_tool_choice_is_an_error_line_not_a_call() -> None:
    serving = RecordingServing(COMPLETION)
    record_call = RecordCall(
        serving=cast(Serving, serving),
        model_key="m",
        model_name="m",
        chat_capable=True,
        invocation_type=INVOKE_MODEL,
        cold_start=ColdStartPolicy(wait=True, max_wait_seconds=1),
        deadline_seconds=5,
        max_attempts=1,
    )
    body = {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}
    outcome = asyncio.run(record_call.run(Record(0, 1, "r1", body)))
    assert not outcome.ok and serving.posts == 0
    assert outcome.line["error"]["errorCode"] == 400 and "no tools" in outcome.line["error"]["errorMessage"]
