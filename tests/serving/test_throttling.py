"""Per-principal token buckets: requests/second with a burst, tokens/minute charged after the fact."""

from __future__ import annotations

import pytest

from outcrop.config import ThrottlingConfig
from outcrop.errors import ThrottlingError
from outcrop.serving.throttling import Throttler, principal_of


def throttler(**overrides: float) -> Throttler:
    return Throttler(ThrottlingConfig(**overrides))


def test_a_burst_is_admitted_then_refused_until_refilled() -> None:
    t = throttler(requests_per_second=2, burst_seconds=1)
    t.admit("p", now=0.0)
    t.admit("p", now=0.0)
    with pytest.raises(ThrottlingError, match="over 2 requests/s") as info:
        t.admit("p", now=0.0)
    assert info.value.retry_after_seconds == pytest.approx(0.5)
    t.admit("p", now=0.5)


def test_principals_have_separate_buckets() -> None:
    t = throttler(requests_per_second=1, burst_seconds=1)
    t.admit("a", now=0.0)
    t.admit("b", now=0.0)
    with pytest.raises(ThrottlingError):
        t.admit("a", now=0.0)


def test_tokens_are_charged_after_the_call_and_block_until_the_minute_refills() -> None:
    t = throttler(tokens_per_minute=600)
    t.admit("p", now=0.0)
    t.charge_tokens("p", 900, now=0.0)  # one long generation overdraws the bucket
    with pytest.raises(ThrottlingError, match="more than 600 tokens") as info:
        t.admit("p", now=1.0)
    assert info.value.retry_after_seconds == pytest.approx(29.1, abs=0.1)
    t.admit("p", now=31.0)


def test_disabled_throttling_admits_everything() -> None:
    t = throttler(enabled=False, requests_per_second=1, burst_seconds=1)
    for _ in range(10):
        t.admit("p", now=0.0)


@pytest.mark.parametrize(
    ("authorization", "api_key", "host", "expected"),
    [
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, ...",
            None,
            "1.2.3.4",
            "aws:AKIDEXAMPLE",
        ),
        ("Bearer sk-abc", None, "1.2.3.4", "key:"),
        (None, "sk-abc", None, "key:"),
        (None, None, "1.2.3.4", "anonymous:1.2.3.4"),
    ],
)
def test_principal_is_the_caller_identity(
    authorization: str | None, api_key: str | None, host: str | None, expected: str
) -> None:
    assert principal_of(authorization, api_key, host).startswith(expected)
