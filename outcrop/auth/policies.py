"""IAM-shaped policies: allow/deny statements of actions on resources; explicit deny wins.

    {"Statement": [{"Effect": "Allow", "Action": ["bedrock:InvokeModel"],
                    "Resource": ["arn:aws:bedrock:*:*:imported-model/*"]}]}

Actions and resources match with ``*`` wildcards (actions case-insensitively, as IAM does).
``evaluate`` is pure and table-tested.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from outcrop.errors import InvalidRequestError

INVOKE_ACTIONS = (
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
    "bedrock:Converse",
    "bedrock:ConverseStream",
    "bedrock:CountTokens",
    "bedrock:GetImportedModel",
    "bedrock:ListImportedModels",
)


def admin() -> dict[str, Any]:
    return {"Statement": [{"Effect": "Allow", "Action": ["*"], "Resource": ["*"]}]}


def read_only() -> dict[str, Any]:
    return {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["bedrock:Get*", "bedrock:List*", "outcrop:Get*", "outcrop:List*"],
                "Resource": ["*"],
            }
        ]
    }


def invoke_only(model_arns: list[str] | None = None) -> dict[str, Any]:
    resources = model_arns or ["arn:aws:bedrock:*:*:imported-model/*"]
    return {
        "Statement": [
            {"Effect": "Allow", "Action": list(INVOKE_ACTIONS), "Resource": resources},
            {"Effect": "Allow", "Action": ["bedrock:ListImportedModels"], "Resource": ["*"]},
        ]
    }


BUILT_IN = {"admin": admin, "read-only": read_only, "invoke-only": invoke_only}


def _as_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise InvalidRequestError(f"Policy {where} must be a string or a list of strings, not {value!r}.")


def validate(policy: Any) -> dict[str, Any]:
    """Check a policy document's shape; returns it normalised."""
    if (
        not isinstance(policy, dict)
        or not isinstance(policy.get("Statement"), list)
        or not policy["Statement"]
    ):
        raise InvalidRequestError(
            'A policy is {"Statement": [{"Effect": "Allow"|"Deny", "Action": [...], '
            '"Resource": [...]}, ...]}.'
        )
    statements = []
    for i, st in enumerate(policy["Statement"]):
        if not isinstance(st, dict) or st.get("Effect") not in ("Allow", "Deny"):
            raise InvalidRequestError(f"Statement[{i}].Effect must be 'Allow' or 'Deny'.")
        statements.append(
            {
                "Effect": st["Effect"],
                "Action": _as_list(st.get("Action"), f"Statement[{i}].Action"),
                "Resource": _as_list(st.get("Resource", "*"), f"Statement[{i}].Resource"),
            }
        )
    return {"Statement": statements}


def _matches(patterns: str | list[str], value: str, *, case_insensitive: bool) -> bool:
    if isinstance(patterns, str):  # IAM allows a single string where a list is expected
        patterns = [patterns]
    if case_insensitive:
        value = value.lower()
        patterns = [p.lower() for p in patterns]
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def evaluate(policy: dict[str, Any], action: str, resource: str) -> bool:
    """True when some statement allows ``action`` on ``resource`` and none denies it."""
    allowed = False
    for st in policy.get("Statement", []):
        if _matches(st.get("Action", []), action, case_insensitive=True) and _matches(
            st.get("Resource", "*"), resource, case_insensitive=False
        ):
            if st["Effect"] == "Deny":
                return False
            allowed = True
    return allowed
