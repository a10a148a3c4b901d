"""Bedrock runtime translation: body styles, the superset response, Converse mapping, event-stream frames."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from outcrop.api.runtime import eventstream
from outcrop.errors import InvalidRequestError
from outcrop.serving import bedrock_protocol as p

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
    buf.add_data(eventstream.exception("ModelStreamErrorException", "copy died", originalStatusCode=500))
    chunk, stop, error = list(buf)
    assert chunk.headers[":event-type"] == "chunk"
    assert json.loads(base64.b64decode(json.loads(chunk.payload)["bytes"])) == {"generation": "你好 😀"}
    assert json.loads(stop.payload) == {"stopReason": "end_turn"}
    assert error.headers[":exception-type"] == "ModelStreamErrorException"
    assert json.loads(error.payload)["message"] == "copy died"
