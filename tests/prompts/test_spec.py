"""A prompt's content: checked as the service model and Outcrop's rules say, and filled in safely."""

from __future__ import annotations

from typing import Any

import pytest

from outcrop.errors import InvalidRequestError
from outcrop.prompts import runtime
from outcrop.prompts.spec import PromptContent, check_content, check_variables, fill, placeholders, render
from outcrop.prompts.store import PromptVersion
from tests.prompts.builders import chat_variant, prompt_request, text_variant


def content(**overrides: Any) -> PromptContent:
    return check_content(PromptContent.model_validate(prompt_request(**overrides)))


def version(**overrides: Any) -> PromptVersion:
    return PromptVersion("ABCDEFGHIJ", "DRAFT", content(**overrides), 0.0, 0.0)


def test_placeholders_are_found_in_text_and_chat_templates_in_order() -> None:
    assert placeholders(content().variants[0]) == ["topic"]  # type: ignore[index]
    chat = content(variants=[chat_variant()]).variants[0]  # type: ignore[index]
    assert placeholders(chat) == ["topic", "audience"]


def test_a_placeholder_missing_from_input_variables_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequestError, match=r"does not declare topic.*\{\{topic\}\}"):
        content(variants=[text_variant(variables=())])


@pytest.mark.parametrize(
    ("variant", "words"),
    [
        (text_variant(templateType="CHAT"), "must set 'chat' for templateType CHAT"),
        (text_variant(modelId="anthropic.claude-v2"), "imported models only"),
        (text_variant(genAiResource={"agent": {"agentIdentifier": "x"}}), "serves no agents"),
        (text_variant(variables=("topic", "topic")), "declares topic more than once"),
    ],
)
def test_variants_that_cannot_be_served_are_refused_with_the_reason(
    variant: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        content(variants=[variant])


def test_default_variant_must_name_a_variant() -> None:
    with pytest.raises(InvalidRequestError, match="'nope', which is not a variant"):
        content(defaultVariant="nope")


def test_filling_is_one_pass_so_a_value_cannot_expand_another_variable() -> None:
    assert fill("{{a}} and {{b}}", {"a": "{{b}}", "b": "B"}) == "{{b}} and B"


def test_missing_and_extra_variables_are_named_together() -> None:
    variant = content(variants=[chat_variant()]).variants[0]  # type: ignore[index]
    with pytest.raises(InvalidRequestError) as caught:
        check_variables(variant, {"topic": "x", "colour": "red"}, "arn:p")
    assert "missing audience" in caught.value.message
    assert "not declared by the prompt: colour" in caught.value.message


def test_chat_render_fills_system_and_messages_and_drops_cache_points() -> None:
    variant = chat_variant()
    variant["templateConfiguration"]["chat"]["messages"][0]["content"].append(
        {"cachePoint": {"type": "default"}}
    )
    v = content(variants=[variant]).variants[0]  # type: ignore[index]
    r = render(v, {"topic": "lava", "audience": "kids"})
    assert r.system == ["You are terse. Audience: kids."]
    assert r.messages == [{"role": "user", "content": [{"text": "Write about lava for kids."}]}]


def test_converse_body_puts_the_prompt_first_and_appends_the_request_messages() -> None:
    appended = [
        {"role": "assistant", "content": [{"text": "ok"}]},
        {"role": "user", "content": [{"text": "more"}]},
    ]
    model, body = runtime.converse_body(
        "arn:p", version(), {"promptVariables": {"topic": {"text": "lava"}}, "messages": appended}
    )
    assert model == "chat"
    assert body["messages"][0] == {"role": "user", "content": [{"text": "Tell me about lava."}]}
    assert body["messages"][1:] == appended
    assert body["inferenceConfig"] == {"temperature": 0.0, "maxTokens": 8}
    assert "promptVariables" not in body


@pytest.mark.parametrize(
    "member", ["system", "inferenceConfig", "toolConfig", "additionalModelRequestFields"]
)
def test_converse_on_a_prompt_refuses_what_the_prompt_defines(member: str) -> None:
    with pytest.raises(InvalidRequestError, match=f"'{member}' cannot be sent with a prompt"):
        runtime.converse_body("arn:p", version(), {"promptVariables": {"topic": {"text": "x"}}, member: {}})


def test_invoke_body_of_a_text_prompt_is_a_llama_style_body() -> None:
    model, body = runtime.invoke_body(
        "arn:p", version(), {"promptVariables": {"topic": {"text": "lava"}}, "prompt": "ignored"}
    )
    assert (model, body) == ("chat", {"temperature": 0.0, "prompt": "Tell me about lava.", "max_gen_len": 8})


def test_invoke_body_of_a_chat_prompt_is_an_openai_chat_body() -> None:
    _, body = runtime.invoke_body(
        "arn:p",
        version(variants=[chat_variant()]),
        {"promptVariables": {"topic": {"text": "lava"}, "audience": {"text": "kids"}}},
    )
    assert body["messages"] == [
        {"role": "system", "content": "You are terse. Audience: kids."},
        {"role": "user", "content": "Write about lava for kids."},
    ]
    assert body["max_tokens"] == 8


def test_a_variant_without_a_model_cannot_run() -> None:
    with pytest.raises(InvalidRequestError, match="names no modelId"):
        runtime.invoke_body("arn:p", version(variants=[text_variant(modelId=None)]), {})


@pytest.mark.parametrize("bad", [{"topic": "lava"}, {"topic": {"text": 3}}, ["topic"]])
def test_malformed_prompt_variables_say_the_shape(bad: Any) -> None:
    with pytest.raises(InvalidRequestError, match="promptVariables"):
        runtime.invoke_body("arn:p", version(), {"promptVariables": bad})
