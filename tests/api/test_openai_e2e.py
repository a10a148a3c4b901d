"""The ``openai`` Python client, unchanged (base_url only), against imported models."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import TEST_API_KEY, ServingServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(serving_server: ServingServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serving_server.url}/v1", api_key=TEST_API_KEY, max_retries=0)


def test_models_are_listed(client: openai.OpenAI, serving_server: ServingServer) -> None:
    assert {m.id for m in client.models.list()} >= {serving_server.chat, serving_server.plain}


def test_completion_and_chat(client: openai.OpenAI, serving_server: ServingServer) -> None:
    completion = client.completions.create(
        model=serving_server.chat, prompt="Once upon", max_tokens=6, temperature=0
    )
    assert completion.usage is not None and completion.usage.completion_tokens <= 6
    chat = client.chat.completions.create(
        model=serving_server.chat, messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"


def test_streamed_chat_matches_the_whole_answer_and_reports_usage(
    client: openai.OpenAI, serving_server: ServingServer
) -> None:
    messages = [{"role": "user", "content": "Say something 😀"}]
    whole = client.chat.completions.create(
        model=serving_server.chat, messages=messages, max_tokens=12, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=serving_server.chat,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )


def test_errors_are_openai_error_objects(client: openai.OpenAI, serving_server: ServingServer) -> None:
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="chat template"):
        client.chat.completions.create(
            model=serving_server.plain, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=serving_server.chat, prompt="x", max_tokens=10**6)
    assert "context" in str(info.value)


@pytest.mark.parametrize(("prompts", "n"), [(2_000, 1), (40, 64)])
def test_a_request_no_copy_could_ever_take_is_a_400_naming_the_limit_not_a_503_forever(
    client: openai.OpenAI, serving_server: ServingServer, prompts: int, n: int
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(
            model=serving_server.chat, prompt=[f"p{i}" for i in range(prompts)], n=n, max_tokens=1
        )
    message = info.value.message
    assert f"{prompts * n} choices" in message and "--max-queued" in message and "at most" in message
