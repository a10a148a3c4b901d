"""Principals and their credentials: SigV4 access keys (secret encrypted at rest) and bearer API keys.

SigV4 verification needs the secret itself, so it is stored encrypted with the server key
(``<data-dir>/server.key``, mode 0600; share it between gateways of one store). Bearer API
keys are only ever compared, so only their sha256 is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from outcrop.errors import ConfigError, ConflictError, NotFoundError
from outcrop.store.db import Database
from outcrop.store.schema import principals

ACCESS_KEY_PREFIX = "OCKA"
# Verified keys are remembered this long, so a request costs no database query. A key deleted or
# rotated on another gateway stops working within this time (on this one, at once).
KEY_CACHE_SECONDS = 5.0
API_KEY_PREFIX = "ocp-"


@dataclass(frozen=True)
class Principal:
    id: str
    name: str
    access_key_id: str
    api_key_prefix: str | None
    policy: dict[str, Any]
    created_at: float

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::000000000000:user/{self.name}"


@dataclass(frozen=True)
class NewCredentials:
    """Shown once, when created or rotated."""

    principal: Principal
    access_key_id: str
    secret_access_key: str
    api_key: str


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def load_or_create_server_key(path: Path) -> bytes:
    if path.exists():
        key = path.read_bytes().strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    try:
        Fernet(key)
    except ValueError:
        raise ConfigError(f"{path} is not a valid Outcrop server key; restore it from backup.") from None
    return key


class KeyStore:
    def __init__(self, db: Database, server_key: bytes) -> None:
        self.db = db
        self._fernet = Fernet(server_key)
        self._cache: dict[str, tuple[float, Any]] = {}

    def _cached(self, key: str) -> Any:
        hit = self._cache.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _remember(self, key: str, value: Any) -> Any:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + KEY_CACHE_SECONDS, value)
        return value

    def _row_to_principal(self, row: Any) -> Principal:
        m = row._mapping
        return Principal(
            m["id"],
            m["name"],
            m["access_key_id"],
            m["api_key_prefix"],
            json.loads(m["policy"]),
            m["created_at"],
        )

    def create(
        self,
        name: str,
        policy: dict[str, Any],
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        api_key: str | None = None,
        principal_id: str | None = None,
    ) -> NewCredentials:
        access_key_id = access_key_id or ACCESS_KEY_PREFIX + _random(
            string.ascii_uppercase + string.digits, 16
        )
        secret_access_key = secret_access_key or _random(string.ascii_letters + string.digits + "/+", 40)
        api_key = api_key or API_KEY_PREFIX + secrets.token_urlsafe(30)
        values = {
            "id": principal_id or _random(string.ascii_lowercase + string.digits, 12),
            "name": name,
            "access_key_id": access_key_id,
            "secret_encrypted": self._fernet.encrypt(secret_access_key.encode()).decode(),
            "api_key_hash": hash_api_key(api_key),
            "api_key_prefix": api_key[:8],
            "policy": json.dumps(policy),
            "created_at": time.time(),
        }
        with self.db.begin() as conn:
            taken = conn.execute(
                sa.select(principals.c.id).where(
                    sa.or_(principals.c.name == name, principals.c.access_key_id == access_key_id)
                )
            ).first()
            if taken:
                raise ConflictError(
                    f"A principal named '{name}' (or with that access key) already exists; "
                    "choose another name or rotate its keys."
                )
            conn.execute(principals.insert().values(**values))
        principal = self.get(name)
        return NewCredentials(principal, access_key_id, secret_access_key, api_key)

    def get(self, name: str) -> Principal:
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(principals).where(principals.c.name == name)).first()
        if row is None:
            raise NotFoundError("Principal", name, "List them with `outcrop keys ls`.")
        return self._row_to_principal(row)

    def list(self) -> list[Principal]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(principals).order_by(principals.c.created_at))
            return [self._row_to_principal(r) for r in rows]

    def count(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(principals)).scalar_one())

    def delete(self, name: str) -> None:
        with self.db.begin() as conn:
            if conn.execute(principals.delete().where(principals.c.name == name)).rowcount != 1:
                raise NotFoundError("Principal", name)
        self._cache.clear()

    def rotate(self, name: str) -> NewCredentials:
        """New keys, same principal (its id stays, so the batch jobs it created stay its own)."""
        old = self.get(name)
        with self.db.begin() as conn:
            conn.execute(principals.delete().where(principals.c.id == old.id))
        self._cache.clear()
        return self.create(name, old.policy, principal_id=old.id)

    def by_id(self, principal_id: str) -> Principal | None:
        """The principal with this id as stored now (cached briefly), or None once it is deleted."""
        hit = self._cached("id:" + principal_id)
        if hit is not None:
            return hit if isinstance(hit, Principal) else None
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(principals).where(principals.c.id == principal_id)).first()
        found = self._row_to_principal(row) if row is not None else False  # False: remembered absence
        remembered = self._remember("id:" + principal_id, found)
        return remembered if isinstance(remembered, Principal) else None

    def by_access_key(self, access_key_id: str) -> tuple[Principal, str] | None:
        hit = self._cached("ak:" + access_key_id)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        with self.db.engine.connect() as conn:
            row = conn.execute(
                sa.select(principals).where(principals.c.access_key_id == access_key_id)
            ).first()
        if row is None:
            return None
        try:
            secret = self._fernet.decrypt(row._mapping["secret_encrypted"].encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "Stored secrets cannot be decrypted with this server key; every gateway of one "
                "store must use the same server key file."
            ) from None
        return self._remember("ak:" + access_key_id, (self._row_to_principal(row), secret))  # type: ignore[no-any-return]

    def by_api_key(self, api_key: str) -> Principal | None:
        digest = hash_api_key(api_key)
        hit = self._cached("api:" + digest)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(principals).where(principals.c.api_key_hash == digest)).first()
        if row is None:
            return None
        return self._remember("api:" + digest, self._row_to_principal(row))  # type: ignore[no-any-return]
