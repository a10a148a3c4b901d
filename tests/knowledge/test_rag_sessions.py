"""RetrieveAndGenerate sessions (outcrop/knowledge/rag_sessions.py) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from outcrop.errors import InvalidRequestError
from outcrop.knowledge.rag_sessions import RagSessions, Turn
from outcrop.store.db import Database

KEY = "arn:aws:kms:us-east-1:123456789012:key/12345678-1234-1234-1234-123456789012"
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/87654321-4321-4321-4321-210987654321"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(database_url: str, clock: Clock) -> Iterator[RagSessions]:
    db = Database(database_url)
    db.migrate()
    yield RagSessions(db, clock=clock, max_turns=3)
    db.dispose()


def start(sessions: RagSessions, owner: str | None = "alice", **overrides: Any) -> str:
    session = sessions.open(None, owner=owner, knowledge_base_id="KB12345678", **overrides)
    sessions.record(session, Turn("first question", "first answer"))
    return session.id


def test_a_new_session_gets_an_id_and_is_stored_only_with_its_first_turn(sessions: RagSessions) -> None:
    fresh = sessions.open(None, owner="alice", knowledge_base_id="KB12345678")
    assert fresh.is_new and len(fresh.id) >= 2 and fresh.turns == []
    with pytest.raises(InvalidRequestError, match="not valid"):
        sessions.open(fresh.id, owner="alice", knowledge_base_id="KB12345678")
    sessions.record(fresh, Turn("q", "a"))
    assert sessions.open(fresh.id, owner="alice", knowledge_base_id="KB12345678").turns == [Turn("q", "a")]


def test_follow_ups_see_earlier_turns_in_order_and_only_the_latest_are_kept(sessions: RagSessions) -> None:
    session_id = start(sessions)
    for i in range(2, 6):
        session = sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678")
        sessions.record(session, Turn(f"q{i}", f"a{i}"))
    kept = sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678").turns
    assert kept == [Turn("q3", "a3"), Turn("q4", "a4"), Turn("q5", "a5")]


def test_an_unknown_id_is_a_validation_error_that_says_how_to_start_a_session(sessions: RagSessions) -> None:
    with pytest.raises(InvalidRequestError, match="omit sessionId to start a new session") as caught:
        sessions.open("no-such-session", owner="alice", knowledge_base_id="KB12345678")
    assert "no-such-session" in caught.value.message


def test_another_callers_session_reads_as_unknown(sessions: RagSessions) -> None:
    session_id = start(sessions, owner="alice")
    with pytest.raises(InvalidRequestError, match="is not valid\\. Send"):
        sessions.open(session_id, owner="bob", knowledge_base_id="KB12345678")


def test_a_session_expires_24_hours_after_it_started_whatever_its_use(
    sessions: RagSessions, clock: Clock
) -> None:
    session_id = start(sessions)
    clock.now += 23 * 3600
    sessions.record(sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678"), Turn("q", "a"))
    clock.now += 3600
    with pytest.raises(InvalidRequestError, match="expired"):
        sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678")
    assert sessions.purge_expired() == 1


def test_the_kms_key_is_remembered_and_another_key_is_refused(sessions: RagSessions) -> None:
    session_id = start(sessions, kms_key_arn=KEY)
    assert sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678").kms_key_arn == KEY
    assert sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678", kms_key_arn=KEY).turns
    with pytest.raises(InvalidRequestError, match="was started with kmsKeyArn"):
        sessions.open(session_id, owner="alice", knowledge_base_id="KB12345678", kms_key_arn=OTHER_KEY)
