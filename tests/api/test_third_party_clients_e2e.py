"""Issue 14's client list, the third-party part: LangChain and LiteLLM through the real server.

Each client is the released library, pointed at the server on loopback with the test
credentials; nothing reaches the network (LiteLLM reads its bundled cost map and sends no
telemetry; LangSmith tracing stays off). What they branch on is asserted as they see it:
LiteLLM's ContextWindowExceededError from OpenAI's context-length 400, and a wrong secret key
as Bedrock's 403 InvalidSignatureException (LiteLLM calls a 403 PermissionDeniedError).

LangChain's Bedrock classes cannot infer a provider from an imported model's name or ARN, so
the tests pass ``provider="meta"`` (the tiny chat model is a Llama), as a user would.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY, ServingServer

# Before litellm is imported: otherwise it fetches its model cost map over the network at import.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
os.environ.setdefault("LANGSMITH_TRACING", "false")

litellm = pytest.importorskip("litellm")
langchain_aws = pytest.importorskip("langchain_aws")
langchain_openai = pytest.importorskip("langchain_openai")

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
PROMPT = "Tell me a story"


@pytest.fixture(scope="module", autouse=True)
def _litellm_stays_offline() -> None:
    litellm.telemetry = False
    litellm.num_retries = 0


def _aws(serving_server: ServingServer, secret: str = TEST_SECRET_ACCESS_KEY) -> dict[str, Any]:
    return {
        "endpoint_url": serving_server.url,
        "region_name": REGION,
        "aws_access_key_id": TEST_ACCESS_KEY_ID,
        "aws_secret_access_key": secret,
    }


def _litellm_aws(serving_server: ServingServer, secret: str = TEST_SECRET_ACCESS_KEY) -> dict[str, Any]:
    return {
        "aws_access_key_id": TEST_ACCESS_KEY_ID,
        "aws_secret_access_key": secret,
        "aws_region_name": REGION,
        "aws_bedrock_runtime_endpoint": serving_server.url,
    }


# LangChain


def test_langchain_chat_bedrock_converse_invokes_an_imported_model(serving_server: ServingServer) -> None:
    chat = langchain_aws.ChatBedrockConverse(
        model=serving_server.chat, provider="meta", max_tokens=8, temperature=0, **_aws(serving_server)
    )
    answer = chat.invoke(PROMPT)
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0


def test_langchain_chat_bedrock_converse_streams_an_imported_model(serving_server: ServingServer) -> None:
    chat = langchain_aws.ChatBedrockConverse(
        model=serving_server.chat, provider="meta", max_tokens=8, temperature=0, **_aws(serving_server)
    )
    chunks = list(chat.stream(PROMPT))
    text = "".join(c.content if isinstance(c.content, str) else c.text for c in chunks)
    assert len(chunks) > 1 and text


def test_langchain_chat_bedrock_invokes_an_imported_model_by_arn(serving_server: ServingServer) -> None:
    chat = langchain_aws.ChatBedrock(
        model_id=serving_server.chat_arn,
        provider="meta",
        model_kwargs={"max_gen_len": 8, "temperature": 0},
        **_aws(serving_server),
    )
    answer = chat.invoke(PROMPT)
    assert isinstance(answer.content, str) and answer.content


def test_langchain_bedrock_llm_completes_with_an_imported_model_by_arn(serving_server: ServingServer) -> None:
    llm = langchain_aws.BedrockLLM(
        model_id=serving_server.chat_arn,
        provider="meta",
        model_kwargs={"max_gen_len": 8, "temperature": 0},
        **_aws(serving_server),
    )
    assert llm.invoke(PROMPT)


def test_langchain_chat_openai_invokes_and_streams_through_v1(serving_server: ServingServer) -> None:
    chat = langchain_openai.ChatOpenAI(
        model=serving_server.chat,
        base_url=f"{serving_server.url}/v1",
        api_key=TEST_API_KEY,
        max_tokens=8,
        temperature=0,
        max_retries=0,
    )
    assert chat.invoke(PROMPT).content
    assert "".join(str(c.content) for c in chat.stream(PROMPT))


# LiteLLM


def test_litellm_bedrock_converse_route_completes(serving_server: ServingServer) -> None:
    answer = litellm.completion(
        model=f"bedrock/converse/{serving_server.chat}",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        **_litellm_aws(serving_server),
    )
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens > 0


def test_litellm_bedrock_converse_route_streams(serving_server: ServingServer) -> None:
    chunks = litellm.completion(
        model=f"bedrock/converse/{serving_server.chat}",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        stream=True,
        **_litellm_aws(serving_server),
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text


def test_litellm_openai_route_completes(serving_server: ServingServer) -> None:
    answer = litellm.completion(
        model=f"openai/{serving_server.chat}",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        api_base=f"{serving_server.url}/v1",
        api_key=TEST_API_KEY,
    )
    assert answer.choices[0].message.content


def test_litellm_over_long_prompt_on_the_openai_route_is_context_window_exceeded(
    serving_server: ServingServer,
) -> None:
    with pytest.raises(litellm.ContextWindowExceededError) as info:
        litellm.completion(
            model=f"openai/{serving_server.chat}",
            messages=[{"role": "user", "content": "word " * 5000}],
            max_tokens=8,
            api_base=f"{serving_server.url}/v1",
            api_key=TEST_API_KEY,
        )
    assert "maximum context length" in str(info.value)


def test_litellm_wrong_secret_key_is_bedrocks_signature_error(serving_server: ServingServer) -> None:
    # Bedrock answers a bad signature with 403 InvalidSignatureException; LiteLLM maps 403 this way
    with pytest.raises(litellm.PermissionDeniedError) as info:
        litellm.completion(
            model=f"bedrock/converse/{serving_server.chat}",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=8,
            **_litellm_aws(serving_server, secret="not-the-secret"),
        )
    assert info.value.status_code == 403
    assert "Check your AWS Secret Access Key" in str(info.value)
