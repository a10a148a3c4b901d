"""Per-principal rate limits: a requests-per-second and a tokens-per-minute token bucket.

Requests are admitted while the principal's request bucket holds a token; tokens are charged
after the fact (the output length is unknown up front), so the token bucket may go negative
and then refuses requests until it refills. Refusals name the limit and when to retry.

With a shared ``TokenLedger`` (gateways on one store), each gateway also flushes its token
counts per principal per minute to the store about once a second and reads everyone's back;
a principal over ``tokens_per_minute`` across all gateways (sliding window over the current
and previous minute) is refused on every gateway. The hot path never waits on the database.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from outcrop.config import ThrottlingConfig
from outcrop.errors import ThrottlingError
from outcrop.store.token_usage import TokenLedger

log = logging.getLogger("outcrop.throttling")
# How often gateways exchange token counts through the store: the shared limit lags by about this.
LEDGER_SYNC_SECONDS = 1.0


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
    def __init__(self, config: ThrottlingConfig, ledger: TokenLedger | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._unflushed: dict[str, int] = {}
        self._global_usage: dict[str, float] = {}  # principal -> tokens in the last minute, all gateways
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the shared ledger ------------------------------------------------------------------

    def start(self) -> None:
        if self.ledger is not None and self.config.enabled:
            self._thread = threading.Thread(target=self._sync_loop, name="token-ledger", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sync()

    def _sync_loop(self) -> None:
        while not self._stop.wait(LEDGER_SYNC_SECONDS):
            try:
                self.sync()
            except Exception:  # the store may be briefly unreachable; local limits still apply
                log.warning("token ledger sync failed; will retry", exc_info=True)

    def sync(self, now: float | None = None) -> None:
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
                raise ThrottlingError(
                    f"Too many requests: {principal} is over {self.config.requests_per_second:g} requests/s "
                    f"(throttling.requests_per_second). Retry in {wait:.2f} s.",
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
