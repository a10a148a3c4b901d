"""The import store on SQLite and PostgreSQL: names, quotas, atomic claims, leases, registration, deletion."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from outcrop.errors import ConflictError, InvalidRequestError, NotFoundError, QuotaExceededError
from outcrop.store.db import Database
from outcrop.store.imports import (
    ImportedModel,
    ImportJob,
    ImportJobStatus,
    ImportStore,
    ListFilter,
    ModelFile,
    new_id,
)


def a_job(**overrides: Any) -> ImportJob:
    values: dict[str, Any] = {
        "id": new_id(),
        "name": f"job-{new_id()}",
        "imported_model_name": f"model-{new_id()}",
        "source_uri": "/models/x",
    }
    values.update(overrides)
    return ImportJob(**values)


def a_model(**overrides: Any) -> ImportedModel:
    values: dict[str, Any] = {
        "id": new_id(),
        "name": f"model-{new_id()}",
        "source_uri": "/models/x",
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "parameter_count": 1000,
        "dtype": "float32",
        "context_length": 2048,
        "size_bytes": 4000,
        "instruct_supported": True,
        "memory_estimate_bytes": 10_000,
    }
    values.update(overrides)
    return ImportedModel(**values)


@pytest.fixture
def store(database_url: str) -> ImportStore:
    db = Database(database_url)
    db.migrate()
    return ImportStore(db)


def create(
    store: ImportStore, job: ImportJob, *, max_in_progress: int = 10, max_models: int = 100
) -> ImportJob:
    return store.create_job(job, max_in_progress=max_in_progress, max_models=max_models)


def register(
    store: ImportStore, job: ImportJob, files: list[ModelFile], **model_overrides: Any
) -> ImportedModel:
    assert store.claim(job.id, "w", 30)
    model = a_model(name=job.imported_model_name, job_id=job.id, **model_overrides)
    store.complete(job.id, "w", model, files)
    return model


def test_migrations_are_idempotent(database_url: str) -> None:
    db = Database(database_url)
    assert db.migrate() == db.migrate()


def test_concurrent_migrators_do_not_collide(database_url: str) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            Database(database_url).migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_job_is_found_by_id_and_by_name(store: ImportStore) -> None:
    job = create(store, a_job())
    assert store.get_job(job.id).name == job.name
    assert store.get_job(job.name).id == job.id
    with pytest.raises(NotFoundError, match="not found"):
        store.get_job("nope")


def test_duplicate_job_name_is_a_conflict(store: ImportStore) -> None:
    create(store, a_job(name="dup"))
    with pytest.raises(ConflictError, match="already exists"):
        create(store, a_job(name="dup"))


def test_same_client_token_returns_the_existing_job(store: ImportStore) -> None:
    first = create(store, a_job(name="tok", client_request_token="t-1"))
    again = create(store, a_job(name="tok", client_request_token="t-1"))
    assert again.id == first.id


def test_model_name_taken_by_running_job_or_model_is_a_conflict(store: ImportStore) -> None:
    job = create(store, a_job(imported_model_name="m1"))
    with pytest.raises(ConflictError, match="already importing"):
        create(store, a_job(imported_model_name="m1"))
    register(store, job, [])
    with pytest.raises(ConflictError, match="already exists"):
        create(store, a_job(imported_model_name="m1"))


def test_concurrent_import_quota(store: ImportStore) -> None:
    create(store, a_job(), max_in_progress=1)
    with pytest.raises(QuotaExceededError, match="quota of concurrent import jobs is 1") as info:
        create(store, a_job(), max_in_progress=1)
    assert info.value.limit == 1


def test_imported_model_quota_counts_models_and_running_imports(store: ImportStore) -> None:
    register(store, create(store, a_job()), [])
    create(store, a_job())
    with pytest.raises(QuotaExceededError, match="quota of imported models is 2"):
        create(store, a_job(), max_models=2)


def test_only_one_of_many_contenders_claims_a_job(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    job = create(ImportStore(db), a_job())
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def contend(worker: str) -> None:
        store = ImportStore(Database(database_url))  # a separate engine: like another server process
        barrier.wait()
        if store.claim(job.id, worker, 30):
            wins.append(worker)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert ImportStore(db).get_job(job.id).claimed_by == wins[0]


def test_a_stale_claim_can_be_taken_over_and_the_old_holder_loses_it(store: ImportStore) -> None:
    job = create(store, a_job())
    assert store.claim(job.id, "dead", 0.2)
    assert not store.claim(job.id, "other", 0.2)
    time.sleep(0.3)
    assert job.id in store.claimable_job_ids(0.2)
    assert store.claim(job.id, "other", 0.2)
    assert store.get_job(job.id).attempts == 2
    assert not store.update_progress(job.id, "dead", bytes_done=5)
    assert store.update_progress(job.id, "other", bytes_done=5)


def test_complete_registers_model_and_files_atomically(store: ImportStore) -> None:
    job = create(store, a_job())
    files = [ModelFile("config.json", "a" * 64, 10), ModelFile("model.safetensors", "b" * 64, 20)]
    model = register(store, job, files)
    done = store.get_job(job.id)
    assert done.status is ImportJobStatus.COMPLETED and done.status.is_terminal()
    assert done.imported_model_id == model.id
    assert store.get_model(model.name).id == model.id
    assert [f.path for f in store.model_files(model.id)] == ["config.json", "model.safetensors"]


def test_complete_by_a_worker_without_the_claim_registers_nothing(store: ImportStore) -> None:
    job = create(store, a_job())
    assert store.claim(job.id, "holder", 30)
    with pytest.raises(ConflictError):
        store.complete(
            job.id, "intruder", a_model(name=job.imported_model_name), [ModelFile("c", "c" * 64, 1)]
        )
    with pytest.raises(NotFoundError):
        store.get_model(job.imported_model_name)


def test_failed_job_keeps_its_message_and_cannot_complete(store: ImportStore) -> None:
    job = create(store, a_job())
    assert store.claim(job.id, "w", 30)
    assert store.fail(job.id, "config.json missing", worker="w")
    failed = store.get_job(job.id)
    assert failed.status is ImportJobStatus.FAILED and failed.failure_message == "config.json missing"
    assert not store.fail(job.id, "again")


def test_delete_returns_only_blobs_no_other_model_uses(store: ImportStore) -> None:
    shared, own = "s" * 64, "o" * 64
    m1 = register(store, create(store, a_job()), [ModelFile("a", shared, 1), ModelFile("b", own, 1)])
    register(store, create(store, a_job()), [ModelFile("a", shared, 1)])
    assert store.delete_model(m1.id) == [own]
    assert store.blob_is_referenced(shared)
    with pytest.raises(NotFoundError):
        store.delete_model(m1.id)


@pytest.mark.parametrize("ascending", [True, False])
def test_listing_pages_through_every_job_once_in_order(store: ImportStore, ascending: bool) -> None:
    names = []
    for i in range(7):
        names.append(create(store, a_job(name=f"page-{i}")).name)
        time.sleep(0.002)
    seen: list[str] = []
    token = None
    while True:
        page = store.list_jobs(ListFilter(max_results=3, next_token=token, ascending=ascending))
        seen += [j.name for j in page.items]
        token = page.next_token
        if token is None:
            break
    assert seen == (names if ascending else names[::-1])


def test_listing_filters_by_status_name_and_time(store: ImportStore) -> None:
    before = time.time()
    a = create(store, a_job(name="alpha-job"))
    create(store, a_job(name="beta-job"))
    assert store.claim(a.id, "w", 30) and store.fail(a.id, "x")
    assert [j.name for j in store.list_jobs(ListFilter(status=ImportJobStatus.FAILED)).items] == ["alpha-job"]
    assert [j.name for j in store.list_jobs(ListFilter(name_contains="beta")).items] == ["beta-job"]
    assert store.list_jobs(ListFilter(created_before=before)).items == []
    assert len(store.list_jobs(ListFilter(created_after=before)).items) == 2


def test_a_forged_next_token_is_a_validation_error(store: ImportStore) -> None:
    with pytest.raises(InvalidRequestError, match="nextToken"):
        store.list_jobs(ListFilter(next_token="not-a-token!"))
