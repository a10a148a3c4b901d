"""TGI / Messages API payloads <-> the copy contract."""

from __future__ import annotations

from typing import Any

import pytest

from outcrop.errors import InvalidRequestError
from outcrop.sagemaker.payloads import DEFAULT_MAX_NEW_TOKENS, PayloadStyle, from_copy, to_copy


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, {"prompt": "hi", "max_tokens": DEFAULT_MAX_NEW_TOKENS, "temperature": 0.0}),
        ({"max_new_tokens": 5, "do_sample": True}, {"prompt": "hi", "max_tokens": 5}),
        ({"temperature": 0.5}, {"prompt": "hi", "max_tokens": DEFAULT_MAX_NEW_TOKENS, "temperature": 0.5}),
        (
            {"temperature": 0.5, "do_sample": False},
            {"prompt": "hi", "max_tokens": DEFAULT_MAX_NEW_TOKENS, "temperature": 0.0},
        ),
        (
            {"top_k": 5, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 3, "stop": "\n"},
            {
                "prompt": "hi",
                "max_tokens": DEFAULT_MAX_NEW_TOKENS,
                "top_k": 5,
                "top_p": 0.9,
                "repetition_penalty": 1.2,
                "seed": 3,
                "stop": ["\n"],
            },
        ),
        (
            {"details": True, "max_new_tokens": 2},
            {"prompt": "hi", "max_tokens": 2, "temperature": 0.0, "logprobs": 0},
        ),
    ],
)
def test_tgi_parameters_become_copy_sampling_fields(
    parameters: dict[str, Any], expected: dict[str, Any]
) -> None:
    call = to_copy({"inputs": "hi", "parameters": parameters})
    assert (call.style, call.path, call.body) == (PayloadStyle.TGI, "/v1/completions", expected)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"inputs": 3}, "'inputs' is 3"),
        ({"inputs": []}, "'inputs' is []"),
        ({"inputs": "x", "parameters": []}, "'parameters'"),
        ({"inputs": "x", "parameters": {"top_p": 0}}, "parameters.top_p is 0"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 1.5}}, "parameters.max_new_tokens"),
        ({"inputs": "x", "parameters": {"do_sample": "yes"}}, "parameters.do_sample"),
        ({"inputs": "x", "parameters": {"stop": [""]}}, "parameters.stop"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"text": "x"}, "it has ['text']"),
        ("just a string", "it has str"),
    ],
)
def test_bad_bodies_name_the_field(body: Any, named: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_copy(body)
    assert named in caught.value.message


def test_messages_body_keeps_only_what_the_copy_takes() -> None:
    call = to_copy(
        {"messages": [{"role": "user", "content": "hi"}], "model": "tgi", "max_tokens": 3, "tools": None}
    )
    assert call.body == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def test_answers_come_back_as_generated_text_with_details_and_full_text() -> None:
    call = to_copy(
        {"inputs": ["a", "b"], "parameters": {"return_full_text": True, "details": True, "seed": 1}}
    )
    resp = {
        "choices": [
            {
                "index": 1,
                "text": "Y",
                "finish_reason": "length",
                "logprobs": {"tokens": ["Y"], "token_logprobs": [-0.5]},
            },
            {
                "index": 0,
                "text": "X",
                "finish_reason": "stop",
                "logprobs": {"tokens": ["X"], "token_logprobs": [-0.1]},
            },
        ],
        "usage": {"completion_tokens": 2},
    }
    answer = from_copy(call, resp)
    assert [a["generated_text"] for a in answer] == ["aX", "bY"]
    assert answer[0]["details"]["finish_reason"] == "eos_token"
    assert answer[1]["details"] == {
        "finish_reason": "length",
        "generated_tokens": 1,
        "seed": 1,
        "prefill": [],
        "tokens": [{"id": -1, "text": "Y", "logprob": -0.5, "special": False}],
    }
