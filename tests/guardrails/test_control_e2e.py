"""The guardrail control plane through boto3 ``bedrock`` against a real server: every operation, the
shapes of botocore's model, immutable versions, and bad policies refused with nothing half-created."""

from __future__ import annotations

import uuid
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import ServerProcess, boto3_client
from tests.shapes import check_output, record_raw_bodies

pytestmark = pytest.mark.e2e


def _name(prefix: str = "gr") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def guardrail_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": _name(),
        "description": "words and PII",
        "blockedInputMessaging": "Sorry, I cannot answer that.",
        "blockedOutputsMessaging": "Sorry, the answer was blocked.",
        "wordPolicyConfig": {
            "wordsConfig": [{"text": "project zephyr"}],
            "managedWordListsConfig": [{"type": "PROFANITY"}],
        },
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": [
                {"type": "EMAIL", "action": "ANONYMIZE"},
                {"type": "US_SOCIAL_SECURITY_NUMBER", "action": "BLOCK"},
            ],
            "regexesConfig": [{"name": "ORDER_ID", "pattern": r"ORD-\d{6}", "action": "ANONYMIZE"}],
        },
        "topicPolicyConfig": {
            "topicsConfig": [
                {
                    "name": "Investment advice",
                    "definition": "Recommendations about investing money in stocks, bonds or funds.",
                    "examples": ["Which stocks should I buy?"],
                    "type": "DENY",
                }
            ]
        },
    }
    config.update(overrides)
    return config


@pytest.fixture
def bedrock(shared_server: ServerProcess) -> Any:
    return boto3_client("bedrock", shared_server.url)


def test_guardrail_lifecycle_create_get_update_version_list_delete(bedrock: Any) -> None:
    raw = record_raw_bodies(bedrock)
    config = guardrail_config()
    created = bedrock.create_guardrail(**config)
    check_output(bedrock, "CreateGuardrail", raw["CreateGuardrail"])
    gid, arn = created["guardrailId"], created["guardrailArn"]
    assert created["version"] == "DRAFT" and arn.endswith(f":guardrail/{gid}")
    assert arn.startswith("arn:aws:bedrock:us-east-1:")

    got = bedrock.get_guardrail(guardrailIdentifier=arn)
    check_output(bedrock, "GetGuardrail", raw["GetGuardrail"])
    assert got["status"] == "READY" and got["version"] == "DRAFT" and got["name"] == config["name"]
    assert got["blockedInputMessaging"] == "Sorry, I cannot answer that."
    assert got["blockedOutputsMessaging"] == "Sorry, the answer was blocked."
    assert got["wordPolicy"]["words"][0]["text"] == "project zephyr"
    assert got["wordPolicy"]["managedWordLists"][0]["type"] == "PROFANITY"
    pii = {e["type"]: e for e in got["sensitiveInformationPolicy"]["piiEntities"]}
    assert pii["EMAIL"]["inputAction"] == pii["EMAIL"]["outputAction"] == "ANONYMIZE"
    assert got["topicPolicy"]["topics"][0]["name"] == "Investment advice"

    version = bedrock.create_guardrail_version(guardrailIdentifier=gid, description="first")
    check_output(bedrock, "CreateGuardrailVersion", raw["CreateGuardrailVersion"])
    assert version == {**version, "guardrailId": gid, "version": "1"}

    # The draft changes; version 1 does not.
    updated = bedrock.update_guardrail(
        guardrailIdentifier=gid,
        **{**guardrail_config(name=config["name"]), "blockedInputMessaging": "Changed."},
    )
    check_output(bedrock, "UpdateGuardrail", raw["UpdateGuardrail"])
    assert updated["version"] == "DRAFT"
    assert bedrock.get_guardrail(guardrailIdentifier=gid)["blockedInputMessaging"] == "Changed."
    v1 = bedrock.get_guardrail(guardrailIdentifier=gid, guardrailVersion="1")
    assert v1["version"] == "1" and v1["blockedInputMessaging"] == "Sorry, I cannot answer that."
    assert v1["description"] == "first"
    assert bedrock.create_guardrail_version(guardrailIdentifier=gid)["version"] == "2"

    listed = bedrock.list_guardrails()
    check_output(bedrock, "ListGuardrails", raw["ListGuardrails"])
    mine = [g for g in listed["guardrails"] if g["id"] == gid]
    assert [g["version"] for g in mine] == ["DRAFT"]
    versions = bedrock.list_guardrails(guardrailIdentifier=arn)["guardrails"]
    assert [g["version"] for g in versions] == ["DRAFT", "1", "2"]
    page = bedrock.list_guardrails(guardrailIdentifier=gid, maxResults=2)
    assert len(page["guardrails"]) == 2 and "nextToken" in page
    rest = bedrock.list_guardrails(guardrailIdentifier=gid, maxResults=2, nextToken=page["nextToken"])
    assert [g["version"] for g in rest["guardrails"]] == ["2"] and "nextToken" not in rest

    bedrock.delete_guardrail(guardrailIdentifier=gid, guardrailVersion="1")
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_guardrail(guardrailIdentifier=gid, guardrailVersion="1")
    assert bedrock.get_guardrail(guardrailIdentifier=gid, guardrailVersion="2")["version"] == "2"
    bedrock.delete_guardrail(guardrailIdentifier=arn)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException) as info:
        bedrock.get_guardrail(guardrailIdentifier=gid)
    assert gid in info.value.response["Error"]["Message"]
    assert all(g["id"] != gid for g in bedrock.list_guardrails()["guardrails"])


def test_a_duplicate_name_is_a_conflict_and_a_retried_token_returns_the_same_guardrail(bedrock: Any) -> None:
    config = guardrail_config()
    first = bedrock.create_guardrail(**config, clientRequestToken="token-" + uuid.uuid4().hex)
    with pytest.raises(bedrock.exceptions.ConflictException) as info:
        bedrock.create_guardrail(**config)
    assert config["name"] in info.value.response["Error"]["Message"]
    token = "retry-" + uuid.uuid4().hex
    again = guardrail_config()
    a = bedrock.create_guardrail(**again, clientRequestToken=token)
    b = bedrock.create_guardrail(**again, clientRequestToken=token)
    assert a["guardrailId"] == b["guardrailId"] != first["guardrailId"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {
                "sensitiveInformationPolicyConfig": {
                    "regexesConfig": [{"name": "bad", "pattern": "ORD-(\\d+", "action": "BLOCK"}]
                }
            },
            "regexesConfig.0.pattern",
        ),
        (
            {
                "sensitiveInformationPolicyConfig": {
                    "regexesConfig": [{"name": "e", "pattern": "x*", "action": "BLOCK"}]
                }
            },
            "matches the empty string",
        ),
        (
            {
                "sensitiveInformationPolicyConfig": {
                    "piiEntitiesConfig": [{"type": "CA_HEALTH_NUMBER", "action": "BLOCK"}]
                }
            },
            "CA_HEALTH_NUMBER",
        ),
        (
            {"wordPolicyConfig": {"wordsConfig": [{"text": f"w{i}"} for i in range(10_001)]}},
            "limit is 10,000",
        ),
        (
            {
                "contentPolicyConfig": {
                    "filtersConfig": [{"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"}]
                }
            },
            "safety model",
        ),
        (
            {"contextualGroundingPolicyConfig": {"filtersConfig": [{"type": "GROUNDING", "threshold": 0.5}]}},
            "contextualGroundingPolicyConfig is not supported",
        ),
        (
            {
                "tags": [{"key": "outcrop:safety-model", "value": "no-such-model"}],
                "contentPolicyConfig": {
                    "filtersConfig": [{"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"}]
                },
            },
            "no-such-model",
        ),
    ],
)
def test_bad_policies_are_validation_errors_naming_the_problem_and_nothing_is_created(
    bedrock: Any, overrides: dict[str, Any], named: str
) -> None:
    config = guardrail_config(**overrides)
    with pytest.raises(bedrock.exceptions.ValidationException) as info:
        bedrock.create_guardrail(**config)
    assert named in info.value.response["Error"]["Message"]
    assert all(g["name"] != config["name"] for g in bedrock.list_guardrails()["guardrails"])


def test_a_bad_update_leaves_the_draft_as_it_was(bedrock: Any) -> None:
    config = guardrail_config()
    gid = bedrock.create_guardrail(**config)["guardrailId"]
    bad = guardrail_config(
        name=config["name"],
        sensitiveInformationPolicyConfig={
            "regexesConfig": [{"name": "r", "pattern": "[", "action": "BLOCK"}]
        },
    )
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.update_guardrail(guardrailIdentifier=gid, **bad)
    got = bedrock.get_guardrail(guardrailIdentifier=gid)
    assert got["sensitiveInformationPolicy"]["regexes"][0]["name"] == "ORDER_ID"


def test_unknown_guardrails_and_versions_are_not_found_and_bad_versions_invalid(bedrock: Any) -> None:
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_guardrail(guardrailIdentifier="zzzzzzzzzzzz")
    gid = bedrock.create_guardrail(**guardrail_config())["guardrailId"]
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException) as info:
        bedrock.get_guardrail(guardrailIdentifier=gid, guardrailVersion="7")
    assert "CreateGuardrailVersion" in info.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        bedrock.create_guardrail_version(guardrailIdentifier="zzzzzzzzzzzz")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.delete_guardrail(guardrailIdentifier=gid, guardrailVersion="3")
