"""Fixtures for the batch tests: a registry with imported tiny models (built once), an in-process
batch service whose copies are null copies started by the real ``command`` launcher, and
builders for input files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from outcrop.batch.service import BatchService, build_batch_service
from outcrop.batch.store import BatchJob
from outcrop.config import OutcropConfig
from outcrop.envs import load_config
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import CreateImportJob, Registry
from outcrop.serving.service import Serving
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter

# alpha: llama with a chat template; plain: qwen2 without one (chat-style records are errors).
MODELS = {"alpha": {"family": "llama"}, "plain": {"family": "qwen2", "chat_template": False}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def batch_registry_dir(
    tiny_model_cache: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A data dir whose SQLite store and model store hold the imported models alpha and plain."""
    root = tmp_path_factory.mktemp("batch-registry")
    sources = {name: tiny_model_cache(**spec) for name, spec in MODELS.items()}
    config = load_config(
        data_dir=root / "data", **{"registry.allowed_roots": [p.parent for p in sources.values()]}
    )
    db = Database(config.database_url)
    db.migrate()
    registry = Registry(config, db)
    importer = ImportWorker(registry)
    for name, source in sources.items():
        job = registry.create_import_job(
            CreateImportJob(job_name=f"import-{name}", imported_model_name=name, source_uri=str(source))
        )
        assert registry.jobs.claim(job.id, importer.worker_id, 30)
        importer.run(job.id)
        assert registry.get_job(job.id).status.value == "Completed"
    db.dispose()
    return root / "data"


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
def batch_config(tmp_path: Path, batch_registry_dir: Path) -> Callable[..., OutcropConfig]:
    """``batch_config(*nullcopy_args, **dotted_overrides)``: a private copy of the registry's store,
    null copies, fast timers; inputs and outputs may live under ``tmp_path``."""
    db_file = tmp_path / "outcrop.db"
    shutil.copyfile(batch_registry_dir / "outcrop.db", db_file)

    def make(*nullcopy_args: str, **overrides: Any) -> OutcropConfig:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "store.database_url": f"sqlite:///{db_file}",
            "store.job_lease_seconds": 2.0,
            "registry.model_store_url": str(batch_registry_dir / "models"),
            "registry.allowed_roots": [tmp_path],
            "serving.launcher": "command",
            "serving.command_template": nullcopy_template(*nullcopy_args),
            "serving.autoscaler_interval_seconds": 0.1,
            "serving.health_interval_seconds": 0.2,
            "serving.drain_timeout_seconds": 5.0,
            "serving.copy_start_timeout_seconds": 30.0,
            "batch.checkpoint_interval_seconds": 0.1,
        }
        values.update(overrides)
        return load_config(**values)

    return make


@contextlib.asynccontextmanager
async def running(config: OutcropConfig) -> AsyncIterator[BatchService]:
    """A batch service with its runner and a Serving, as ``outcrop serve`` wires them."""
    db = Database(config.database_url)
    db.migrate()
    registry = Registry(config, db)
    serving = Serving(config, registry)
    await serving.start()
    service = build_batch_service(config, db, registry, serving)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await serving.stop()
        db.dispose()


async def wait_until(service: BatchService, job_id: str, *statuses: str, timeout: float = 60) -> BatchJob:
    """Poll the job until its status is one of ``statuses`` (default: any terminal one)."""
    deadline = time.monotonic() + timeout
    job = service.store.get_job(job_id)
    while time.monotonic() < deadline:
        job = await asyncio.to_thread(service.store.get_job, job_id)
        if (job.status.value in statuses) if statuses else job.status.is_terminal():
            return job
        await asyncio.sleep(0.05)
    others = [
        (j.name, j.status.value, j.started_at, j.ended_at, j.processed_records, j.message)
        for j in service.store.list_jobs(ListFilter(ascending=True)).items
    ]
    raise AssertionError(
        f"job {job_id} is {job.status.value} after {timeout} s (wanted {statuses or 'terminal'}); jobs: {others}"
    )


def prompt_record(i: int, **extra: Any) -> dict[str, Any]:
    return {"recordId": f"r{i:05d}", "modelInput": {"prompt": f"Record {i}:", "max_gen_len": 4, **extra}}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write records (dicts as JSON, strings as raw lines) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for record in records:
            fh.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
