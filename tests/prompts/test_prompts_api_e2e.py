"""boto3 ``bedrock-agent`` Prompt management against a real server: every operation, answers
checked against botocore's output shapes, clear errors, nothing half-made, restarts survived."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ServerProcess, api, boto3_client
from tests.prompts.builders import chat_variant, prompt_request, text_variant
from tests.shapes import check_output, record_raw_bodies

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


def agent_client(url: str, **credentials: str) -> tuple[Any, dict[str, Any]]:
    if credentials:
        import boto3

        client = boto3.client(
            "bedrock-agent",
            endpoint_url=url,
            region_name="us-east-1",
            **credentials,  # type: ignore[arg-type]
        )
    else:
        client = boto3_client("bedrock-agent", url)
    return client, record_raw_bodies(client)


def test_every_operation_answers_in_the_service_models_shapes(server: ServerProcess) -> None:
    agent, raw = agent_client(server.url)
    made = agent.create_prompt(**prompt_request(), tags={"team": "docs"})
    assert made["version"] == "DRAFT" and made["arn"].endswith(f":prompt/{made['id']}")
    assert made["variants"][0]["templateConfiguration"]["text"]["inputVariables"] == [{"name": "topic"}]
    pid = made["id"]
    version = agent.create_prompt_version(promptIdentifier=pid, description="v one")
    assert version["version"] == "1" and version["arn"] == f"{made['arn']}:1"
    assert version["description"] == "v one"
    by_arn = agent.get_prompt(promptIdentifier=version["arn"])
    assert by_arn["version"] == "1"
    assert agent.get_prompt(promptIdentifier=pid, promptVersion="1")["arn"] == version["arn"]
    updated = agent.update_prompt(
        promptIdentifier=made["arn"], **prompt_request(name="explain-v2", variants=[chat_variant()])
    )
    assert updated["name"] == "explain-v2" and updated["variants"][0]["templateType"] == "CHAT"
    assert agent.get_prompt(promptIdentifier=pid)["name"] == "explain-v2"
    assert agent.get_prompt(promptIdentifier=pid, promptVersion="1")["name"] == "explain"  # frozen
    meta = agent.get_prompt(promptIdentifier=pid, includedData="METADATA_ONLY")
    assert "variants" not in meta
    summaries = agent.list_prompts()["promptSummaries"]
    assert [(s["id"], s["version"]) for s in summaries] == [(pid, "DRAFT")]
    versions = agent.list_prompts(promptIdentifier=pid)["promptSummaries"]
    assert [s["version"] for s in versions] == ["DRAFT", "1"]
    pages = list(
        agent.get_paginator("list_prompts").paginate(promptIdentifier=pid, PaginationConfig={"PageSize": 1})
    )
    assert [s["version"] for p in pages for s in p["promptSummaries"]] == ["DRAFT", "1"]
    assert agent.delete_prompt(promptIdentifier=pid, promptVersion="1")["version"] == "1"
    assert agent.delete_prompt(promptIdentifier=pid)["id"] == pid
    for operation in (
        "CreatePrompt",
        "GetPrompt",
        "UpdatePrompt",
        "ListPrompts",
        "DeletePrompt",
        "CreatePromptVersion",
    ):
        check_output(agent, operation, raw[operation])
    with pytest.raises(agent.exceptions.ResourceNotFoundException):
        agent.get_prompt(promptIdentifier=pid)


def test_unknown_prompts_and_versions_are_resource_not_found(server: ServerProcess) -> None:
    agent, _ = agent_client(server.url)
    pid = agent.create_prompt(**prompt_request())["id"]
    with pytest.raises(agent.exceptions.ResourceNotFoundException, match="Prompt 'NOPROMPT01' was not found"):
        agent.get_prompt(promptIdentifier="NOPROMPT01")
    with pytest.raises(agent.exceptions.ResourceNotFoundException, match="has no version 4"):
        agent.get_prompt(promptIdentifier=pid, promptVersion="4")
    with pytest.raises(agent.exceptions.ResourceNotFoundException, match="has no version 4"):
        agent.delete_prompt(promptIdentifier=pid, promptVersion="4")
    with pytest.raises(agent.exceptions.ResourceNotFoundException):
        agent.create_prompt_version(promptIdentifier="NOPROMPT01")
    with pytest.raises(agent.exceptions.ResourceNotFoundException):
        agent.update_prompt(promptIdentifier="NOPROMPT01", name="x")
    with pytest.raises(agent.exceptions.ValidationException, match="prompt id"):
        agent.get_prompt(promptIdentifier="not-an-id")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"variants": [text_variant(variables=())]}, "does not declare topic"),
        ({"variants": [text_variant(), text_variant(name="second")]}, "variants"),
        (
            {"variants": [text_variant(modelId="anthropic.claude-3-haiku-20240307-v1:0")]},
            "imported models only",
        ),
        ({"variants": [text_variant(templateType="CHAT")]}, "must set 'chat'"),
        ({"defaultVariant": "other"}, "not a variant of this prompt"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_bad_prompts_are_validation_errors_and_create_nothing(
    server: ServerProcess, overrides: dict[str, Any], words: str
) -> None:
    agent, _ = agent_client(server.url)
    with pytest.raises(agent.exceptions.ValidationException, match=words):
        agent.create_prompt(**prompt_request(**overrides))
    assert agent.list_prompts()["promptSummaries"] == []


def test_a_taken_name_is_a_conflict(server: ServerProcess) -> None:
    agent, _ = agent_client(server.url)
    agent.create_prompt(**prompt_request())
    with pytest.raises(agent.exceptions.ConflictException, match="already exists"):
        agent.create_prompt(**prompt_request())
    other = agent.create_prompt(**prompt_request(name="other"))
    with pytest.raises(agent.exceptions.ConflictException):
        agent.update_prompt(promptIdentifier=other["id"], **prompt_request())
    assert agent.get_prompt(promptIdentifier=other["id"])["name"] == "other"


def test_prompts_and_versions_survive_a_restart(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    agent, _ = agent_client(server.url)
    pid = agent.create_prompt(**prompt_request())["id"]
    agent.create_prompt_version(promptIdentifier=pid)
    agent.update_prompt(promptIdentifier=pid, **prompt_request(description="changed"))
    server.stop()
    again = start_server(data_dir=server.data_dir)
    agent, _ = agent_client(again.url)
    assert agent.get_prompt(promptIdentifier=pid)["description"] == "changed"
    assert agent.get_prompt(promptIdentifier=pid, promptVersion="1")["description"] == "Explains a topic"
    assert agent.create_prompt_version(promptIdentifier=pid)["version"] == "2"


def test_policies_cover_prompts_and_changes_are_audited(server: ServerProcess) -> None:
    key = api.post(f"{server.url}/outcrop/keys", json={"name": "reader", "policy": "read-only"}).json()
    admin, _ = agent_client(server.url)
    pid = admin.create_prompt(**prompt_request())["id"]
    reader, _ = agent_client(
        server.url, aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"]
    )
    assert reader.get_prompt(promptIdentifier=pid)["id"] == pid
    with pytest.raises(
        reader.exceptions.AccessDeniedException, match=f"bedrock:DeletePrompt on resource: .*prompt/{pid}"
    ):
        reader.delete_prompt(promptIdentifier=pid)
    with pytest.raises(reader.exceptions.AccessDeniedException, match="bedrock:CreatePrompt"):
        reader.create_prompt(**prompt_request(name="sneaky"))
    records = [
        json.loads(line) for line in (server.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    assert any(r["outcome"] == "allowed" and r["action"] == "bedrock:CreatePrompt" for r in records)
    assert any(
        r["outcome"] == "denied" and r["action"] == "bedrock:DeletePrompt" and r["resource"].endswith(pid)
        for r in records
    )
