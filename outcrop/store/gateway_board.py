"""Per-gateway figures shared through the store: each gateway replaces its own rows, reads the others'.

A board is a table ``(gateway, <key>, <value>, updated_at)`` with ``(gateway, <key>)`` as its
primary key. Rows of a gateway that stopped publishing age out of :meth:`GatewayBoard.others`
after ``max_age_seconds``, so a crashed gateway's figures stop counting without a clean-up.
Used for each gateway's demand per model (the autoscaler of a shared fleet) and its offered
request rate per principal (throttling across gateways).
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

import sqlalchemy as sa

from outcrop.store.db import Database

V = TypeVar("V", int, float)


class GatewayBoard(Generic[V]):
    def __init__(self, db: Database, table: str, key: str, value: str, kind: type[V]) -> None:
        self.db = db
        self.kind: type[V] = kind
        self._delete = sa.text(f"DELETE FROM {table} WHERE gateway = :gateway")
        self._insert = sa.text(
            f"INSERT INTO {table} (gateway, {key}, {value}, updated_at) VALUES (:gateway, :key, :value, :updated_at)"
        )
        self._others = sa.text(
            f"SELECT {key}, SUM({value}) FROM {table} WHERE gateway <> :gateway AND updated_at >= :since "
            f"GROUP BY {key}"
        )

    def publish(self, gateway: str, values: dict[str, V]) -> None:
        """Replace this gateway's rows with ``values`` (key -> value)."""
        now = time.time()
        with self.db.begin() as conn:
            conn.execute(self._delete, {"gateway": gateway})
            if values:
                conn.execute(
                    self._insert,
                    [
                        {"gateway": gateway, "key": k, "value": v, "updated_at": now}
                        for k, v in values.items()
                    ],
                )

    def others(self, gateway: str, max_age_seconds: float) -> dict[str, V]:
        """Key -> the summed values of the other gateways that published within ``max_age_seconds``."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(self._others, {"gateway": gateway, "since": time.time() - max_age_seconds})
            return {str(r[0]): self.kind(r[1]) for r in rows}

    def clear(self, gateway: str) -> None:
        self.publish(gateway, {})


def demand_board(db: Database) -> GatewayBoard[int]:
    """Each gateway's demand per model (requests in flight + queued). On a fleet several gateways
    share, only one autoscales (``outcrop.store.leases``); it adds what the others publish here to
    its own demand, so copies are sized for all traffic and are not scaled in while another
    gateway keeps them busy."""
    return GatewayBoard(db, "fleet_demand", "model_id", "demand", int)


def request_rates(db: Database) -> GatewayBoard[float]:
    """Each gateway's offered inference requests/s per principal (``throttling``)."""
    return GatewayBoard(db, "request_rates", "principal", "rate", float)
