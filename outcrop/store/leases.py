"""Named leases in the store: one holder at a time, until it stops renewing.

Gateways that share a store and a Ray cluster use them for two things: ``autoscaler`` (the
one gateway that starts and stops the shared copies) and ``gateway:<id>`` (each gateway's
presence, so one that stops knows whether another is left to take its copies over).
Expiry times are wall-clock seconds, so the gateways' clocks must agree to well within a
lease (NTP does).
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from outcrop.store.db import Database

AUTOSCALER_LEASE = "autoscaler"
GATEWAY_PREFIX = "gateway:"


class Leases:
    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew ``name`` for ``seconds``; False while another holder's lease is unexpired."""
        now = time.time()
        statement = sa.text(
            "INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :expires_at) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
            "WHERE leases.holder = excluded.holder OR leases.expires_at < :now"
        )
        with self.db.begin() as conn:
            result = conn.execute(
                statement, {"name": name, "holder": holder, "expires_at": now + seconds, "now": now}
            )
            return bool(result.rowcount)

    def release(self, name: str, holder: str) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM leases WHERE name = :name AND holder = :holder"),
                {"name": name, "holder": holder},
            )

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now (None if nobody, or the lease expired)."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT holder FROM leases WHERE name = :name AND expires_at >= :now"),
                {"name": name, "now": time.time()},
            ).first()
        return str(row[0]) if row else None

    def live_holders(self, prefix: str, *, expiring_after: float = 0.0) -> list[str]:
        """Holders of unexpired leases whose names start with ``prefix``.

        ``expiring_after`` (wall-clock seconds) keeps only leases renewed recently enough to
        expire after it: a holder that died a moment ago still has an unexpired lease, but not a
        freshly renewed one.
        """
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT holder FROM leases WHERE name LIKE :pattern AND expires_at >= :after"),
                {"pattern": prefix + "%", "after": max(time.time(), expiring_after)},
            )
            return [str(r[0]) for r in rows]
