"""boto3 ``bedrock-runtime`` with ``modelId`` = a prompt ARN, against real copies of a tiny model."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import boto3
import pytest

from tests.conftest import ServingServer, api, boto3_client
from tests.prompts.builders import chat_variant, prompt_request, text_variant

pytestmark = pytest.mark.e2e

TOPIC = {"topic": {"text": "volcanoes"}}


@pytest.fixture(scope="module")
def agent(serving_server: ServingServer) -> Any:
    return boto3_client("bedrock-agent", serving_server.url)


@pytest.fixture(scope="module")
def runtime(serving_server: ServingServer) -> Any:
    return boto3_client("bedrock-runtime", serving_server.url)


@pytest.fixture
def prompt(agent: Any) -> dict[str, Any]:
    made: dict[str, Any] = agent.create_prompt(**prompt_request(name=f"p-{uuid.uuid4().hex[:12]}"))
    return made


def converse_text(runtime: Any, model_id: str, **extra: Any) -> tuple[str, dict[str, int]]:
    answer = runtime.converse(modelId=model_id, **extra)
    return answer["output"]["message"]["content"][0]["text"], answer["usage"]


def test_a_version_keeps_answering_the_same_after_the_draft_changes(
    agent: Any, runtime: Any, prompt: dict[str, Any]
) -> None:
    v1 = agent.create_prompt_version(promptIdentifier=prompt["id"])["arn"]
    before, usage_before = converse_text(runtime, v1, promptVariables=TOPIC)
    agent.update_prompt(
        promptIdentifier=prompt["id"],
        **prompt_request(
            name=prompt["name"],
            variants=[
                text_variant(
                    text="Write a much longer and rather different essay on {{topic}} today, please."
                )
            ],
        ),
    )
    after, usage_after = converse_text(runtime, v1, promptVariables=TOPIC)
    assert (after, usage_after["inputTokens"]) == (before, usage_before["inputTokens"])
    _, draft_usage = converse_text(runtime, prompt["arn"], promptVariables=TOPIC)
    assert draft_usage["inputTokens"] > usage_before["inputTokens"]  # the DRAFT is the new, longer text


def test_converse_appends_the_requests_messages_after_the_prompts(
    runtime: Any, prompt: dict[str, Any]
) -> None:
    _, alone = converse_text(runtime, prompt["arn"], promptVariables=TOPIC)
    more = [
        {"role": "assistant", "content": [{"text": "Which part?"}]},
        {"role": "user", "content": [{"text": "The lava, in detail."}]},
    ]
    _, longer = converse_text(runtime, prompt["arn"], promptVariables=TOPIC, messages=more)
    assert longer["inputTokens"] > alone["inputTokens"]


def test_converse_stream_on_a_prompt(runtime: Any, prompt: dict[str, Any]) -> None:
    events = list(runtime.converse_stream(modelId=prompt["arn"], promptVariables=TOPIC)["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    whole, _ = converse_text(runtime, prompt["arn"], promptVariables=TOPIC)
    assert text == whole  # greedy (the prompt says temperature 0)
    assert events[-1]["metadata"]["usage"]["outputTokens"] <= 8  # the prompt's maxTokens


def test_invoke_model_on_text_and_chat_prompts(agent: Any, runtime: Any, prompt: dict[str, Any]) -> None:
    response = runtime.invoke_model(modelId=prompt["arn"], body=json.dumps({"promptVariables": TOPIC}))
    body = json.loads(response["body"].read())
    assert body["generation"] == body["outputs"][0]["text"] and body["generation_token_count"] <= 8
    chat = agent.create_prompt(**prompt_request(name=prompt["name"] + "-chat", variants=[chat_variant()]))
    variables = {**TOPIC, "audience": {"text": "children"}}
    response = runtime.invoke_model(modelId=chat["arn"], body=json.dumps({"promptVariables": variables}))
    answer = json.loads(response["body"].read())
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 8
    stream = runtime.invoke_model_with_response_stream(
        modelId=prompt["arn"], body=json.dumps({"promptVariables": TOPIC})
    )
    chunks = [json.loads(e["chunk"]["bytes"]) for e in stream["body"]]
    assert "".join(c["generation"] for c in chunks) == body["generation"]


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({}, "missing topic"),
        ({**TOPIC, "colour": {"text": "red"}}, "not declared by the prompt: colour"),
        ({"colour": {"text": "red"}}, "missing topic; not declared by the prompt: colour"),
    ],
)
def test_missing_or_extra_variables_are_named(
    runtime: Any, prompt: dict[str, Any], variables: dict[str, Any], words: str
) -> None:
    with pytest.raises(runtime.exceptions.ValidationException, match=words):
        runtime.converse(modelId=prompt["arn"], promptVariables=variables)
    with pytest.raises(runtime.exceptions.ValidationException, match=words):
        runtime.invoke_model(modelId=prompt["arn"], body=json.dumps({"promptVariables": variables}))


def test_unknown_prompts_and_versions_and_prompt_defined_fields(runtime: Any, prompt: dict[str, Any]) -> None:
    unknown = prompt["arn"].rsplit("/", 1)[0] + "/NOPROMPT01"
    with pytest.raises(runtime.exceptions.ResourceNotFoundException, match="NOPROMPT01"):
        runtime.converse(modelId=unknown, promptVariables=TOPIC)
    with pytest.raises(runtime.exceptions.ResourceNotFoundException, match="has no version 9"):
        runtime.converse(modelId=prompt["arn"] + ":9", promptVariables=TOPIC)
    with pytest.raises(runtime.exceptions.ValidationException, match="'inferenceConfig' cannot be sent"):
        runtime.converse(modelId=prompt["arn"], promptVariables=TOPIC, inferenceConfig={"maxTokens": 3})


def test_a_prompt_is_no_side_door_to_a_model_the_caller_may_not_invoke(
    serving_server: ServingServer, prompt: dict[str, Any]
) -> None:
    def client_for(name: str, policy: dict[str, Any]) -> Any:
        key = api.post(
            f"{serving_server.url}/outcrop/keys",
            json={"name": f"{name}-{uuid.uuid4().hex[:6]}", "policy": policy},
        ).json()
        return boto3.client(
            "bedrock-runtime",
            endpoint_url=serving_server.url,
            region_name="us-east-1",
            aws_access_key_id=key["accessKeyId"],
            aws_secret_access_key=key["secretAccessKey"],
        )

    prompts_only = client_for(
        "prompts-only",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["bedrock:Converse"],
                    "Resource": ["arn:aws:bedrock:*:*:prompt/*"],
                }
            ]
        },
    )
    with pytest.raises(prompts_only.exceptions.AccessDeniedException, match=r"the model prompt .* runs on"):
        prompts_only.converse(modelId=prompt["arn"], promptVariables=TOPIC)
    models_only = client_for("models-only", "invoke-only")  # type: ignore[arg-type]
    with pytest.raises(
        models_only.exceptions.AccessDeniedException, match=re.escape(f"resource: {prompt['arn']}")
    ):
        models_only.converse(modelId=prompt["arn"], promptVariables=TOPIC)
    both = client_for(
        "both",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["bedrock:Converse"],
                    "Resource": ["arn:aws:bedrock:*:*:prompt/*", "arn:aws:bedrock:*:*:imported-model/*"],
                }
            ]
        },
    )
    assert (
        both.converse(modelId=prompt["arn"], promptVariables=TOPIC)["output"]["message"]["role"]
        == "assistant"
    )
