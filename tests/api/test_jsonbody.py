"""Request JSON is parsed with bounds: what Python's json would turn into a 500 is a 400 naming the limit."""

from __future__ import annotations

from typing import Any

import pytest

from outcrop.api import jsonbody
from outcrop.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "more than 64 levels deep"),  # RecursionError in json
        (b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}", "more than 64 levels deep"),  # parses, but too deep
        (b'{"seed": ' + b"9" * 5_000 + b"}", "integer of 5,000 digits"),  # CPython's 4,300-digit limit
        (b'{"seed": -' + b"9" * 65 + b"}", "limit is 64 digits"),
        (b'{"temperature": 1e999}', "too large to represent"),
        (b'{"temperature": 0.' + b"1" * 100 + b"}", "written with 102 characters"),
        (b'{"temperature": NaN}', "NaN, which is not JSON"),
        (b'{"temperature": -Infinity}', "-Infinity, which is not JSON"),
        (b'{"prompt": "a\\ud800b"}', "'prompt' holds an unpaired UTF-16 surrogate (\\ud800)"),
        (b'{"messages": [{"content": "\\udfff"}]}', "'messages[0].content' holds an unpaired"),
        (b'{"\\ud800": 1}', "unpaired UTF-16 surrogate"),
        (b'{"a": ', "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
    ],
)
def test_bodies_python_json_would_choke_on_are_validation_errors_naming_the_limit(
    raw: bytes, needle: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        jsonbody.loads(raw)
    assert needle in info.value.message


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b'{"a": ' + b"[" * 63 + b"]" * 63 + b"}", {"a": jsonbody.loads(b"[" * 63 + b"]" * 63)}),
        (b'{"seed": 18446744073709551615}', {"seed": 2**64 - 1}),
        (b'{"t": 0.7, "n": -1.5e-3}', {"t": 0.7, "n": -1.5e-3}),
        (b'{"emoji": "\\ud83d\\ude00"}', {"emoji": "😀"}),  # a valid pair is one character
    ],
)
def test_ordinary_bodies_parse_as_json_does(raw: bytes, parsed: Any) -> None:
    assert jsonbody.loads(raw) == parsed


def test_the_error_names_where_the_json_came_from() -> None:
    with pytest.raises(InvalidRequestError, match=r"input\.invokeModel\.body nests"):
        jsonbody.loads(b"[" * 2_000 + b"]" * 2_000, where="input.invokeModel.body")
