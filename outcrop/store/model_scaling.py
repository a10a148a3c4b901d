"""Min/max copies per imported model set through the API (``PUT /outcrop/models/{id}/scaling``).

Shared by every gateway on the same database, and kept across restarts. A row wins over
``serving.defaults`` and ``serving.model_overrides`` for those two fields (the operator's latest,
explicit choice); the other serving settings still come from the configuration. A model's row
goes when the model is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outcrop.store.db import Database
from outcrop.store.schema import model_scaling


@dataclass(frozen=True)
class ModelScaling:
    """The copies an imported model runs between, as set through the API."""

    model_id: str
    min_copies: int
    max_copies: int
    updated_by: str | None
    updated_at: float  # epoch seconds


def _row(row: Any) -> ModelScaling:
    return ModelScaling(
        row.model_id, int(row.min_copies), int(row.max_copies), row.updated_by, float(row.updated_at)
    )


class ModelScalingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, model_id: str) -> ModelScaling | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(model_scaling).where(model_scaling.c.model_id == model_id)).first()
        return None if row is None else _row(row)

    def all(self) -> dict[str, ModelScaling]:
        """Every model's row, by model id (a small table: one row per model ever scaled by hand)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(model_scaling)).all()
        return {r.model_id: _row(r) for r in rows}

    def put(
        self, model_id: str, min_copies: int, max_copies: int, updated_by: str | None = None
    ) -> ModelScaling:
        now = time.time()
        values = {
            "min_copies": min_copies,
            "max_copies": max_copies,
            "updated_by": updated_by,
            "updated_at": now,
        }
        with self.db.begin() as conn:
            updated = conn.execute(
                model_scaling.update().where(model_scaling.c.model_id == model_id).values(**values)
            ).rowcount
            if not updated:
                conn.execute(model_scaling.insert().values(model_id=model_id, **values))
        return ModelScaling(model_id, min_copies, max_copies, updated_by, now)

    def delete(self, model_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(model_scaling.delete().where(model_scaling.c.model_id == model_id))
