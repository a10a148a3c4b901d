"""Knowledge bases in the metadata store (SQLite and PostgreSQL): one unfinished ingestion job per data
source, claims like batch jobs, and documents recorded with the job's statistics in one transaction."""

from __future__ import annotations

import time

import pytest

from outcrop.errors import ConflictError
from outcrop.knowledge.kbstore import (
    DataSource,
    Failed,
    Indexed,
    IngestionJob,
    IngestionJobStatus,
    KBStore,
    KnowledgeBase,
    empty_statistics,
    new_id,
)
from outcrop.store.db import Database


@pytest.fixture
def store(database_url: str) -> KBStore:
    db = Database(database_url)
    db.migrate()
    return KBStore(db)


def make_kb(store: KBStore, name: str = "docs") -> KnowledgeBase:
    now = time.time()
    return store.create_kb(
        KnowledgeBase(new_id(), name, "ACTIVE", "abcdefghijkl", 64, {"roleArn": "r"}, [], now, now),
        client_token=None,
    )


def make_ds(store: KBStore, kb: KnowledgeBase, name: str = "folder") -> DataSource:
    now = time.time()
    return store.create_ds(
        DataSource(new_id(), kb.id, name, "AVAILABLE", {}, [], now, now), client_token=None
    )


def make_job(store: KBStore, ds: DataSource, token: str | None = None) -> IngestionJob:
    now = time.time()
    job = IngestionJob(
        new_id(), ds.knowledge_base_id, ds.id, None, "STARTING", empty_statistics(), [], now, now
    )
    return store.create_job(job, client_token=token)


def test_names_are_unique_per_knowledge_base_and_per_data_source(store: KBStore) -> None:
    kb = make_kb(store)
    with pytest.raises(ConflictError, match="already exists"):
        make_kb(store)
    make_ds(store, kb)
    with pytest.raises(ConflictError, match="already has a data source"):
        make_ds(store, kb)
    make_ds(store, make_kb(store, "other"))  # the same name under another knowledge base is fine


def test_a_data_source_runs_one_ingestion_job_at_a_time(store: KBStore) -> None:
    ds = make_ds(store, make_kb(store))
    first = make_job(store, ds, token="t" * 40)
    assert make_job(store, ds, token="t" * 40).id == first.id  # a retried start answers the same job
    with pytest.raises(ConflictError, match=first.id):
        make_job(store, ds)
    claimed = store.claim(first.id, "w1", lease_seconds=30)
    assert claimed is not None and claimed.status == "IN_PROGRESS" and claimed.attempts == 1
    assert store.claim(first.id, "w2", lease_seconds=30) is None  # w1's claim is live
    assert store.finish(first.id, "w1", IngestionJobStatus.COMPLETE)
    make_job(store, ds)


def test_a_dead_servers_claim_is_taken_over(store: KBStore) -> None:
    job = make_job(store, make_ds(store, make_kb(store)))
    assert store.claim(job.id, "dead", lease_seconds=30) is not None
    time.sleep(0.05)
    assert [j.id for j in store.claimable_jobs(lease_seconds=0.01)] == [job.id]
    taken = store.claim(job.id, "alive", lease_seconds=0.01)
    assert taken is not None and taken.attempts == 2 and taken.status == "IN_PROGRESS"
    assert store.heartbeat(job.id, "dead") is None  # the dead server's late writes are refused
    assert store.record(job.id, "dead", knowledge_base_id="k", data_source_id=job.data_source_id) is None


def test_documents_are_counted_once_with_their_records(store: KBStore) -> None:
    ds = make_ds(store, make_kb(store))
    job = make_job(store, ds)
    store.claim(job.id, "w", lease_seconds=30)
    store.set_scanned(job.id, "w", documents=3, metadata_documents=1)
    status = store.record(
        job.id,
        "w",
        knowledge_base_id=ds.knowledge_base_id,
        data_source_id=ds.id,
        indexed=[Indexed("file:///a.txt", "h1", None, 3, "numberOfNewDocumentsIndexed")],
        failed=[Failed("file:///b.pdf", "h2", None, "b.pdf: not a PDF")],
    )
    assert status == "IN_PROGRESS"
    store.set_scanned(job.id, "w", documents=3, metadata_documents=1)  # a resumed scan sets, never adds
    got = store.get_job(job.id)
    assert got is not None
    assert got.statistics["numberOfDocumentsScanned"] == 3
    assert got.statistics["numberOfNewDocumentsIndexed"] == 1
    assert got.statistics["numberOfDocumentsFailed"] == 1
    assert got.failure_reasons == ["b.pdf: not a PDF"]
    docs = store.documents(ds.id)
    assert (docs["file:///a.txt"].status, docs["file:///a.txt"].chunk_count) == ("INDEXED", 3)
    assert docs["file:///b.pdf"].status == "FAILED"
    assert store.chunk_total(ds.id) == 3
    store.record(
        job.id, "w", knowledge_base_id=ds.knowledge_base_id, data_source_id=ds.id, deleted=["file:///a.txt"]
    )
    assert "file:///a.txt" not in store.documents(ds.id)


def test_stopping_a_queued_job_stops_it_at_once_and_a_running_one_asks_it_to(store: KBStore) -> None:
    ds = make_ds(store, make_kb(store))
    queued = make_job(store, ds)
    stopped = store.request_stop(queued.id)
    assert stopped is not None and stopped.status == "STOPPED" and stopped.ended_at is not None
    running = make_job(store, ds)
    store.claim(running.id, "w", lease_seconds=30)
    stopping = store.request_stop(running.id)
    assert stopping is not None and stopping.status == "STOPPING"
    assert store.heartbeat(running.id, "w") == "STOPPING"
    assert store.finish(running.id, "w", IngestionJobStatus.STOPPED)


def test_deleting_a_knowledge_base_removes_everything_under_it(store: KBStore) -> None:
    kb = make_kb(store)
    ds = make_ds(store, kb)
    job = make_job(store, ds)
    store.claim(job.id, "w", lease_seconds=30)
    store.record(
        job.id,
        "w",
        knowledge_base_id=kb.id,
        data_source_id=ds.id,
        indexed=[Indexed("u", "h", None, 1, "numberOfNewDocumentsIndexed")],
    )
    store.delete_kb(kb.id)
    assert store.get_kb(kb.id) is None and store.list_ds(kb.id) == [] and store.get_job(job.id) is None
    assert store.documents(ds.id) == {}
