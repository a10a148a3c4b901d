"""Metadata store: SQLAlchemy 2 Core schema, append-only migrations and queries (SQLite or PostgreSQL)."""

from outcrop.store.db import Database

__all__ = ["Database"]
