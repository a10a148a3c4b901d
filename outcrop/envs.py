"""The only module that reads ``os.environ``.

Environment variables (all optional):

- ``OUTCROP_DATA_DIR``: data folder (default ``~/.outcrop``).
- ``OUTCROP_DATABASE_URL``: metadata store URL, e.g. ``postgresql+psycopg://user@host/db``.
- ``OUTCROP_RAY_ADDRESS``: the Ray cluster of the ``ray`` launcher (``auto``, ``ray://head:10001``);
  same as ``OUTCROP_RAY__ADDRESS``, which wins when both are set.
- ``OUTCROP_<SECTION>__<FIELD>``: any field of ``OutcropConfig``, e.g. ``OUTCROP_SERVER__PORT=9000``,
  ``OUTCROP_REGISTRY__ALLOWED_ROOTS='["/data/models"]'``, ``OUTCROP_S3__ENDPOINT_URL=http://127.0.0.1:9000``.
- ``OUTCROP_TEST_POSTGRES_URL``: PostgreSQL used by the test suite.
- ``OUTCROP_COPY_TOKEN``: set by a launcher in a copy's environment only: the secret the copy
  requires in ``Authorization: Bearer`` on every route but ``/health`` (see ``outcrop.engine.auth``).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from outcrop.config import (
    AuthConfig,
    AwsIdentityConfig,
    BatchConfig,
    KnowledgeConfig,
    OutcropConfig,
    RayConfig,
    RegistryConfig,
    S3Config,
    SageMakerConfig,
    ServerConfig,
    ServingConfig,
    StoreConfig,
    ThrottlingConfig,
)
from outcrop.errors import ConfigError


class _EnvConfig(BaseSettings):
    """OutcropConfig as the environment spells it."""

    model_config = SettingsConfigDict(env_prefix="OUTCROP_", env_nested_delimiter="__", extra="ignore")

    data_dir: str | None = None
    database_url: str | None = None
    server: ServerConfig = ServerConfig()
    aws: AwsIdentityConfig = AwsIdentityConfig()
    store: StoreConfig = StoreConfig()
    s3: S3Config = S3Config()
    registry: RegistryConfig = RegistryConfig()
    throttling: ThrottlingConfig = ThrottlingConfig()
    auth: AuthConfig = AuthConfig()
    serving: ServingConfig = ServingConfig()
    batch: BatchConfig = BatchConfig()
    ray: RayConfig = RayConfig()
    sagemaker: SageMakerConfig = SageMakerConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    ray_address: str | None = None


def load_config(**overrides: Any) -> OutcropConfig:
    """Build the config from defaults, ``OUTCROP_*`` variables, then ``overrides`` (CLI flags).

    ``overrides`` uses dotted keys for nested fields: ``load_config(**{"server.port": 9000})``.
    """
    try:
        env = _EnvConfig()
    except ValidationError as exc:
        raise ConfigError(f"An OUTCROP_* environment variable is invalid: {_first_error(exc)}") from None
    data: dict[str, Any] = env.model_dump(exclude_unset=True, exclude={"database_url", "ray_address"})
    if env.database_url:
        data.setdefault("store", {})["database_url"] = env.database_url
    if env.ray_address and "address" not in data.get("ray", {}):
        data.setdefault("ray", {})["address"] = env.ray_address
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return OutcropConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"Invalid configuration: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def test_postgres_url() -> str | None:
    """PostgreSQL URL for the test suite; defaults to the local server on this project's machines."""
    return os.environ.get("OUTCROP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def worker_id_hint() -> str:
    """A stable-ish id for this process in job claims (host + pid)."""
    return f"{os.uname().nodename}:{os.getpid()}"


def default_endpoint(config: OutcropConfig) -> str:
    """Where the CLI finds the server: ``OUTCROP_ENDPOINT``, else the configured host and port."""
    explicit = os.environ.get("OUTCROP_ENDPOINT")
    if explicit:
        return explicit
    host = config.server.host if config.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{config.server.port}"


# The variable a launcher puts a copy's token in (the environment, never the command line,
# which every local user can read with `ps`).
COPY_TOKEN_ENV = "OUTCROP_COPY_TOKEN"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment plus ``extra``, for child processes (servers, copies).

    A copy token this process was given itself is not passed on: each copy gets its own.
    """
    env = {k: v for k, v in os.environ.items() if k != COPY_TOKEN_ENV}
    env.update(extra)
    return env


def copy_token() -> str | None:
    """The token this copy requires of its callers (``OUTCROP_COPY_TOKEN``); None when none was given."""
    return os.environ.get(COPY_TOKEN_ENV) or None


def cli_api_key() -> str | None:
    """The API key the CLI sends: ``OUTCROP_API_KEY``, else the admin's from the data dir."""
    return os.environ.get("OUTCROP_API_KEY")
