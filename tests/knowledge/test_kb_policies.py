"""Built-in policies and knowledge bases: read-only reads them, invoke-only queries them unless scoped to models."""

from __future__ import annotations

import pytest

from outcrop.auth import policies

KB = "arn:aws:bedrock:us-east-1:000000000000:knowledge-base/ABCDEFGHIJ"
MODEL = "arn:aws:bedrock:us-east-1:000000000000:imported-model/abcdefghijkl"


@pytest.mark.parametrize(
    ("policy", "action", "allowed"),
    [
        (policies.admin(), "bedrock:CreateKnowledgeBase", True),
        (policies.admin(), "bedrock:StartIngestionJob", True),
        (policies.read_only(), "bedrock:GetKnowledgeBase", True),
        (policies.read_only(), "bedrock:ListIngestionJobs", True),
        (policies.read_only(), "bedrock:StartIngestionJob", False),
        (policies.read_only(), "bedrock:Retrieve", False),
        (policies.invoke_only(), "bedrock:Retrieve", True),
        (policies.invoke_only(), "bedrock:RetrieveAndGenerate", True),
        (policies.invoke_only(), "bedrock:RetrieveAndGenerateStream", True),
        (policies.invoke_only(), "bedrock:DeleteKnowledgeBase", False),
        (policies.invoke_only([MODEL]), "bedrock:Retrieve", False),
    ],
)
def test_built_in_policies_on_a_knowledge_base(policy: dict[str, object], action: str, allowed: bool) -> None:
    assert policies.evaluate(policy, action, KB) is allowed


def test_invoke_only_still_validates_as_a_stored_policy() -> None:
    assert policies.validate(policies.invoke_only()) == policies.invoke_only()
