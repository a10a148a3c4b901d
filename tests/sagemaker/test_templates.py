"""Sandboxed pre/post-processing templates."""

from __future__ import annotations

import pytest

from outcrop.errors import InvalidRequestError, ModelFailedError
from outcrop.sagemaker.templates import Processing, check_template


def processing(**overrides: str) -> Processing:
    return Processing("m", **overrides)


def test_text_output_becomes_inputs_and_keeps_the_parameters() -> None:
    body = processing(input_template="Question: {{ question }}").apply_input(
        {"question": "why?", "parameters": {"max_new_tokens": 3}}
    )
    assert body == {"inputs": "Question: why?", "parameters": {"max_new_tokens": 3}}


def test_json_output_is_the_request_body() -> None:
    template = '{"messages": [{"role": "user", "content": {{ q | tojson }}}], "max_tokens": 2}'
    assert processing(input_template=template).apply_input({"q": 'say "hi"'}) == {
        "messages": [{"role": "user", "content": 'say "hi"'}],
        "max_tokens": 2,
    }


def test_a_missing_field_is_a_validation_error_naming_it() -> None:
    with pytest.raises(InvalidRequestError, match="'context' is undefined"):
        processing(input_template="{{ question }} {{ context }}").apply_input({"question": "q"})


def test_the_sandbox_refuses_internals() -> None:
    with pytest.raises(InvalidRequestError, match="sandbox forbids"):
        processing(input_template="{{ body.__class__.__mro__ }}").apply_input({})


def test_the_payload_cannot_be_mutated() -> None:
    with pytest.raises(InvalidRequestError, match="sandbox forbids"):
        processing(input_template="{{ body.update({'x': 1}) }}").apply_input({})


def test_a_failing_template_is_a_model_error() -> None:
    with pytest.raises(ModelFailedError, match="ZeroDivisionError"):
        processing(output_template="{{ 1 // 0 }}").apply_output({}, [{"generated_text": "x"}], {})


def test_output_template_sees_the_answer_usage_and_request() -> None:
    out = processing(
        output_template="{{ body.id }}:{{ generated_text }}:{{ usage.completion_tokens }}"
    ).apply_output({"id": 7}, [{"generated_text": "ok"}], {"completion_tokens": 1})
    assert out == b"7:ok:1"


def test_without_templates_everything_passes_through() -> None:
    assert processing().apply_input({"inputs": "x"}) == {"inputs": "x"}
    assert processing().apply_output({}, [], {}) is None


def test_syntax_errors_are_found_at_create_model() -> None:
    with pytest.raises(InvalidRequestError, match="not a valid Jinja2 template"):
        check_template("OUTCROP_INPUT_TEMPLATE", "{% if %}")
