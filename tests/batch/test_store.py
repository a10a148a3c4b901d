"""The batch store on SQLite and PostgreSQL: idempotent create, exclusive claims, slots under contention."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.batch.status import BatchJobStatus
from outcrop.batch.store import BatchFile, BatchJob, BatchStore, Checkpoint, crashed_too_often
from outcrop.errors import ConflictError, NotFoundError
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter, new_id
from outcrop.store.schema import batch_jobs

S = BatchJobStatus


@pytest.fixture
def store(database_url: str) -> BatchStore:
    db = Database(database_url)
    db.migrate()
    return BatchStore(db)


def make_job(name: str, model: str = "m1", **overrides: object) -> BatchJob:
    values: dict[str, object] = {
        "id": new_id(),
        "name": name,
        "model_id": model,
        "model_key": model,
        "input_uri": "/in.jsonl",
        "output_uri": "/out",
    }
    values.update(overrides)
    return BatchJob(**values)  # type: ignore[arg-type]


def scheduled(store: BatchStore, name: str, model: str = "m1") -> str:
    job, _ = store.create_job(make_job(name, model))
    assert job.id in store.claim_for_validation("validator", 30)
    assert store.finish_validation(job.id, "validator", [BatchFile(0, "in.jsonl", 10, "0" * 64, 5)])
    return job.id


def test_create_is_idempotent_on_name_and_token_and_rejects_a_taken_name(store: BatchStore) -> None:
    first, created = store.create_job(make_job("job-a", client_request_token="tok1"))
    assert created
    again, created = store.create_job(make_job("job-a", client_request_token="tok1"))
    assert not created and again.id == first.id
    with pytest.raises(ConflictError, match="job-a"):
        store.create_job(make_job("job-a", client_request_token="other"))
    assert store.get_job("job-a").id == first.id
    with pytest.raises(NotFoundError, match="batch ls"):
        store.get_job("nope")


def test_validation_claims_are_exclusive_and_a_dead_validator_is_replaced(store: BatchStore) -> None:
    job, _ = store.create_job(make_job("v1"))
    assert store.claim_for_validation("a", 30) == [job.id]
    assert store.claim_for_validation("b", 30) == []
    time.sleep(0.05)
    assert store.claim_for_validation("b", 0.01) == [job.id]  # a's lease ran out
    assert not store.finish_validation(job.id, "a", [])
    assert store.finish_validation(job.id, "b", [BatchFile(0, "x.jsonl", 1, "0" * 64, 3)])
    got = store.get_job(job.id)
    assert got.status is S.SCHEDULED and got.total_records == 3 and got.claimed_by is None


def test_slots_hold_under_contention_between_servers(store: BatchStore) -> None:
    ids = [scheduled(store, f"job-{i}", model="m1" if i < 6 else "m2") for i in range(8)]
    started: dict[str, list[str]] = {}

    def allocate(worker: str) -> None:
        started[worker] = store.allocate_slots(worker, 2)[0]

    threads = [threading.Thread(target=allocate, args=(f"server-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [j for got in started.values() for j in got]
    assert len(every) == len(set(every)) == 4  # 2 slots of m1 + 2 jobs of m2, each started once
    assert set(every) == {ids[0], ids[1], ids[6], ids[7]}
    running = [store.get_job(j) for j in every]
    assert all(j.status is S.IN_PROGRESS and j.attempts == 1 for j in running)


def test_checkpoint_needs_the_claim_and_reports_a_stop_request(store: BatchStore) -> None:
    job_id = scheduled(store, "cp")
    assert store.allocate_slots("w1", 10)[0] == [job_id]
    cp = Checkpoint([(0, 1, True), (0, 2, False)], {0: 120}, input_tokens=7, output_tokens=9)
    assert store.checkpoint(job_id, "w1", cp) is S.IN_PROGRESS
    assert store.checkpoint(job_id, "intruder", Checkpoint([], {})) is None
    assert store.request_stop(job_id) is S.STOPPING
    assert store.checkpoint(job_id, "w1", Checkpoint([(0, 3, True)], {0: 180})) is S.STOPPING
    job = store.get_job(job_id)
    assert (job.processed_records, job.success_records, job.error_records) == (3, 2, 1)
    assert (job.input_tokens, job.output_tokens) == (7, 9)
    assert store.done_records(job_id) == {(0, 1), (0, 2), (0, 3)}
    assert store.files(job_id)[0].output_bytes == 180
    assert store.move(job_id, S.STOPPED, worker="w1")
    with pytest.raises(ConflictError, match="Stopped"):
        store.request_stop(job_id)


def test_a_crashed_servers_running_job_is_taken_over_by_exactly_one_server(store: BatchStore) -> None:
    job_id = scheduled(store, "orphan")
    store.allocate_slots("dead", 10)
    assert store.claimable_running(30) == []
    with store.db.begin() as conn:  # the server died a minute ago
        conn.execute(
            batch_jobs.update().where(batch_jobs.c.id == job_id).values(heartbeat_at=time.time() - 60)
        )
    assert store.claimable_running(30) == [job_id]
    wins = [store.claim_running(job_id, f"w{i}", 30) for i in range(3)]
    assert wins == [True, False, False]
    assert store.get_job(job_id).attempts == 2


def test_scheduled_jobs_past_their_timeout_expire(store: BatchStore) -> None:
    job_id = scheduled(store, "late")
    with store.db.begin() as conn:
        conn.execute(batch_jobs.update().where(batch_jobs.c.id == job_id).values(expires_at=time.time() - 1))
    assert store.allocate_slots("w", 10) == ([], [job_id])
    job = store.get_job(job_id)
    assert job.status is S.EXPIRED and "timeoutDurationInHours" in (job.message or "")


def test_list_filters_by_status_and_name_and_pages(store: BatchStore) -> None:
    for i in range(5):
        store.create_job(make_job(f"list-{i}"))
    scheduled(store, "other-1")
    page = store.list_jobs(ListFilter(max_results=2, ascending=True))
    assert [j.name for j in page.items] == ["list-0", "list-1"] and page.next_token
    rest = store.list_jobs(ListFilter(max_results=10, ascending=True, next_token=page.next_token))
    assert [j.name for j in rest.items] == ["list-2", "list-3", "list-4", "other-1"]
    assert [j.name for j in store.list_jobs(ListFilter(), S.SCHEDULED).items] == ["other-1"]
    assert len(store.list_jobs(ListFilter(name_contains="list-")).items) == 5


def _lapse(store: BatchStore, job_id: str) -> None:
    """The claim's holder stopped heartbeating a minute ago (its server died)."""
    with store.db.begin() as conn:
        conn.execute(
            batch_jobs.update().where(batch_jobs.c.id == job_id).values(heartbeat_at=time.time() - 60)
        )


def test_taking_over_a_dead_validator_counts_a_crash_and_a_released_claim_does_not(store: BatchStore) -> None:
    job, _ = store.create_job(make_job("crashy-validation"))
    assert store.claim_for_validation("a", 30) == [job.id]
    assert store.get_job(job.id).crashes == 0
    _lapse(store, job.id)
    assert store.claim_for_validation("b", 30) == [job.id]
    assert store.get_job(job.id).crashes == 1
    assert store.release_validation(job.id, "b")  # b shuts down cleanly
    assert not store.release_validation(job.id, "b")  # it no longer holds it
    assert store.claim_for_validation("c", 30) == [job.id]  # at once, not after the lease
    got = store.get_job(job.id)
    assert (got.status, got.claimed_by, got.crashes) == (S.VALIDATING, "c", 1)


def test_taking_over_a_dead_runner_counts_a_crash_a_released_claim_does_not_and_progress_resets_them(
    store: BatchStore,
) -> None:
    job_id = scheduled(store, "crashy-run")
    store.allocate_slots("a", 10)
    _lapse(store, job_id)
    assert store.claim_running(job_id, "b", 30)
    assert store.get_job(job_id).crashes == 1
    assert store.heartbeat(job_id, "b", release=True) is S.IN_PROGRESS  # b shuts down cleanly
    assert store.claim_running(job_id, "c", 30)
    got = store.get_job(job_id)
    assert (got.attempts, got.crashes) == (3, 1)
    _lapse(store, job_id)
    assert store.claim_running(job_id, "d", 30)
    assert store.get_job(job_id).crashes == 2
    # Progress after the crashes: they were not this job's doing.
    assert store.checkpoint(job_id, "d", Checkpoint([], {})) is S.IN_PROGRESS
    assert store.get_job(job_id).crashes == 2
    assert store.checkpoint(job_id, "d", Checkpoint([(0, 1, True)], {0: 10})) is S.IN_PROGRESS
    assert store.get_job(job_id).crashes == 0


@pytest.mark.parametrize(
    ("crashes", "limit", "fails"),
    [(0, 3, False), (2, 3, False), (3, 3, True), (7, 3, True), (1, 1, True)],
)
def test_a_job_is_failed_once_it_crashed_its_server_max_crashes_times(
    crashes: int, limit: int, fails: bool
) -> None:
    message = crashed_too_often(make_job("j", crashes=crashes, status=S.VALIDATING), limit)
    assert (message is not None) == fails
    if message:
        assert f"crashed its server {crashes} times in a row while Validating" in message
        assert f"OUTCROP_BATCH__MAX_CRASHES={limit}" in message and "server log" in message
