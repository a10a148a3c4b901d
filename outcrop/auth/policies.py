"""IAM-shaped policies: allow/deny statements of actions on resources; explicit deny wins.

    {"Version": "2012-10-17",
     "Statement": [{"Sid": "App", "Effect": "Allow", "Action": ["bedrock:InvokeModel"],
                    "Resource": ["arn:aws:bedrock:*:*:imported-model/*"]}]}

A statement applies to a request when its action matches (``Action``: one pattern matches;
``NotAction``: no pattern matches) and its resource matches (``Resource`` / ``NotResource``
likewise; neither means every resource). Patterns use ``*`` and ``?`` wildcards; actions match
case-insensitively, resources case-sensitively, as IAM does. A request is allowed when some
statement allows it and none denies it.

A policy is a security document, so nothing in it is ever dropped or guessed at: ``validate``
rejects any key it does not evaluate (``Condition``, ``Principal``, typos like ``Resources``),
naming the field and the fix, and accepted documents are stored exactly as given. ``Condition``
is rejected rather than evaluated: none of its keys would be honoured, so a statement with one
would allow more than it says. Scope a key with ``Resource``/``NotResource`` instead.

Admin business (checked per item by the handlers, granted by ``admin`` and by no other
built-in policy; see :data:`ADMIN_ONLY_ACTIONS`):

- ``outcrop:ListKeys`` on another principal's ARN: see that principal's key in ``GET
  /outcrop/keys`` (everyone sees their own).
- ``outcrop:AccessAllModelInvocationJobs``: see and stop every principal's batch jobs; without
  it a caller sees only the jobs it created (:mod:`outcrop.api.bedrock.batch`).
- ``outcrop:ViewCopyUrls``: see the URLs of model copies in ``GET /outcrop/copies``.

The console's admin actions are ordinary route actions: ``outcrop:GetStats`` (``GET
/outcrop/stats``; read-only allows it through ``outcrop:Get*``), ``outcrop:UpdateModelScaling``
(``PUT /outcrop/models/{id}/scaling``, on the model's ARN) and ``outcrop:ReadAudit`` (``GET
/outcrop/audit``); only ``admin`` grants the last two.

``evaluate`` is pure and table-tested.
"""

from __future__ import annotations

import copy
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
# Querying a knowledge base (bedrock-agent-runtime): what an application that invokes models does too.
KNOWLEDGE_BASE_QUERY_ACTIONS = (
    "bedrock:Retrieve",
    "bedrock:RetrieveAndGenerate",
    "bedrock:RetrieveAndGenerateStream",
)
KNOWLEDGE_BASE_RESOURCES = "arn:aws:bedrock:*:*:knowledge-base/*"
# What a batch job's records do to its model: checked against its creator's policy at create
# time and again while the records run.
BATCH_RECORD_ACTION = "bedrock:InvokeModel"
LIST_KEYS_ACTION = "outcrop:ListKeys"
ALL_JOBS_ACTION = "outcrop:AccessAllModelInvocationJobs"
COPY_URLS_ACTION = "outcrop:ViewCopyUrls"
ADMIN_ONLY_ACTIONS = (LIST_KEYS_ACTION, ALL_JOBS_ACTION, COPY_URLS_ACTION)

STATEMENT_KEYS = ("Sid", "Effect", "Action", "NotAction", "Resource", "NotResource")
DOCUMENT_KEYS = ("Version", "Id", "Statement")
VERSIONS = ("2012-10-17", "2008-10-17")
SHAPE = (
    'A policy is {"Statement": [{"Effect": "Allow"|"Deny", "Action"|"NotAction": [...], '
    '"Resource"|"NotResource": [...]}, ...]}.'
)


def admin() -> dict[str, Any]:
    return {"Statement": [{"Effect": "Allow", "Action": ["*"], "Resource": ["*"]}]}


def read_only() -> dict[str, Any]:
    """Read models, import and batch jobs, SageMaker endpoints and copies; never keys, copy URLs or
    others' batch jobs."""
    return {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "bedrock:Get*",
                    "bedrock:List*",
                    "sagemaker:Describe*",
                    "sagemaker:List*",
                    "outcrop:Get*",
                    "outcrop:ListCopies",
                ],
                "Resource": ["*"],
            }
        ]
    }


def invoke_only(model_arns: list[str] | None = None) -> dict[str, Any]:
    """Invoke models (all, or the listed ones); unless scoped to models, also query every knowledge base."""
    resources = model_arns or ["arn:aws:bedrock:*:*:imported-model/*"]
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": list(INVOKE_ACTIONS), "Resource": resources},
        {"Effect": "Allow", "Action": ["bedrock:ListImportedModels"], "Resource": ["*"]},
    ]
    if not model_arns:
        statements.append(
            {
                "Effect": "Allow",
                "Action": list(KNOWLEDGE_BASE_QUERY_ACTIONS),
                "Resource": [KNOWLEDGE_BASE_RESOURCES],
            }
        )
    return {"Statement": statements}


BUILT_IN = {"admin": admin, "read-only": read_only, "invoke-only": invoke_only}


def _check_patterns(value: Any, where: str) -> None:
    if isinstance(value, str) and value:
        return
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return
    raise InvalidRequestError(
        f"Policy {where} must be a non-empty string or a non-empty list of non-empty strings, not {value!r}.",
        param="policy",
    )


def _check_statement(st: Any, where: str) -> None:
    if not isinstance(st, dict):
        raise InvalidRequestError(f"Policy {where} must be an object, not {st!r}. {SHAPE}", param="policy")
    for key in st:
        if key == "Condition":
            raise InvalidRequestError(
                f"Policy {where}.Condition is not supported: Outcrop does not evaluate conditions, so the "
                "statement would allow more than it says. Remove the Condition and scope the statement "
                "with Resource or NotResource (or give each caller its own key).",
                param="policy",
            )
        if key in ("Principal", "NotPrincipal"):
            raise InvalidRequestError(
                f"Policy {where}.{key} is not allowed: a key's policy applies to that key's principal. "
                "Remove it.",
                param="policy",
            )
        if key not in STATEMENT_KEYS:
            raise InvalidRequestError(
                f"Policy {where} has the unknown key {key!r}; a statement may hold only "
                f"{', '.join(STATEMENT_KEYS)} (keys are case-sensitive).",
                param="policy",
            )
    if st.get("Effect") not in ("Allow", "Deny"):
        raise InvalidRequestError(
            f"Policy {where}.Effect is {st.get('Effect')!r}; it must be 'Allow' or 'Deny'.", param="policy"
        )
    if "Sid" in st and not isinstance(st["Sid"], str):
        raise InvalidRequestError(f"Policy {where}.Sid must be a string, not {st['Sid']!r}.", param="policy")
    for one, other, required in (("Action", "NotAction", True), ("Resource", "NotResource", False)):
        if one in st and other in st:
            raise InvalidRequestError(
                f"Policy {where} has both {one} and {other}; give one of them.", param="policy"
            )
        if required and one not in st and other not in st:
            raise InvalidRequestError(
                f"Policy {where} needs an {one} (or {other}) naming the actions it applies to, e.g. "
                '"Action": ["bedrock:InvokeModel"].',
                param="policy",
            )
        for key in (one, other):
            if key in st:
                _check_patterns(st[key], f"{where}.{key}")


def validate(policy: Any) -> dict[str, Any]:
    """Check a policy document; returns it unchanged (a copy), or raises naming what is wrong."""
    if not isinstance(policy, dict) or "Statement" not in policy:
        raise InvalidRequestError(SHAPE, param="policy")
    for key in policy:
        if key not in DOCUMENT_KEYS:
            raise InvalidRequestError(
                f"Policy has the unknown top-level key {key!r}; a policy may hold only "
                f"{', '.join(DOCUMENT_KEYS)} (keys are case-sensitive).",
                param="policy",
            )
    if "Version" in policy and policy["Version"] not in VERSIONS:
        raise InvalidRequestError(
            f"Policy Version is {policy['Version']!r}; use '2012-10-17' (or leave it out).", param="policy"
        )
    if "Id" in policy and not isinstance(policy["Id"], str):
        raise InvalidRequestError(f"Policy Id must be a string, not {policy['Id']!r}.", param="policy")
    statements = policy["Statement"]
    if isinstance(statements, dict):  # IAM allows a single statement object
        _check_statement(statements, "Statement")
    elif isinstance(statements, list) and statements:
        for i, st in enumerate(statements):
            _check_statement(st, f"Statement[{i}]")
    else:
        raise InvalidRequestError(f"Policy Statement must be a non-empty list. {SHAPE}", param="policy")
    return copy.deepcopy(policy)


def _matches(patterns: str | list[str], value: str, *, case_insensitive: bool) -> bool:
    if isinstance(patterns, str):  # IAM allows a single string where a list is expected
        patterns = [patterns]
    if case_insensitive:
        value = value.lower()
        patterns = [p.lower() for p in patterns]
    # Only * and ? are IAM wildcards: fnmatch's [...] classes are escaped.
    return any(fnmatch.fnmatchcase(value, p.replace("[", "[[]")) for p in patterns)


def applies(statement: dict[str, Any], action: str, resource: str) -> bool:
    """Does this statement cover ``action`` on ``resource`` (IAM's Action/NotAction, Resource/NotResource)?"""
    if "NotAction" in statement:
        action_ok = not _matches(statement["NotAction"], action, case_insensitive=True)
    else:
        action_ok = _matches(statement.get("Action", []), action, case_insensitive=True)
    if not action_ok:
        return False
    if "NotResource" in statement:
        return not _matches(statement["NotResource"], resource, case_insensitive=False)
    return _matches(statement.get("Resource", "*"), resource, case_insensitive=False)


def evaluate(policy: dict[str, Any], action: str, resource: str) -> bool:
    """True when some statement allows ``action`` on ``resource`` and none denies it."""
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for st in statements:
        if "Condition" in st and st["Effect"] != "Deny":
            continue  # validate never stores one; an unevaluated condition must not widen an Allow
        if applies(st, action, resource):
            if st["Effect"] == "Deny":
                return False
            allowed = True
    return allowed


def denial(principal_arn: str, action: str, resource: str) -> str:
    """The AccessDenied message, in IAM's words."""
    return f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
