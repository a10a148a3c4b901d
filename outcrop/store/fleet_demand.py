"""Each gateway's current demand per model (requests in flight + queued), shared through the store.

On a fleet several gateways share, only one autoscales (``outcrop.store.leases``); it adds
what the others publish here to its own demand, so copies are sized for all traffic and are
not scaled in while another gateway keeps them busy.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from outcrop.store.db import Database


class DemandBoard:
    def __init__(self, db: Database) -> None:
        self.db = db

    def publish(self, gateway: str, demand_by_model: dict[str, int]) -> None:
        """Replace this gateway's rows with ``demand_by_model`` (model id -> in flight + queued)."""
        now = time.time()
        with self.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM fleet_demand WHERE gateway = :gateway"), {"gateway": gateway})
            if demand_by_model:
                conn.execute(
                    sa.text(
                        "INSERT INTO fleet_demand (gateway, model_id, demand, updated_at) "
                        "VALUES (:gateway, :model_id, :demand, :updated_at)"
                    ),
                    [
                        {"gateway": gateway, "model_id": m, "demand": d, "updated_at": now}
                        for m, d in demand_by_model.items()
                    ],
                )

    def others(self, gateway: str, max_age_seconds: float) -> dict[str, int]:
        """Model id -> summed demand of the other gateways that published within ``max_age_seconds``."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT model_id, SUM(demand) FROM fleet_demand WHERE gateway <> :gateway "
                    "AND updated_at >= :since GROUP BY model_id"
                ),
                {"gateway": gateway, "since": time.time() - max_age_seconds},
            )
            return {str(r[0]): int(r[1]) for r in rows}

    def clear(self, gateway: str) -> None:
        self.publish(gateway, {})
