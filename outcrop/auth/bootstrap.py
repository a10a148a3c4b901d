"""First start: create the admin principal and write its credentials where the CLI finds them."""

from __future__ import annotations

import json
import logging
import os

from outcrop.auth import policies
from outcrop.auth.keys import KeyStore
from outcrop.config import OutcropConfig

log = logging.getLogger("outcrop.auth")


def ensure_admin(config: OutcropConfig, keys: KeyStore) -> None:
    """Create the ``admin`` principal when the store has none; write its keys to credentials.json (0600)."""
    if keys.count():
        return
    a = config.auth
    created = keys.create(
        "admin",
        policies.admin(),
        access_key_id=a.bootstrap_access_key_id,
        secret_access_key=a.bootstrap_secret_access_key,
        api_key=a.bootstrap_api_key,
    )
    path = config.credentials_path
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "principal": "admin",
        "aws_access_key_id": created.access_key_id,
        "aws_secret_access_key": created.secret_access_key,
        "api_key": created.api_key,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
    # INFO, not WARNING: this is the normal first start, nothing to act on.
    log.info(
        "created the admin principal; its credentials are in %s (mode 0600). Use them with boto3 "
        "(aws_access_key_id / aws_secret_access_key) or as 'Authorization: Bearer <api_key>'",
        path,
    )


def read_credentials(config: OutcropConfig) -> dict[str, str] | None:
    try:
        data = json.loads(config.credentials_path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
