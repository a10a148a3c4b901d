"""Prompts in the metadata store: one ``prompts`` row each, and its DRAFT and numbered versions.

A version row keeps the validated content (:class:`outcrop.prompts.spec.PromptContent`) as JSON
(``spec``). Numbered versions are never updated: only the DRAFT row changes. Every operation is
one transaction, so a failure leaves nothing half-made (a prompt without its DRAFT, a version
number taken without its row).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictError
from outcrop.prompts.spec import PromptContent
from outcrop.store.db import Database
from outcrop.store.schema import prompt_versions, prompts

DRAFT = "DRAFT"
# Bedrock's prompt ids are 10 upper-case letters and digits (PromptId: [0-9a-zA-Z]{10}).
_ID_ALPHABET = string.ascii_uppercase + string.digits
ID_LENGTH = 10


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


@dataclass(frozen=True)
class PromptVersion:
    """A DRAFT or a numbered version of a prompt, with its content."""

    prompt_id: str
    version: str  # "DRAFT" or "1", "2", ...
    content: PromptContent
    created_at: float
    updated_at: float

    @property
    def is_draft(self) -> bool:
        return self.version == DRAFT


def _version(row: Any) -> PromptVersion:
    return PromptVersion(
        prompt_id=row.prompt_id,
        version=row.version,
        content=PromptContent.model_validate(json.loads(row.spec)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _version_key(version: str) -> tuple[int, int]:
    """DRAFT first, then numbered versions in order."""
    return (0, 0) if version == DRAFT else (1, int(version))


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"A prompt named '{name}' already exists. Choose another name, or change that prompt with "
        "UpdatePrompt (ListPrompts shows its id)."
    )


class PromptStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def by_client_token(self, token: str) -> str | None:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(prompts.c.id).where(prompts.c.client_token == token)).scalar()

    def create(
        self, content: PromptContent, *, client_token: str | None, tags: dict[str, str], now: float
    ) -> PromptVersion:
        prompt_id = new_id()
        try:
            with self.db.begin() as conn:
                conn.execute(
                    prompts.insert().values(
                        id=prompt_id,
                        name=content.name,
                        last_version=0,
                        client_token=client_token,
                        tags=json.dumps(tags),
                        created_at=now,
                        updated_at=now,
                    )
                )
                conn.execute(
                    prompt_versions.insert().values(
                        prompt_id=prompt_id,
                        version=DRAFT,
                        spec=json.dumps(content.wire()),
                        tags="{}",
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise _name_taken(content.name) from None
        return PromptVersion(prompt_id, DRAFT, content, now, now)

    def version(self, prompt_id: str, version: str) -> PromptVersion | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.select(prompt_versions).where(
                    prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == version
                )
            ).first()
        return _version(row) if row else None

    def exists(self, prompt_id: str) -> bool:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(prompts.c.id).where(prompts.c.id == prompt_id)).first() is not None

    def update_draft(self, prompt_id: str, content: PromptContent, *, now: float) -> PromptVersion | None:
        try:
            with self.db.begin() as conn:
                found = conn.execute(
                    prompts.update()
                    .where(prompts.c.id == prompt_id)
                    .values(name=content.name, updated_at=now)
                ).rowcount
                if not found:
                    return None
                conn.execute(
                    prompt_versions.update()
                    .where(prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == DRAFT)
                    .values(spec=json.dumps(content.wire()), updated_at=now)
                )
                created = conn.execute(
                    sa.select(prompt_versions.c.created_at).where(
                        prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == DRAFT
                    )
                ).scalar_one()
        except IntegrityError:
            raise _name_taken(content.name) from None
        return PromptVersion(prompt_id, DRAFT, content, created, now)

    def create_version(
        self,
        prompt_id: str,
        *,
        description: str | None,
        client_token: str | None,
        tags: dict[str, str],
        now: float,
    ) -> PromptVersion | None:
        """A new numbered version from the DRAFT (or the one ``client_token`` already made); None if no prompt."""
        with self.db.begin() as conn:
            if client_token:
                row = conn.execute(
                    sa.select(prompt_versions).where(
                        prompt_versions.c.prompt_id == prompt_id,
                        prompt_versions.c.client_token == client_token,
                    )
                ).first()
                if row is not None:
                    return _version(row)
            # The UPDATE takes the row's lock (PostgreSQL) before the number is read: two concurrent
            # versions of one prompt get different numbers.
            found = conn.execute(
                prompts.update()
                .where(prompts.c.id == prompt_id)
                .values(last_version=prompts.c.last_version + 1)
            ).rowcount
            if not found:
                return None
            number = conn.execute(
                sa.select(prompts.c.last_version).where(prompts.c.id == prompt_id)
            ).scalar_one()
            draft = conn.execute(
                sa.select(prompt_versions.c.spec).where(
                    prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == DRAFT
                )
            ).scalar_one()
            content = PromptContent.model_validate(json.loads(draft))
            if description is not None:
                content = content.model_copy(update={"description": description})
            conn.execute(
                prompt_versions.insert().values(
                    prompt_id=prompt_id,
                    version=str(number),
                    spec=json.dumps(content.wire()),
                    client_token=client_token,
                    tags=json.dumps(tags),
                    created_at=now,
                    updated_at=now,
                )
            )
        return PromptVersion(prompt_id, str(number), content, now, now)

    def drafts(self) -> list[PromptVersion]:
        """Every prompt's DRAFT, oldest prompt first."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(prompt_versions)
                .join(prompts, prompts.c.id == prompt_versions.c.prompt_id)
                .where(prompt_versions.c.version == DRAFT)
                .order_by(prompts.c.created_at, prompts.c.id)
            ).all()
        return [_version(r) for r in rows]

    def versions(self, prompt_id: str) -> list[PromptVersion]:
        """The prompt's DRAFT and numbered versions, DRAFT first."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(prompt_versions).where(prompt_versions.c.prompt_id == prompt_id)
            ).all()
        return sorted((_version(r) for r in rows), key=lambda v: _version_key(v.version))

    def delete(self, prompt_id: str) -> bool:
        with self.db.begin() as conn:
            conn.execute(prompt_versions.delete().where(prompt_versions.c.prompt_id == prompt_id))
            return bool(conn.execute(prompts.delete().where(prompts.c.id == prompt_id)).rowcount)

    def delete_version(self, prompt_id: str, version: str) -> bool:
        assert version != DRAFT  # the DRAFT goes with the prompt
        with self.db.begin() as conn:
            return bool(
                conn.execute(
                    prompt_versions.delete().where(
                        prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == version
                    )
                ).rowcount
            )
