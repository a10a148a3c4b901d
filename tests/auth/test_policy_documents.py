"""Policy documents mean what they say: NotAction/NotResource per IAM, and no field silently dropped."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from outcrop.auth import policies
from outcrop.errors import InvalidRequestError

MODEL_A = "arn:aws:bedrock:us-east-1:000000000000:imported-model/aaaaaaaaaaaa"
MODEL_B = "arn:aws:bedrock:us-east-1:000000000000:imported-model/bbbbbbbbbbbb"
ALICE = "arn:aws:iam::000000000000:user/alice"


def allow(**statement: Any) -> dict[str, Any]:
    return {"Statement": [{"Effect": "Allow", **statement}]}


@pytest.mark.parametrize(
    ("policy", "action", "resource", "allowed"),
    [
        # NotResource: every resource but the ones named.
        (allow(Action="bedrock:*", NotResource=MODEL_B), "bedrock:InvokeModel", MODEL_A, True),
        (allow(Action="bedrock:*", NotResource=MODEL_B), "bedrock:InvokeModel", MODEL_B, False),
        (allow(Action="bedrock:*", NotResource=[MODEL_B]), "bedrock:ListImportedModels", "*", True),
        # NotAction: every action but the ones named (case-insensitively).
        (allow(NotAction="bedrock:Delete*", Resource="*"), "bedrock:GetImportedModel", MODEL_A, True),
        (allow(NotAction="bedrock:Delete*", Resource="*"), "bedrock:deleteimportedmodel", MODEL_A, False),
        (allow(NotAction=["bedrock:*"]), "outcrop:ListKeys", ALICE, True),  # no Resource: every resource
        # A Deny with NotResource denies everything outside the named resources.
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "bedrock:Invoke*", "NotResource": MODEL_A},
                ]
            },
            "bedrock:InvokeModel",
            MODEL_B,
            False,
        ),
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "bedrock:Invoke*", "NotResource": MODEL_A},
                ]
            },
            "bedrock:InvokeModel",
            MODEL_A,
            True,
        ),
        # A single statement object (IAM allows it) and ? wildcards; [ is no wildcard.
        (
            {"Statement": {"Effect": "Allow", "Action": "bedrock:Get?mportedModel"}},
            "bedrock:GetImportedModel",
            MODEL_A,
            True,
        ),
        (allow(Action="*", Resource="arn:[a]*"), "bedrock:GetImportedModel", "arn:a", False),
        # The built-in policies and the admin-only actions.
        (policies.read_only(), "outcrop:ListKeys", ALICE, False),
        (policies.read_only(), "outcrop:ListCopies", "*", True),
        (policies.read_only(), policies.ALL_JOBS_ACTION, "*", False),
        (policies.read_only(), policies.COPY_URLS_ACTION, "*", False),
        (policies.invoke_only(), policies.LIST_KEYS_ACTION, ALICE, False),
        (policies.admin(), policies.COPY_URLS_ACTION, "*", True),
        # A Condition that slipped into the store (never through validate) never widens an Allow...
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "Condition": {"Bool": {"x": "y"}}}]},
            "bedrock:InvokeModel",
            MODEL_A,
            False,
        ),
        # ...and never narrows a Deny.
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "*"},
                    {"Effect": "Deny", "Action": "*", "Resource": MODEL_A, "Condition": {"Bool": {"x": "y"}}},
                ]
            },
            "bedrock:InvokeModel",
            MODEL_A,
            False,
        ),
    ],
)
def test_statements_apply_per_iam(policy: dict[str, Any], action: str, resource: str, allowed: bool) -> None:
    assert policies.evaluate(policy, action, resource) is allowed


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (
            allow(Action="*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
            "Statement[0].Condition",
        ),
        (allow(Action="*", Principal="*"), "Statement[0].Principal"),
        (allow(Action="*", Resources="*"), "'Resources'"),  # a typo is no silent "every resource"
        (allow(Action="*", Resource="*", NotResource=MODEL_A), "both Resource and NotResource"),
        (allow(Action="*", NotAction="bedrock:Delete*"), "both Action and NotAction"),
        (allow(Resource="*"), "needs an Action"),
        (allow(Action=[]), "Statement[0].Action"),
        (allow(Action="*", NotResource=""), "Statement[0].NotResource"),
        (allow(Action="*", Sid=3), "Statement[0].Sid"),
        ({"Statement": [{"Effect": "allow", "Action": "*"}]}, "'Allow' or 'Deny'"),
        ({"Statement": [], "Version": "2012-10-17"}, "non-empty"),
        ({"Version": "2099-01-01", **allow(Action="*")}, "Version"),
        ({"Statements": [{"Effect": "Allow", "Action": "*"}]}, "Statement"),
        ({**allow(Action="*"), "Extra": 1}, "'Extra'"),
        ("admin-ish", "Statement"),
    ],
)
def test_unsupported_or_unknown_fields_are_rejected_by_name(document: Any, named: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        policies.validate(document)
    assert named in info.value.message


def test_condition_rejection_says_how_to_scope_instead() -> None:
    with pytest.raises(InvalidRequestError, match=r"does not evaluate conditions.*Resource or NotResource"):
        policies.validate(allow(Action="*", Condition={"StringEquals": {"aws:PrincipalArn": ALICE}}))


def test_an_accepted_document_round_trips_exactly() -> None:
    document = {
        "Version": "2012-10-17",
        "Id": "ops",
        "Statement": [
            {"Sid": "All", "Effect": "Allow", "NotAction": "bedrock:Delete*", "NotResource": [MODEL_B]},
            {"Sid": "NoB", "Effect": "Deny", "Action": ["bedrock:Invoke*"], "Resource": MODEL_B},
        ],
    }
    original = copy.deepcopy(document)
    validated = policies.validate(document)
    assert validated == original and json.dumps(validated) == json.dumps(original)
    assert validated is not document
