"""IAM-shaped policy evaluation: tables of cases."""

from __future__ import annotations

import pytest

from outcrop.auth import policies
from outcrop.errors import InvalidRequestError

MODEL_A = "arn:aws:bedrock:us-east-1:000000000000:imported-model/aaaaaaaaaaaa"
MODEL_B = "arn:aws:bedrock:us-east-1:000000000000:imported-model/bbbbbbbbbbbb"


@pytest.mark.parametrize(
    ("policy", "action", "resource", "allowed"),
    [
        (policies.admin(), "bedrock:DeleteImportedModel", MODEL_A, True),
        (policies.invoke_only(), "bedrock:InvokeModel", MODEL_A, True),
        (policies.invoke_only(), "bedrock:invokemodel", MODEL_A, True),  # actions are case-insensitive
        (policies.invoke_only(), "bedrock:CreateModelImportJob", "*", False),
        (policies.invoke_only(), "bedrock:DeleteImportedModel", MODEL_A, False),
        (policies.invoke_only([MODEL_A]), "bedrock:Converse", MODEL_A, True),
        (policies.invoke_only([MODEL_A]), "bedrock:Converse", MODEL_B, False),
        (policies.invoke_only([MODEL_A]), "bedrock:ListImportedModels", "*", True),
        (policies.read_only(), "bedrock:GetModelImportJob", "*", True),
        (policies.read_only(), "bedrock:InvokeModel", MODEL_A, False),
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "bedrock:Delete*", "Resource": MODEL_A},
                ]
            },
            "bedrock:DeleteImportedModel",
            MODEL_A,
            False,
        ),
        ({"Statement": []}, "bedrock:InvokeModel", MODEL_A, False),
    ],
)
def test_evaluate(policy: dict, action: str, resource: str, allowed: bool) -> None:
    assert policies.evaluate(policy, action, resource) is allowed


@pytest.mark.parametrize(
    "document",
    [
        None,
        {},
        {"Statement": []},
        {"Statement": [{"Effect": "Maybe", "Action": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": 5}]},
    ],
)
def test_malformed_policies_are_rejected(document: object) -> None:
    with pytest.raises(InvalidRequestError):
        policies.validate(document)
