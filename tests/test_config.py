"""Configuration: every section can be set from OUTCROP_* variables; bad values are clear errors."""

from __future__ import annotations

import pytest

from outcrop.config import OutcropConfig
from outcrop.envs import _EnvConfig, load_config
from outcrop.errors import ConfigError


def test_every_config_section_is_reachable_from_the_environment() -> None:
    sections = {name for name, f in OutcropConfig.model_fields.items() if name != "data_dir"}
    assert sections <= set(_EnvConfig.model_fields)


def test_nested_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTCROP_SERVER__PORT", "9123")
    monkeypatch.setenv("OUTCROP_SERVING__WORKER_THREADS", "1")
    monkeypatch.setenv("OUTCROP_THROTTLING__REQUESTS_PER_SECOND", "5")
    monkeypatch.setenv("OUTCROP_DATABASE_URL", "sqlite:////tmp/x.db")
    config = load_config()
    assert config.server.port == 9123
    assert config.serving.worker_threads == 1
    assert config.throttling.requests_per_second == 5
    assert config.database_url == "sqlite:////tmp/x.db"


def test_flags_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTCROP_SERVER__PORT", "9123")
    assert load_config(**{"server.port": 9000}).server.port == 9000


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTCROP_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config()


def test_defaults_bind_loopback_and_use_sqlite() -> None:
    config = OutcropConfig()
    assert config.server.host == "127.0.0.1"
    assert config.database_url.startswith("sqlite:///")
