"""Per-principal rate limits: a requests-per-second and a tokens-per-minute token bucket.

Requests are admitted while the principal's request bucket holds a token; tokens are charged
after the fact (the output length is unknown up front), so the token bucket may go negative
and then refuses requests until it refills. Refusals name the limit and when to retry.

With a shared ``TokenLedger`` (gateways on one store), each gateway also flushes its token
counts per principal per minute to the store about once a second and reads everyone's back;
a principal over ``tokens_per_minute`` across all gateways (sliding window over the current
and previous minute) is refused on every gateway.

Requests/s hold across gateways too: each gateway publishes the rate at which each principal
offers it requests (admitted or not, smoothed) on a shared board, and gives the principal the
share of ``requests_per_second`` that its own offered rate is of the total. A principal that
sends all its traffic through one gateway gets the whole limit there; one spread over two
load-balanced gateways gets about half on each. Shares follow the traffic within a few syncs.
The hot path never waits on the database.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from outcrop.config import ThrottlingConfig
from outcrop.errors import ThrottlingError
from outcrop.store.gateway_board import GatewayBoard
from outcrop.store.token_usage import TokenLedger

log = logging.getLogger("outcrop.throttling")
# How often gateways exchange token counts through the store: the shared limit lags by about this.
LEDGER_SYNC_SECONDS = 1.0
# Offered rates are smoothed over syncs (weight of the newest interval), so one quiet second
# does not hand a principal's whole limit back to one gateway.
RATE_SMOOTHING = 0.5
# Rates below this (requests/s) are not published: an idle principal costs the store nothing.
RATE_FLOOR = 0.01
# Another gateway's rates count while they are this recent (a stopped gateway's age out).
RATE_MAX_AGE_SECONDS = 5 * LEDGER_SYNC_SECONDS


@dataclass
class TokenBucket:
    capacity: float
    refill_per_second: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.refill_per_second)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.refill_per_second


def principal_of(authorization: str | None, api_key: str | None, client_host: str | None) -> str:
    """Who is asking: the SigV4 access key id, a hash of a bearer key, else the client address."""
    if authorization and "Credential=" in authorization:
        return "aws:" + authorization.split("Credential=", 1)[1].split("/", 1)[0].strip()
    bearer = api_key or (
        authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else ""
    )
    if bearer:
        return "key:" + hashlib.sha256(bearer.encode()).hexdigest()[:16]
    return f"anonymous:{client_host or 'unknown'}"


class Throttler:
    def __init__(
        self,
        config: ThrottlingConfig,
        ledger: TokenLedger | None = None,
        rates: GatewayBoard[float] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.rates = rates
        self.gateway_id = f"throttler-{uuid.uuid4().hex[:12]}"
        self._attempts: dict[str, int] = {}  # principal -> requests offered since the last sync
        self._offered: dict[str, float] = {}  # principal -> smoothed requests/s offered to this gateway
        self._share: dict[str, float] = {}  # principal -> this gateway's share of its requests/s limit
        self._rates_synced_at: float | None = None
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._unflushed: dict[str, int] = {}
        self._global_usage: dict[str, float] = {}  # principal -> tokens in the last minute, all gateways
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the shared ledger ------------------------------------------------------------------

    def start(self) -> None:
        if (self.ledger is not None or self.rates is not None) and self.config.enabled:
            self._thread = threading.Thread(target=self._sync_loop, name="token-ledger", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sync()
        if self.rates is not None and self.config.enabled:
            try:
                self.rates.clear(self.gateway_id)  # this gateway's share goes back to the others at once
            except Exception:
                log.warning("could not clear this gateway's request rates; they age out", exc_info=True)

    def _sync_loop(self) -> None:
        while not self._stop.wait(LEDGER_SYNC_SECONDS):
            try:
                self.sync()
            except Exception:  # the store may be briefly unreachable; local limits still apply
                log.warning("token ledger sync failed; will retry", exc_info=True)

    def sync(self, now: float | None = None) -> None:
        """Exchange this gateway's figures with the others' through the store."""
        self.sync_request_rates(time.monotonic() if now is None else now)
        self.sync_tokens(now)

    def sync_request_rates(self, now: float) -> None:
        """Publish the rates principals offer this gateway; take each one's share of its limit."""
        if self.rates is None:
            return
        with self._lock:
            attempts, self._attempts = self._attempts, {}
            last, self._rates_synced_at = self._rates_synced_at, now
        if last is None or now <= last:
            return  # the first sync only starts the clock
        interval = now - last
        offered: dict[str, float] = {}
        for principal in set(attempts) | set(self._offered):
            rate = attempts.get(principal, 0) / interval
            smoothed = RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * self._offered.get(principal, 0.0)
            if smoothed >= RATE_FLOOR:
                offered[principal] = smoothed
        if offered or self._offered:  # an idle gateway with no rows of its own writes nothing
            self.rates.publish(self.gateway_id, offered)
        others = self.rates.others(self.gateway_id, RATE_MAX_AGE_SECONDS) if offered else {}
        # A principal new to this gateway keeps the whole limit until its rate is published: a
        # sync interval of over-admission rather than refusing traffic that moved here.
        share = {p: own / (own + others[p]) for p, own in offered.items() if others.get(p, 0.0) > 0}
        with self._lock:
            self._offered = offered
            self._share = share
            for principal, bucket in self._requests.items():
                self._size_request_bucket(bucket, share.get(principal, 1.0))

    def _size_request_bucket(self, bucket: TokenBucket, share: float) -> None:
        c = self.config
        bucket.refill_per_second = c.requests_per_second * share
        bucket.capacity = max(1.0, c.requests_per_second * c.burst_seconds * share)
        bucket.level = min(bucket.level, bucket.capacity)

    def sync_tokens(self, now: float | None = None) -> None:
        """Flush this gateway's tokens and read every gateway's usage (sliding one-minute window)."""
        if self.ledger is None:
            return
        now = time.time() if now is None else now
        minute = int(now // 60)
        with self._lock:
            pending, self._unflushed = self._unflushed, {}
        self.ledger.add(minute, pending)
        totals = self.ledger.totals(minute - 1)
        elapsed = (now % 60) / 60
        usage: dict[str, float] = {}
        for (principal, m), tokens in totals.items():
            weight = 1.0 if m == minute else (1.0 - elapsed)
            usage[principal] = usage.get(principal, 0.0) + tokens * weight
        with self._lock:
            self._global_usage = usage

    def _buckets(self, principal: str, now: float) -> tuple[TokenBucket, TokenBucket]:
        c = self.config
        requests = self._requests.get(principal)
        if requests is None:
            burst = c.requests_per_second * c.burst_seconds
            requests = self._requests[principal] = TokenBucket(burst, c.requests_per_second, burst, now)
            if principal in self._share:
                self._size_request_bucket(requests, self._share[principal])
        tokens = self._tokens.get(principal)
        if tokens is None:
            per_minute = float(c.tokens_per_minute)
            tokens = self._tokens[principal] = TokenBucket(per_minute, per_minute / 60, per_minute, now)
        requests.refill(now)
        tokens.refill(now)
        return requests, tokens

    def admit(self, principal: str, now: float | None = None) -> None:
        """Take one request token, or raise ThrottlingError saying which limit and when to retry."""
        if not self.config.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.rates is not None:
                self._attempts[principal] = self._attempts.get(principal, 0) + 1
            requests, tokens = self._buckets(principal, now)
            shared = self._global_usage.get(principal, 0.0)
            if shared >= self.config.tokens_per_minute:
                raise ThrottlingError(
                    f"Too many tokens: {principal} used about {int(shared):,} tokens in the last minute across all "
                    f"gateways, over {self.config.tokens_per_minute:,} (throttling.tokens_per_minute). "
                    f"Retry in {LEDGER_SYNC_SECONDS * 2:.0f} s or more.",
                    retry_after_seconds=LEDGER_SYNC_SECONDS * 2,
                )
            if tokens.level <= 0:
                wait = tokens.seconds_until(1)
                raise ThrottlingError(
                    f"Too many tokens: {principal} used more than {self.config.tokens_per_minute:,} tokens in the "
                    f"last minute (throttling.tokens_per_minute). Retry in {wait:.1f} s.",
                    retry_after_seconds=wait,
                )
            if requests.level < 1:
                wait = requests.seconds_until(1)
                share = self._share.get(principal, 1.0)
                spread = (
                    f" across all gateways (this one takes {share:.0%} of {principal}'s traffic)"
                    if share < 1.0
                    else ""
                )
                raise ThrottlingError(
                    f"Too many requests: {principal} is over {self.config.requests_per_second:g} requests/s"
                    f"{spread} (throttling.requests_per_second). Retry in {wait:.2f} s.",
                    retry_after_seconds=wait,
                )
            requests.level -= 1

    def charge_tokens(self, principal: str, count: int, now: float | None = None) -> None:
        if not self.config.enabled or count <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            _, tokens = self._buckets(principal, now)
            tokens.level -= count
            if self.ledger is not None:
                self._unflushed[principal] = self._unflushed.get(principal, 0) + count
