"""RetrieveAndGenerate sessions: the earlier turns of a conversation, kept for its follow-up questions.

Bedrock's contract (botocore ``bedrock-agent-runtime`` 2023-07-26, RetrieveAndGenerate): the first call
has no ``sessionId``; the response carries one the service made; a follow-up that sends it back is
answered with the earlier turns in view. A caller cannot choose an id, and a session lasts 24 hours
from its start and cannot be extended. An id that is not a live session answers ValidationException.

Outcrop keeps each session as one ``rag_sessions`` row (migration 17) in the metadata store, so a
follow-up works through any gateway that shares the store and across restarts. A session belongs to
the principal that started it: another caller's id is answered exactly like an unknown one, so ids
cannot be probed. ``sessionConfiguration.kmsKeyArn`` is accepted and remembered (Outcrop has no KMS;
the store's own protection applies), and a follow-up that names another key is refused, as Bedrock
cannot decrypt a session with a key it was not encrypted with.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from outcrop.errors import InvalidRequestError
from outcrop.store.db import Database
from outcrop.store.schema import rag_sessions

# Bedrock: "A knowledge base session lasts 24 hours. You can't extend the session."
SESSION_SECONDS = 24 * 3600.0
# The turns a prompt sees: the most recent ones. Why: a long session must not grow the prompt
# without bound (a tiny context window would overflow after a few turns); older turns are dropped.
MAX_TURNS_KEPT = 10


@dataclass(frozen=True)
class Turn:
    """One question and the answer it got (the output text, without citation markup)."""

    input: str
    output: str


@dataclass(frozen=True)
class RagSession:
    """A session as a request sees it; ``is_new`` until its first turn is recorded."""

    id: str
    owner: str | None
    knowledge_base_id: str
    kms_key_arn: str | None
    turns: list[Turn] = field(default_factory=list)
    created_at: float = 0.0
    expires_at: float = 0.0
    is_new: bool = False


def _not_valid(session_id: str, why: str = "") -> InvalidRequestError:
    return InvalidRequestError(
        f"Session with Id {session_id} is not valid{why}. Send the sessionId that a RetrieveAndGenerate "
        "response returned within the last 24 hours, or omit sessionId to start a new session.",
        param="sessionId",
    )


class RagSessions:
    """The session store. Thread-safe (each call is its own transaction); call it off the event loop."""

    def __init__(
        self,
        db: Database,
        *,
        session_seconds: float = SESSION_SECONDS,
        max_turns: int = MAX_TURNS_KEPT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.session_seconds = session_seconds
        self.max_turns = max_turns
        self.clock = clock

    def open(
        self,
        session_id: str | None,
        *,
        owner: str | None,
        knowledge_base_id: str,
        kms_key_arn: str | None = None,
    ) -> RagSession:
        """The session a request continues (its turns), or a new one when ``session_id`` is None.

        Raises InvalidRequestError (ValidationException) for an id that is unknown, expired or another
        caller's, and for a ``kms_key_arn`` other than the one the session was started with.
        """
        now = self.clock()
        if session_id is None:
            return RagSession(
                id=str(uuid.uuid4()),
                owner=owner,
                knowledge_base_id=knowledge_base_id,
                kms_key_arn=kms_key_arn,
                created_at=now,
                expires_at=now + self.session_seconds,
                is_new=True,
            )
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(rag_sessions).where(rag_sessions.c.id == session_id)).first()
        if row is None or row.owner != owner:
            raise _not_valid(session_id)
        if row.expires_at <= now:
            raise _not_valid(session_id, " (it expired: a session lasts 24 hours from its first question)")
        if kms_key_arn is not None and kms_key_arn != row.kms_key_arn:
            raise InvalidRequestError(
                f"Session with Id {session_id} was started with "
                f"{'kmsKeyArn ' + row.kms_key_arn if row.kms_key_arn else 'no sessionConfiguration.kmsKeyArn'}"
                f", not {kms_key_arn}. Send the session's own key (or none), or omit sessionId to start a new "
                "session with this key.",
                param="sessionConfiguration.kmsKeyArn",
            )
        turns = [Turn(t["input"], t["output"]) for t in json.loads(row.turns)]
        return RagSession(
            id=row.id,
            owner=row.owner,
            knowledge_base_id=row.knowledge_base_id,
            kms_key_arn=row.kms_key_arn,
            turns=turns,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    def record(self, session: RagSession, turn: Turn | None) -> None:
        """Append ``turn`` to the session (creating its row on its first call); the session keeps the
        latest ``max_turns``. ``None`` keeps the session without a turn (a question a guardrail blocked).
        Expired sessions are deleted when a new one starts."""
        now = self.clock()
        added = [turn.__dict__] if turn is not None else []
        with self.db.begin() as conn:
            if session.is_new:
                conn.execute(rag_sessions.delete().where(rag_sessions.c.expires_at <= now))
                conn.execute(
                    rag_sessions.insert().values(
                        id=session.id,
                        owner=session.owner,
                        knowledge_base_id=session.knowledge_base_id,
                        kms_key_arn=session.kms_key_arn,
                        turns=json.dumps(added),
                        created_at=session.created_at,
                        updated_at=now,
                        expires_at=session.expires_at,
                    )
                )
                return
            # Read inside the write transaction: two follow-ups at once both land, in some order.
            raw = conn.execute(
                sa.select(rag_sessions.c.turns).where(rag_sessions.c.id == session.id).with_for_update()
            ).scalar()
            if raw is None:  # deleted meanwhile (expired): the answer stands, the turn is not kept
                return
            turns = [*json.loads(raw), *added][-self.max_turns :]
            conn.execute(
                rag_sessions.update()
                .where(rag_sessions.c.id == session.id)
                .values(turns=json.dumps(turns), updated_at=now, knowledge_base_id=session.knowledge_base_id)
            )

    def purge_expired(self) -> int:
        """Delete expired sessions; the number deleted."""
        with self.db.begin() as conn:
            return int(
                conn.execute(rag_sessions.delete().where(rag_sessions.c.expires_at <= self.clock())).rowcount
            )
