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


def test_the_token_limit_holds_across_gateways_sharing_a_store(database_url: str) -> None:
    from outcrop.store.db import Database
    from outcrop.store.token_usage import TokenLedger

    db = Database(database_url)
    db.migrate()
    config = ThrottlingConfig(tokens_per_minute=1000)
    gateway_a, gateway_b = Throttler(config, TokenLedger(db)), Throttler(config, TokenLedger(db))
    now = 600.0  # the start of a minute
    gateway_a.admit("p", now=now)
    gateway_a.charge_tokens("p", 700, now=now)
    gateway_b.admit("p", now=now)
    gateway_b.charge_tokens("p", 400, now=now)  # each gateway alone is under the limit
    gateway_a.sync(now=now + 1)
    gateway_b.sync(now=now + 1)
    gateway_a.sync(now=now + 2)  # a's next sync sees b's tokens too
    for gateway in (gateway_a, gateway_b):
        with pytest.raises(ThrottlingError, match="across all gateways"):
            gateway.admit("p", now=now + 2)
        gateway.admit("someone-else", now=now + 2)
    # Two minutes later the window has slid past those tokens.
    gateway_a.sync(now=now + 125)
    gateway_a.admit("p", now=now + 125)


def test_ledger_rows_accumulate_per_principal_and_minute(database_url: str) -> None:
    from outcrop.store.db import Database
    from outcrop.store.token_usage import TokenLedger

    db = Database(database_url)
    db.migrate()
    ledger = TokenLedger(db)
    ledger.add(10, {"a": 5, "b": 1})
    ledger.add(10, {"a": 7})
    ledger.add(11, {"a": 1})
    assert ledger.totals(10) == {("a", 10): 12, ("b", 10): 1, ("a", 11): 1}
    assert ledger.totals(11) == {("a", 11): 1}


def _rates_gateways(database_url: str, rps: float) -> tuple[Throttler, Throttler]:
    from outcrop.store.db import Database
    from outcrop.store.gateway_board import request_rates

    db = Database(database_url)
    db.migrate()
    config = ThrottlingConfig(requests_per_second=rps, burst_seconds=1.0)
    return Throttler(config, rates=request_rates(db)), Throttler(config, rates=request_rates(db))


def _admitted(gateway: Throttler, principal: str, attempts: int, start: float, seconds: float) -> int:
    """Offer ``attempts`` requests spread evenly over ``seconds``; how many were admitted."""
    admitted = 0
    for i in range(attempts):
        try:
            gateway.admit(principal, now=start + seconds * i / attempts)
            admitted += 1
        except ThrottlingError:
            pass
    return admitted


def test_the_request_rate_limit_is_split_across_gateways_by_the_traffic_each_sees(database_url: str) -> None:
    a, b = _rates_gateways(database_url, rps=10)
    for gateway in (a, b):
        gateway.sync_request_rates(0.0)  # starts each gateway's clock
    # Second 1: a load balancer sends "p" 40 requests/s through each gateway; alone, each admits
    # its full 10/s (plus the burst): together 2x the limit, until they have exchanged rates.
    first = _admitted(a, "p", 40, 0.0, 1.0) + _admitted(b, "p", 40, 0.0, 1.0)
    assert first > 20
    for _ in range(3):  # a few syncs: each now knows the other's offered rate
        a.sync_request_rates(1.0 + _)
        b.sync_request_rates(1.0 + _)
    # Five seconds at 40/s through each: about 5 s x 10/s in total plus each half-size burst
    # (without sharing it would be about 2 x (50 + 10) = 120).
    later = _admitted(a, "p", 200, 10.0, 5.0) + _admitted(b, "p", 200, 10.0, 5.0)
    assert 45 <= later <= 65, later
    with pytest.raises(ThrottlingError, match="across all gateways"):
        for i in range(20):
            a.admit("p", now=16.0 + i / 1000)
    # Others are untouched, and a principal that only uses one gateway gets the whole limit there.
    assert _admitted(a, "q", 10, 17.0, 1.0) == 10


def test_a_stopped_gateway_hands_its_share_back(database_url: str) -> None:
    a, b = _rates_gateways(database_url, rps=10)
    a.sync_request_rates(0.0)
    b.sync_request_rates(0.0)
    for t in range(1, 4):
        _admitted(a, "p", 40, float(t), 1.0)
        _admitted(b, "p", 40, float(t), 1.0)
        a.sync_request_rates(t + 1.0)
        b.sync_request_rates(t + 1.0)
    b.stop()  # clears its rows
    a.sync_request_rates(5.0)
    assert _admitted(a, "p", 20, 20.0, 1.0) >= 19  # the whole limit (and burst) again
