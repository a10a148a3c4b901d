"""Tokens used per principal per minute, summed across every gateway that shares the store."""

from __future__ import annotations

import sqlalchemy as sa

from outcrop.store.db import Database
from outcrop.store.schema import token_usage

# Rows older than this are deleted on flush: the sliding window needs the last two minutes only.
KEEP_MINUTES = 5


class TokenLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, minute: int, tokens_by_principal: dict[str, int]) -> None:
        """Add this gateway's tokens for ``minute`` (an upsert that SQLite and PostgreSQL both accept)."""
        if not tokens_by_principal:
            return
        statement = sa.text(
            "INSERT INTO token_usage (principal, minute, tokens) VALUES (:principal, :minute, :tokens) "
            "ON CONFLICT (principal, minute) DO UPDATE SET tokens = token_usage.tokens + excluded.tokens"
        )
        with self.db.begin() as conn:
            conn.execute(
                statement,
                [{"principal": p, "minute": minute, "tokens": n} for p, n in tokens_by_principal.items()],
            )
            conn.execute(token_usage.delete().where(token_usage.c.minute < minute - KEEP_MINUTES))

    def totals(self, since_minute: int) -> dict[tuple[str, int], int]:
        """(principal, minute) -> tokens, for every minute >= ``since_minute``."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(token_usage.c.principal, token_usage.c.minute, token_usage.c.tokens).where(
                    token_usage.c.minute >= since_minute
                )
            )
            return {(r[0], int(r[1])): int(r[2]) for r in rows}
