"""Small JSON settings shared by every gateway on the same database (e.g. invocation logging)."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from outcrop.store.db import Database
from outcrop.store.schema import settings


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> Any | None:
        with self.db.engine.connect() as conn:
            value = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()
        return json.loads(value) if value is not None else None

    def put(self, key: str, value: Any) -> None:
        raw, now = json.dumps(value), time.time()
        with self.db.begin() as conn:
            updated = conn.execute(
                settings.update().where(settings.c.key == key).values(value=raw, updated_at=now)
            ).rowcount
            if not updated:
                conn.execute(settings.insert().values(key=key, value=raw, updated_at=now))

    def delete(self, key: str) -> None:
        with self.db.begin() as conn:
            conn.execute(settings.delete().where(settings.c.key == key))
