"""Ingestion survives ``kill -9`` of its server (resumed on restart: every chunk exactly once, every
document counted once) and StopIngestionJob stops a running job (the next sync picks up the rest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.knowledge.kb_helpers import create_ds, create_kb, import_embedder, wait_job, write_corpus

pytestmark = pytest.mark.e2e

DOCUMENTS = 120
# Two chunks per embedding call, one call at a time: slow enough to be caught mid-way.
SLOW = {"OUTCROP_KNOWLEDGE__EMBEDDING_BATCH_SIZE": "2", "OUTCROP_KNOWLEDGE__EMBEDDING_CONCURRENCY": "1"}


def wait_for_progress(agent: Any, kb_id: str, ds_id: str, job_id: str, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = agent.get_ingestion_job(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id
        )["ingestionJob"]
        if job["statistics"]["numberOfNewDocumentsIndexed"] >= at_least or job["status"] == "COMPLETE":
            return job
        time.sleep(0.05)
    raise AssertionError("the job made no progress")


def test_a_killed_server_resumes_ingestion_without_duplicate_or_missing_chunks(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    from outcrop.knowledge.store import open_store

    server = start_server(**SLOW)
    embedder = import_embedder(server, tmp_path)
    folder = tmp_path / "corpus"
    write_corpus(folder, DOCUMENTS, seed=11)
    agent = server_agent(server)
    kb_id = create_kb(agent, embedder, name="killed")
    ds_id = create_ds(agent, kb_id, folder)
    job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"][
        "ingestionJobId"
    ]
    before = wait_for_progress(agent, kb_id, ds_id, job_id, at_least=10)
    assert before["status"] == "IN_PROGRESS", "the job finished before it could be killed; make it slower"
    server.kill()

    server.start()  # the same data dir and store: the lease runs out and the job is taken over
    agent = server_agent(server)
    job = wait_job(agent, kb_id, ds_id, job_id, timeout=300)
    assert job["status"] == "COMPLETE", job
    stats = job["statistics"]
    assert stats["numberOfDocumentsScanned"] == DOCUMENTS
    assert stats["numberOfNewDocumentsIndexed"] == DOCUMENTS  # each document counted once
    assert stats["numberOfDocumentsFailed"] == 0
    server.stop()
    assert open_store(str(server.data_dir / "knowledge")).count(kb_id) == DOCUMENTS  # one chunk per document


def test_stop_ingestion_job_stops_and_the_next_sync_indexes_the_rest(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(**SLOW)
    embedder = import_embedder(server, tmp_path)
    folder = tmp_path / "corpus"
    write_corpus(folder, DOCUMENTS, seed=12, sidecar=False)
    agent = server_agent(server)
    kb_id = create_kb(agent, embedder, name="stopped")
    ds_id = create_ds(agent, kb_id, folder)
    job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"][
        "ingestionJobId"
    ]
    wait_for_progress(agent, kb_id, ds_id, job_id, at_least=6)
    stopping = agent.stop_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)
    assert stopping["ingestionJob"]["status"] in ("STOPPING", "STOPPED")
    stopped = wait_job(agent, kb_id, ds_id, job_id)
    assert stopped["status"] == "STOPPED"
    done = stopped["statistics"]["numberOfNewDocumentsIndexed"]
    assert 0 < done < DOCUMENTS
    second = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    finished = wait_job(agent, kb_id, ds_id, second["ingestionJobId"], timeout=300)
    assert finished["status"] == "COMPLETE"
    assert finished["statistics"]["numberOfNewDocumentsIndexed"] == DOCUMENTS - done


def server_agent(server: ServerProcess) -> Any:
    from tests.conftest import boto3_client

    return boto3_client("bedrock-agent", server.url)
