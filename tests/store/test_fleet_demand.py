"""Every gateway's demand per model, summed for the one that autoscales (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

from outcrop.store.db import Database
from outcrop.store.gateway_board import demand_board


def test_the_scaler_sees_the_summed_recent_demand_of_the_other_gateways(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    board = demand_board(db)
    board.publish("g1", {"m1": 3})
    board.publish("g2", {"m1": 4, "m2": 1})
    board.publish("g3", {"m1": 100})
    assert board.others("g3", 10) == {"m1": 7, "m2": 1}
    board.publish("g2", {"m2": 2})  # replaces g2's rows
    board.clear("g1")
    assert board.others("g3", 10) == {"m2": 2}
    time.sleep(0.05)
    assert board.others("g3", 0.01) == {}, "a gateway that stopped publishing no longer counts"
    db.dispose()
