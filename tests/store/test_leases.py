"""Named leases: one holder at a time until it stops renewing (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

from outcrop.store.db import Database
from outcrop.store.leases import Leases


def test_one_holder_at_a_time_until_the_lease_expires_or_is_released(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    leases = Leases(db)
    assert leases.acquire("autoscaler", "a", 0.5)
    assert not leases.acquire("autoscaler", "b", 0.5)
    assert leases.acquire("autoscaler", "a", 0.5), "the holder renews"
    assert leases.holder("autoscaler") == "a"
    time.sleep(0.6)
    assert leases.holder("autoscaler") is None
    assert leases.acquire("autoscaler", "b", 5)
    leases.release("autoscaler", "a")  # not the holder: no effect
    assert leases.holder("autoscaler") == "b"
    leases.release("autoscaler", "b")
    assert leases.acquire("autoscaler", "a", 5)
    db.dispose()


def test_live_holders_lists_unexpired_leases_by_prefix(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    leases = Leases(db)
    leases.acquire("gateway:g1", "g1", 5)
    leases.acquire("gateway:g2", "g2", 0.01)
    leases.acquire("autoscaler", "g1", 5)
    time.sleep(0.05)
    assert leases.live_holders("gateway:") == ["g1"]
    leases.acquire("gateway:g3", "g3", 10)
    assert sorted(leases.live_holders("gateway:", expiring_after=time.time() + 7)) == ["g3"], (
        "g1 renewed longer ago (its lease ends sooner)"
    )
    db.dispose()
