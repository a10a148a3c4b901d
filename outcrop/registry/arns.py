"""Bedrock-style ARNs and the name patterns of the botocore service model."""

from __future__ import annotations

import re

from outcrop.config import AwsIdentityConfig
from outcrop.errors import InvalidRequestError

# Patterns of botocore's bedrock 2023-04-20 service model. The job-name pattern there,
# [a-zA-Z0-9](-*[a-zA-Z0-9\+\-\.])*, backtracks exponentially on 'a----...-!' (both '-*' and the
# class match '-'); this one accepts exactly the same strings in linear time.
JOB_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9+.\-]*")
MODEL_NAME_RE = re.compile(r"([0-9a-zA-Z][_-]?)+")
ROLE_ARN_RE = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_ARN_RE = re.compile(
    r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:(?P<kind>[a-z-]+)/(?P<id>[a-z0-9]{12})"
)

MAX_NAME_CHARS = 63


def job_arn(identity: AwsIdentityConfig, job_id: str) -> str:
    return f"arn:aws:bedrock:{identity.region}:{identity.account_id}:model-import-job/{job_id}"


def model_arn(identity: AwsIdentityConfig, model_id: str) -> str:
    return f"arn:aws:bedrock:{identity.region}:{identity.account_id}:imported-model/{model_id}"


def check_name(value: str, pattern: re.Pattern[str], param: str, example: str) -> str:
    if not (1 <= len(value) <= MAX_NAME_CHARS) or not pattern.fullmatch(value):
        raise InvalidRequestError(
            f"1 validation error detected: Value {value!r} at '{param}' failed to satisfy constraint: "
            f"Member must be 1-{MAX_NAME_CHARS} characters matching {pattern.pattern} (for example {example!r}).",
            param=param,
        )
    return value


def identifier_to_key(identifier: str, kind: str, name_pattern: re.Pattern[str], param: str) -> str:
    """An ARN of ``kind`` -> its 12-char id; a plain name -> itself. Anything else is a ValidationException."""
    if identifier.startswith("arn:"):
        match = _ARN_RE.fullmatch(identifier)
        if match is None or match.group("kind") != kind:
            raise InvalidRequestError(
                f"1 validation error detected: Value {identifier!r} at '{param}' is not a valid {kind} ARN "
                f"(arn:aws:bedrock:<region>:<account>:{kind}/<12 lowercase letters or digits>).",
                param=param,
            )
        return match.group("id")
    if not name_pattern.fullmatch(identifier) or len(identifier) > 1011:
        raise InvalidRequestError(
            f"1 validation error detected: Value {identifier!r} at '{param}' is neither a {kind} ARN nor a valid "
            "name.",
            param=param,
        )
    return identifier
