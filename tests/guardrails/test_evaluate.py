"""One guardrail applied to text, in-process: actions per direction, masking, NONE reporting, FULL scope."""

from __future__ import annotations

from typing import Any

import pytest

from outcrop.guardrails.evaluate import CompiledGuardrail, ContentFinding
from outcrop.guardrails.policy import CreateGuardrailRequest, parse_guardrail_config


def compiled(safety_model: str | None = None, **policies: Any) -> CompiledGuardrail:
    body = CreateGuardrailRequest.model_validate(
        {"name": "g", "blockedInputMessaging": "IN", "blockedOutputsMessaging": "OUT", **policies}
    )
    return CompiledGuardrail("gid", "DRAFT", "arn", parse_guardrail_config(body, safety_model))


PII = {
    "sensitiveInformationPolicyConfig": {
        "piiEntitiesConfig": [
            {"type": "EMAIL", "action": "ANONYMIZE", "outputAction": "BLOCK"},
            {"type": "PHONE", "action": "NONE"},
            {"type": "US_SOCIAL_SECURITY_NUMBER", "action": "BLOCK", "inputEnabled": False},
        ]
    }
}


@pytest.mark.parametrize(
    ("source", "text", "action", "output"),
    [
        ("INPUT", "mail a@example.com", "GUARDRAIL_INTERVENED", "mail {EMAIL}"),
        ("OUTPUT", "mail a@example.com", "GUARDRAIL_INTERVENED", "OUT"),  # outputAction BLOCK
        ("INPUT", "call (206) 555-0100", "NONE", "call (206) 555-0100"),  # detected, action NONE
        ("INPUT", "ssn 536-22-8726", "NONE", "ssn 536-22-8726"),  # not enabled for input
        ("OUTPUT", "ssn 536-22-8726", "GUARDRAIL_INTERVENED", "OUT"),
    ],
)
def test_actions_follow_each_direction(source: str, text: str, action: str, output: str) -> None:
    outcome = compiled(**PII).assess([text], source)  # type: ignore[arg-type]
    assert outcome.action == action and outcome.outputs == [output]


def test_a_none_action_is_reported_but_changes_nothing() -> None:
    outcome = compiled(**PII).assess(["call (206) 555-0100"], "INPUT")
    assert outcome.assessment["sensitiveInformationPolicy"]["piiEntities"] == [
        {"match": "(206) 555-0100", "type": "PHONE", "action": "NONE", "detected": True}
    ]
    assert outcome.interventions == []


def test_masking_keeps_each_block_and_block_wins_over_masking() -> None:
    g = compiled(**PII, wordPolicyConfig={"wordsConfig": [{"text": "zephyr"}]})
    masked = g.assess(["a@example.com and b@example.org", "plain"], "INPUT")
    assert masked.outputs == ["{EMAIL} and {EMAIL}", "plain"] and masked.anonymized
    blocked = g.assess(["a@example.com", "zephyr"], "INPUT")
    assert blocked.blocked and blocked.outputs == ["IN"]
    assert ("wordPolicy", "CUSTOM_WORD", "BLOCKED") in blocked.interventions


def test_full_scope_lists_topics_and_filters_not_found() -> None:
    g = compiled(
        "guard",
        topicPolicyConfig={
            "topicsConfig": [{"name": "Cooking", "definition": "recipes and cooking", "type": "DENY"}]
        },
        contentPolicyConfig={
            "filtersConfig": [{"type": "HATE", "inputStrength": "HIGH", "outputStrength": "NONE"}]
        },
    )
    outcome = g.assess(["hello"], "INPUT", full=True, content_findings=[])
    assert outcome.assessment["topicPolicy"]["topics"] == [
        {"name": "Cooking", "type": "DENY", "action": "NONE", "detected": False}
    ]
    assert outcome.assessment["contentPolicy"]["filters"][0]["detected"] is False
    flagged = g.assess(["hello"], "INPUT", content_findings=[ContentFinding("HATE")])
    assert flagged.blocked and flagged.interventions == [("contentPolicy", "HATE", "BLOCKED")]
    assert g.content_filters_for("OUTPUT") == []  # outputStrength NONE


def test_usage_counts_units_of_1000_characters_per_configured_policy() -> None:
    usage = compiled(**PII).assess(["x" * 1500], "INPUT").assessment["invocationMetrics"]["usage"]
    assert usage["sensitiveInformationPolicyFreeUnits"] == 2 and usage["wordPolicyUnits"] == 0
