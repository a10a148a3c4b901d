"""Fixtures for the registry tests: tiny model folders built once per session, copied per test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outcrop.testing.tiny_models import build_tiny_model


@pytest.fixture(scope="session")
def _tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    built: dict[tuple[tuple[str, Any], ...], Path] = {}

    def get(**spec: Any) -> Path:
        key = tuple(sorted(spec.items()))
        if key not in built:
            built[key] = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", **spec)
        return built[key]

    return get


@pytest.fixture
def tiny_model(_tiny_model_cache: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """``tiny_model(family="qwen2", **overrides)`` -> a fresh copy of a cached tiny model folder."""
    counter = iter(range(1000))

    def make(family: str = "llama", **overrides: Any) -> Path:
        source = _tiny_model_cache(family=family, **overrides)
        dest = tmp_path / f"{family}-{next(counter)}"
        shutil.copytree(source, dest)
        return dest

    return make
