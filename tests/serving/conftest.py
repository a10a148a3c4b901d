"""Fixtures for the serving tests: a registry with imported tiny models, configs whose
copies are null copies (``python -m outcrop.testing.nullcopy``) started by the real
``command`` launcher, and a running ``Serving``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.envs import load_config
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import CreateImportJob, Registry
from outcrop.serving.service import Serving
from outcrop.store.db import Database

MODEL_NAMES = ("alpha", "beta", "gamma")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def serving_registry(
    tiny_model_cache: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Registry:
    """A registry (SQLite) holding the tiny llama under the names alpha, beta and gamma."""
    source = tiny_model_cache(family="llama")
    root = tmp_path_factory.mktemp("serving-registry")
    config = load_config(data_dir=root / "data", **{"registry.allowed_roots": [source.parent]})
    db = Database(config.database_url)
    db.migrate()
    registry = Registry(config, db)
    importer = ImportWorker(registry)
    for name in MODEL_NAMES:
        job = registry.create_import_job(
            CreateImportJob(job_name=f"import-{name}", imported_model_name=name, source_uri=str(source))
        )
        assert registry.jobs.claim(job.id, importer.worker_id, 30)
        importer.run(job.id)
        assert registry.get_job(job.id).status.value == "Completed"
    return registry


def nullcopy_template(*args: str) -> str:
    return " ".join(
        [
            sys.executable,
            "-m outcrop.testing.nullcopy --port {port} --host {host} --served-name {served_name}",
            "--model-dir {model_dir}",
            *args,
        ]
    )


@pytest.fixture
def serving_config(tmp_path: Path) -> Callable[..., OutcropConfig]:
    """``serving_config(*nullcopy_args, **dotted_overrides)``: copies are null copies; fast timers."""

    def make(*nullcopy_args: str, **overrides: Any) -> OutcropConfig:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "serving.launcher": "command",
            "serving.command_template": nullcopy_template(*nullcopy_args),
            "serving.autoscaler_interval_seconds": 0.1,
            "serving.health_interval_seconds": 0.2,
            "serving.restart_backoff_initial_seconds": 0.2,
            "serving.drain_timeout_seconds": 5.0,
            "serving.copy_start_timeout_seconds": 30.0,
        }
        values.update(overrides)
        return load_config(**values)

    return make


@contextlib.asynccontextmanager
async def running(config: OutcropConfig, registry: Registry) -> AsyncIterator[Serving]:
    serving = Serving(config, registry)
    await serving.start()
    try:
        yield serving
    finally:
        await serving.stop()
