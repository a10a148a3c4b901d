"""Guardrails and their numbered versions in the metadata store (tables of migration 13).

The draft (``DRAFT``) lives in ``guardrails.spec`` and changes with UpdateGuardrail; each
CreateGuardrailVersion copies it into ``guardrail_versions`` under the next number, and that row
is never updated. Every write is one transaction, so a failed request leaves nothing behind.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictError, NotFoundError
from outcrop.guardrails.policy import GuardrailSpec
from outcrop.store.db import Database
from outcrop.store.imports import new_id
from outcrop.store.schema import guardrail_versions, guardrails

DRAFT = "DRAFT"


class GuardrailStatus(enum.StrEnum):
    """Bedrock's GuardrailStatus. Outcrop applies changes synchronously, so rows are READY at rest."""

    CREATING = "CREATING"  # never stored: CreateGuardrail commits a READY row in one transaction
    UPDATING = "UPDATING"  # never stored: UpdateGuardrail is one transaction
    VERSIONING = "VERSIONING"  # never stored: CreateGuardrailVersion is one transaction
    READY = "READY"  # usable by ApplyGuardrail and the runtime
    FAILED = "FAILED"  # not produced: a bad configuration is refused before anything is stored
    DELETING = "DELETING"  # never stored: DeleteGuardrail removes the rows at once

    def is_terminal(self) -> bool:
        return self in (GuardrailStatus.READY, GuardrailStatus.FAILED)


@dataclass
class GuardrailRow:
    """One guardrail version: the draft (version ``DRAFT``) or a numbered one."""

    id: str
    version: str
    spec: GuardrailSpec
    status: GuardrailStatus
    created_at: float
    updated_at: float
    tags: list[dict[str, str]] = field(default_factory=list)
    version_description: str | None = None

    @property
    def description(self) -> str | None:
        # A numbered version answers with the description given to CreateGuardrailVersion, if any.
        return self.version_description or self.spec.description


def _draft(row: Any) -> GuardrailRow:
    return GuardrailRow(
        id=row.id,
        version=DRAFT,
        spec=GuardrailSpec.from_json(json.loads(row.spec)),
        status=GuardrailStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        tags=json.loads(row.tags or "[]"),
    )


class GuardrailStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads -----------------------------------------------------------------------------------

    def find_id(self, identifier: str) -> str | None:
        """A guardrail id for an id (ARN already reduced to it) or, as a convenience, a name."""
        with self.db.engine.connect() as conn:
            found = conn.execute(
                sa.select(guardrails.c.id).where(
                    sa.or_(guardrails.c.id == identifier, guardrails.c.name == identifier)
                )
            ).scalar()
        return str(found) if found is not None else None

    def get(self, guardrail_id: str, version: str = DRAFT) -> GuardrailRow:
        with self.db.engine.connect() as conn:
            draft = conn.execute(sa.select(guardrails).where(guardrails.c.id == guardrail_id)).first()
            if draft is None:
                raise NotFoundError("Guardrail", guardrail_id, "List guardrails with ListGuardrails.")
            if version == DRAFT:
                return _draft(draft)
            row = conn.execute(
                sa.select(guardrail_versions).where(
                    guardrail_versions.c.guardrail_id == guardrail_id,
                    guardrail_versions.c.version == int(version),
                )
            ).first()
        if row is None:
            raise NotFoundError(
                "Guardrail version",
                f"{guardrail_id}:{version}",
                "Use DRAFT or a version made with CreateGuardrailVersion (ListGuardrails with "
                "guardrailIdentifier lists them).",
            )
        return GuardrailRow(
            id=guardrail_id,
            version=str(row.version),
            spec=GuardrailSpec.from_json(json.loads(row.spec)),
            status=GuardrailStatus.READY,
            created_at=row.created_at,
            updated_at=row.created_at,
            tags=json.loads(draft.tags or "[]"),
            version_description=row.description,
        )

    def list_drafts(self) -> list[GuardrailRow]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(guardrails).order_by(guardrails.c.created_at, guardrails.c.id)
            ).all()
        return [_draft(r) for r in rows]

    def list_versions(self, guardrail_id: str) -> list[GuardrailRow]:
        draft = self.get(guardrail_id)
        with self.db.engine.connect() as conn:
            numbers = conn.execute(
                sa.select(guardrail_versions.c.version)
                .where(guardrail_versions.c.guardrail_id == guardrail_id)
                .order_by(guardrail_versions.c.version)
            ).scalars()
            versions = [int(n) for n in numbers]
        return [draft, *(self.get(guardrail_id, str(v)) for v in versions)]

    # -- writes ----------------------------------------------------------------------------------

    def create(
        self, spec: GuardrailSpec, tags: list[dict[str, str]], client_request_token: str | None
    ) -> GuardrailRow:
        now = time.time()
        with self.db.begin() as conn:
            if client_request_token:
                same = conn.execute(
                    sa.select(guardrails).where(guardrails.c.client_request_token == client_request_token)
                ).first()
                if same is not None:  # a retried request: the guardrail it already made
                    return _draft(same)
            if conn.execute(sa.select(guardrails.c.id).where(guardrails.c.name == spec.name)).first():
                raise ConflictError(
                    f"A guardrail named '{spec.name}' already exists. Choose another name, or change that one "
                    "with UpdateGuardrail."
                )
            guardrail_id = new_id()
            try:
                conn.execute(
                    guardrails.insert().values(
                        id=guardrail_id,
                        name=spec.name,
                        status=GuardrailStatus.READY.value,
                        spec=json.dumps(spec.to_json()),
                        tags=json.dumps(tags),
                        client_request_token=client_request_token,
                        next_version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
            except IntegrityError:
                raise ConflictError(
                    f"A guardrail named '{spec.name}' already exists. Choose another name."
                ) from None
        return self.get(guardrail_id)

    def update(self, guardrail_id: str, spec: GuardrailSpec) -> GuardrailRow:
        now = time.time()
        with self.db.begin() as conn:
            clash = conn.execute(
                sa.select(guardrails.c.id).where(
                    guardrails.c.name == spec.name, guardrails.c.id != guardrail_id
                )
            ).first()
            if clash is not None:
                raise ConflictError(f"Another guardrail is already named '{spec.name}'. Choose another name.")
            done = conn.execute(
                guardrails.update()
                .where(guardrails.c.id == guardrail_id)
                .values(name=spec.name, spec=json.dumps(spec.to_json()), updated_at=now)
            ).rowcount
        if not done:
            raise NotFoundError("Guardrail", guardrail_id, "List guardrails with ListGuardrails.")
        return self.get(guardrail_id)

    def create_version(
        self, guardrail_id: str, description: str | None, client_request_token: str | None
    ) -> str:
        now = time.time()
        with self.db.begin() as conn:
            draft = conn.execute(sa.select(guardrails).where(guardrails.c.id == guardrail_id)).first()
            if draft is None:
                raise NotFoundError("Guardrail", guardrail_id, "List guardrails with ListGuardrails.")
            if client_request_token:
                same = conn.execute(
                    sa.select(guardrail_versions.c.version).where(
                        guardrail_versions.c.guardrail_id == guardrail_id,
                        guardrail_versions.c.client_request_token == client_request_token,
                    )
                ).scalar()
                if same is not None:
                    return str(same)
            number = int(draft.next_version)
            conn.execute(
                guardrail_versions.insert().values(
                    guardrail_id=guardrail_id,
                    version=number,
                    description=description,
                    spec=draft.spec,
                    client_request_token=client_request_token,
                    created_at=now,
                )
            )
            conn.execute(
                guardrails.update().where(guardrails.c.id == guardrail_id).values(next_version=number + 1)
            )
        return str(number)

    def delete(self, guardrail_id: str, version: str | None) -> None:
        with self.db.begin() as conn:
            if version is None:
                conn.execute(
                    guardrail_versions.delete().where(guardrail_versions.c.guardrail_id == guardrail_id)
                )
                done = conn.execute(guardrails.delete().where(guardrails.c.id == guardrail_id)).rowcount
                if not done:
                    raise NotFoundError("Guardrail", guardrail_id, "List guardrails with ListGuardrails.")
                return
            done = conn.execute(
                guardrail_versions.delete().where(
                    guardrail_versions.c.guardrail_id == guardrail_id,
                    guardrail_versions.c.version == int(version),
                )
            ).rowcount
        if not done:
            raise NotFoundError(
                "Guardrail version", f"{guardrail_id}:{version}", "ListGuardrails lists them."
            )
