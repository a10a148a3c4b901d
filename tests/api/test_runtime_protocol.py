"""Bedrock runtime translation: body styles, the superset response, Converse mapping, event-stream frames."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import botocore.session
import pytest
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser

from outcrop.api.bedrock.errors import bedrock_error
from outcrop.api.runtime import eventstream
from outcrop.errors import InvalidRequestError, OutcropError, all_error_classes
from outcrop.protocol import bedrock_runtime as p

COPY_COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "text": "hi there", "finish_reason": "length", "logprobs": None}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


@pytest.mark.parametrize(
    ("body", "style"),
    [
        ({"prompt": "x", "max_gen_len": 5}, p.InvokeStyle.BEDROCK_COMPLETION),
        ({"prompt": "x"}, p.InvokeStyle.BEDROCK_COMPLETION),
        ({"prompt": "x", "max_tokens": 5}, p.InvokeStyle.OPENAI_COMPLETION),
        ({"messages": [{"role": "user", "content": "x"}]}, p.InvokeStyle.CHAT),
    ],
)
def test_body_style_is_recognised(body: dict[str, Any], style: p.InvokeStyle) -> None:
    assert p.classify(body) is style


def test_a_body_without_prompt_or_messages_says_what_to_send() -> None:
    with pytest.raises(InvalidRequestError, match="neither 'prompt' nor 'messages'"):
        p.classify({"inputText": "x"})


def test_llama_style_body_maps_to_a_completion_with_its_parameters() -> None:
    path, body = p.invoke_to_copy(
        {
            "prompt": "hello",
            "max_gen_len": 7,
            "temperature": 0,
            "top_p": 0.9,
            "top_k": 5,
            "stop": "END",
            "junk": 1,
        },
        p.InvokeStyle.BEDROCK_COMPLETION,
    )
    assert path == "/v1/completions"
    assert body == {
        "prompt": "hello",
        "max_tokens": 7,
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 5,
        "stop": ["END"],
    }


def test_default_length_is_bedrocks_512() -> None:
    assert p.invoke_to_copy({"prompt": "x"}, p.InvokeStyle.BEDROCK_COMPLETION)[1]["max_tokens"] == 512


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": ""}, "'prompt'"),
        ({"prompt": 5}, "'prompt'"),
        ({"prompt": "x", "max_gen_len": "ten"}, "max_gen_len"),
        ({"prompt": "x", "max_gen_len": 0}, "max_gen_len"),
        ({"prompt": "x", "temperature": 9}, "temperature"),
        ({"prompt": "x", "stop": [1]}, "stop"),
        ({"prompt": "x", "temperature": math.nan}, "'temperature' is NaN"),
        ({"prompt": "x", "max_gen_len": math.inf}, "'max_gen_len' is Infinity"),
        ({"prompt": "x", "max_gen_len": 10**5000}, "'max_gen_len' is \\(a number too long to show\\)"),
        ({"prompt": "x", "top_p": "high"}, "'top_p'"),
    ],
)
def test_bad_parameters_are_named(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        p.invoke_to_copy(body, p.classify(body))


def test_superset_response_is_readable_by_every_client_style() -> None:
    out = p.completion_superset(COPY_COMPLETION)
    assert out["generation"] == out["outputs"][0]["text"] == out["choices"][0]["text"] == "hi there"
    assert out["prompt_token_count"] == 3 and out["generation_token_count"] == 2
    assert out["stop_reason"] == "length" and out["outputs"][0]["stop_reason"] == "length"
    assert out["usage"]["total_tokens"] == 5


def test_converse_request_becomes_a_chat_request() -> None:
    chat = p.converse_to_chat(
        {
            "system": [{"text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"text": "Hi"}, {"text": "!"}]}],
            "inferenceConfig": {"maxTokens": 9, "temperature": 0.5, "topP": 0.8, "stopSequences": ["\n"]},
            "additionalModelRequestFields": {"top_k": 4},
        }
    )
    assert chat == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["\n"],
        "top_k": 4,
    }


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "tool", "content": [{"text": "x"}]}], [{"role": "user", "content": [{"image": {}}]}]],
)
def test_unsupported_converse_input_is_a_validation_error(messages: list[Any]) -> None:
    with pytest.raises(InvalidRequestError):
        p.converse_to_chat({"messages": messages})


HI = [{"role": "user", "content": [{"text": "Hi"}]}]


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"inferenceConfig": {"maxTokens": "abc"}}, "inferenceConfig.maxTokens", "valid integer"),
        ({"inferenceConfig": {"maxTokens": [1]}}, "inferenceConfig.maxTokens", "valid integer"),
        ({"inferenceConfig": {"maxTokens": math.nan}}, "inferenceConfig.maxTokens", "valid integer"),
        ({"inferenceConfig": {"maxTokens": math.inf}}, "inferenceConfig.maxTokens", "valid integer"),
        ({"inferenceConfig": {"maxTokens": 2.5}}, "inferenceConfig.maxTokens", "valid integer"),
        ({"inferenceConfig": {"maxTokens": True}}, "inferenceConfig.maxTokens", "valid integer"),
        ({"inferenceConfig": {"maxTokens": 0}}, "inferenceConfig.maxTokens", "greater than or equal to 1"),
        ({"inferenceConfig": {"maxTokens": 10**5000}}, "inferenceConfig.maxTokens", "less than or equal"),
        ({"inferenceConfig": {"temperature": "hot"}}, "inferenceConfig.temperature", "valid number"),
        ({"inferenceConfig": {"temperature": 1.5}}, "inferenceConfig.temperature", "less than or equal to 1"),
        ({"inferenceConfig": {"temperature": math.nan}}, "inferenceConfig.temperature", "finite number"),
        ({"inferenceConfig": {"topP": {}}}, "inferenceConfig.topP", "valid number"),
        ({"inferenceConfig": {"topP": -0.1}}, "inferenceConfig.topP", "greater than or equal to 0"),
        ({"inferenceConfig": {"stopSequences": 5}}, "inferenceConfig.stopSequences", "valid list"),
        ({"inferenceConfig": {"stopSequences": "\n"}}, "inferenceConfig.stopSequences", "valid list"),
        ({"inferenceConfig": {"stopSequences": [""]}}, "inferenceConfig.stopSequences.0", "at least 1"),
        (
            {"inferenceConfig": {"stopSequences": ["x"] * 2501}},
            "inferenceConfig.stopSequences",
            "at most 2500",
        ),
        ({"inferenceConfig": [1]}, "inferenceConfig", "it must be an object like"),
        ({"inferenceConfig": "fast"}, "inferenceConfig", "it must be an object like"),
        ({"additionalModelRequestFields": [1]}, "additionalModelRequestFields", "JSON object"),
        ({"additionalModelRequestFields": {"temperature": "hot"}}, "temperature", "must be a number"),
        ({"messages": [{"role": "user", "content": [{"text": {"a": 1}}]}]}, "messages[0].content", "string"),
    ],
)
def test_every_wrong_converse_parameter_is_a_validation_error_naming_it(
    body: dict[str, Any], field: str, needle: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        p.converse_to_chat({"messages": HI, **body})
    assert info.value.param == field
    assert needle in info.value.message and f"'{field}'" in info.value.message


def test_converse_bounds_are_the_service_models() -> None:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    members = model.shape_for("InferenceConfiguration").members
    assert members["maxTokens"].metadata["min"] == 1
    assert members["temperature"].metadata["min"] == members["topP"].metadata["min"] == 0
    assert members["temperature"].metadata["max"] == members["topP"].metadata["max"] == 1
    assert members["stopSequences"].metadata["max"] == 2500
    assert set(members) == set(p.InferenceConfig.model_fields)


def test_a_converse_body_without_inference_config_gets_the_default_length() -> None:
    assert p.converse_to_chat({"messages": HI, "inferenceConfig": None})["max_tokens"] == p.DEFAULT_MAX_TOKENS


def test_chat_answer_becomes_a_converse_answer() -> None:
    out = p.chat_to_converse(
        {
            "choices": [{"message": {"role": "assistant", "content": "yo"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1},
        },
        latency_ms=12,
    )
    assert out == {
        "output": {"message": {"role": "assistant", "content": [{"text": "yo"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 4, "outputTokens": 1, "totalTokens": 5},
        "metrics": {"latencyMs": 12},
    }


def test_event_stream_frames_parse_with_botocore() -> None:
    buf = EventStreamBuffer()
    buf.add_data(eventstream.chunk({"generation": "你好 😀"}))
    buf.add_data(eventstream.event("messageStop", {"stopReason": "end_turn"}))
    buf.add_data(eventstream.exception("modelStreamErrorException", "copy died", originalStatusCode=500))
    chunk, stop, error = list(buf)
    assert chunk.headers[":event-type"] == "chunk"
    assert json.loads(base64.b64decode(json.loads(chunk.payload)["bytes"])) == {"generation": "你好 😀"}
    assert json.loads(stop.payload) == {"stopReason": "end_turn"}
    assert error.headers[":exception-type"] == "modelStreamErrorException"
    assert json.loads(error.payload)["message"] == "copy died"


class _Raw:
    def __init__(self, *frames: bytes) -> None:
        self.frames = frames

    def stream(self) -> Any:
        return iter(self.frames)


def _boto3_reads(operation: str, frame: bytes) -> tuple[str, str]:
    """(code, message) of the error botocore raises for ``frame`` in ``operation``'s stream."""
    op = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model(operation)
    stream = EventStream(_Raw(frame), op.get_event_stream_output(), EventStreamJSONParser(), operation)
    with pytest.raises(EventStreamError) as info:
        list(stream)
    error = info.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.mark.parametrize("operation", sorted(eventstream.STREAM_ERROR_MEMBERS))
def test_stream_error_members_are_the_service_models(operation: str) -> None:
    op = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model(operation)
    shape = op.get_event_stream_output()
    errors = {name for name, member in shape.members.items() if member.metadata.get("exception")}
    assert eventstream.STREAM_ERROR_MEMBERS[operation] == errors


@pytest.mark.parametrize("operation", sorted(eventstream.STREAM_ERROR_MEMBERS))
@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_stream_error_reaches_boto3_with_its_code_and_message(
    operation: str, cls: type[OutcropError]
) -> None:
    name, status = bedrock_error(cls.__new__(cls))
    code, message = _boto3_reads(operation, eventstream.error_frame(operation, name, "it went wrong", status))
    assert code == eventstream.error_member(operation, name) and message == "it went wrong"


@pytest.mark.parametrize(
    ("operation", "error", "member"),
    [
        ("InvokeModelWithResponseStream", "ModelErrorException", "modelStreamErrorException"),
        ("InvokeModelWithResponseStream", "ModelTimeoutException", "modelTimeoutException"),
        ("ConverseStream", "ModelTimeoutException", "modelStreamErrorException"),  # not in its shape
        ("ConverseStream", "ThrottlingException", "throttlingException"),
        ("ConverseStream", "ValidationException", "validationException"),
        ("ConverseStream", "ModelNotReadyException", "modelStreamErrorException"),
        ("InvokeModelWithResponseStream", "InternalServerException", "internalServerException"),
        ("InvokeModelWithResponseStream", "ServiceUnavailableException", "serviceUnavailableException"),
    ],
)
def test_each_error_rides_on_its_own_stream_member_or_the_stream_error(
    operation: str, error: str, member: str
) -> None:
    assert eventstream.error_member(operation, error) == member


@pytest.mark.parametrize(
    ("roles", "problem"),
    [
        (["user"], None),
        (["user", "assistant", "user"], None),
        (["user", "assistant"], None),  # a trailing assistant turn prefills the answer
        (["assistant", "user"], p.MUST_START_WITH_USER),
        (["assistant"], p.MUST_START_WITH_USER),
        (["user", "user"], p.MUST_ALTERNATE),
        (["user", "assistant", "assistant", "user"], p.MUST_ALTERNATE),
    ],
)
def test_converse_turns_must_start_with_user_and_alternate(roles: list[str], problem: str | None) -> None:
    assert p.turn_order_problem(roles) == problem


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason", "expected"),
    [
        ("stop", None, "end_turn"),  # the end-of-sequence token
        ("stop", "\n\n", "stop_sequence"),  # a stop string (vLLM names it)
        ("stop", 128009, "end_turn"),  # a stop token id is the model ending its turn
        ("length", None, "max_tokens"),
        (None, None, "end_turn"),
    ],
)
def test_converse_stop_reason_follows_what_ended_the_text(
    finish_reason: str | None, stop_reason: Any, expected: str
) -> None:
    assert p.converse_stop_reason(finish_reason, stop_reason) == expected


def test_a_chat_answer_ended_by_a_stop_string_is_a_stop_sequence() -> None:
    resp = {"choices": [{"message": {"content": "yo"}, "finish_reason": "stop", "stop_reason": "!"}]}
    assert p.chat_to_converse(resp, latency_ms=1)["stopReason"] == "stop_sequence"


def test_converse_tool_config_becomes_the_chat_bodys_tools() -> None:
    spec = {"name": "f", "inputSchema": {"json": {"type": "object"}}}
    chat = p.converse_to_chat(
        {"messages": HI, "toolConfig": {"tools": [{"toolSpec": spec}], "toolChoice": {"any": {}}}}
    )
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == "required"


def test_a_parsed_converse_request_is_typed() -> None:
    request = p.parse_converse({"messages": HI, "system": [{"text": "Be brief."}]})
    assert request.system == "Be brief." and [m.role for m in request.messages] == ["user"]
    assert request.inference.maxTokens is None


def test_invoke_messages_body_passes_top_logprobs_to_the_copy() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 3}
    path, copy_body = p.parse_invoke(body).to_copy()
    assert path == "/v1/chat/completions" and copy_body["top_logprobs"] == 3 and copy_body["logprobs"] is True


def test_prompt_bodies_leave_chat_only_parameters_out() -> None:
    _path, copy_body = p.parse_invoke({"prompt": "x", "top_logprobs": 3}).to_copy()
    assert "top_logprobs" not in copy_body


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": "json"}, "response_format"),
    ],
)
def test_malformed_invoke_tool_use_is_refused_naming_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        p.parse_invoke({"messages": [{"role": "user", "content": "x"}], **extra})
    assert info.value.param == param


def test_invoke_messages_body_passes_tools_and_structure_to_the_copy() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    extra = {"tools": tools, "tool_choice": "required", "response_format": {"type": "json_object"}}
    _path, copy_body = p.parse_invoke({"messages": [{"role": "user", "content": "x"}], **extra}).to_copy()
    assert {k: copy_body[k] for k in extra} == extra


def test_prompt_bodies_pass_structured_output_but_not_tools() -> None:
    body = {"prompt": "x", "guided_choice": ["a", "b"], "tools": [{"type": "function"}]}
    _path, copy_body = p.parse_invoke(body).to_copy()
    assert copy_body["guided_choice"] == ["a", "b"] and "tools" not in copy_body


@pytest.mark.parametrize(
    "extra", [{}, {"response_format": {"type": "text"}}, {"tools": []}, {"tool_choice": None}]
)
def test_neutral_tool_fields_are_accepted(extra: dict[str, Any]) -> None:
    p.parse_invoke({"messages": [{"role": "user", "content": "x"}], **extra})


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        ([{"role": "user"}], "a 'user' message needs 'content'"),
        ([{"role": "system", "content": None}], "a 'system' message needs 'content'"),
        ([{"role": "robot", "content": "x"}], "must be one of"),
        (["hi"], "must be an object"),
        ([{"role": "user", "content": 5}], "a string or a list of content parts"),
    ],
)
def test_chat_messages_are_checked_before_a_copy_is_asked(messages: Any, needle: str) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        p.parse_invoke({"messages": messages})


def test_an_assistant_turn_may_have_no_content() -> None:
    p.parse_invoke({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]})
