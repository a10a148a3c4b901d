"""Batch jobs survive kill -9 of the server at random points, and two servers never run one job twice.

Real ``outcrop serve`` processes; copies are null copies (``python -m outcrop.testing.nullcopy``)
started by the real ``command`` launcher, so the test exercises the runner, not a model.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.conftest as root_conftest
from outcrop.batch.store import BatchStore
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter
from tests.batch.conftest import nullcopy_template, prompt_record, read_jsonl, write_jsonl
from tests.conftest import ServerProcess, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e

# The admin API needs credentials once authentication is on; the test servers' admin key.
AUTH: dict[str, str] = getattr(root_conftest, "AUTH", {})
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}


def _env(delay_ms: int, **extra: str) -> dict[str, str]:
    return {
        "OUTCROP_SERVING__LAUNCHER": "command",
        "OUTCROP_SERVING__COMMAND_TEMPLATE": nullcopy_template("--delay-ms", str(delay_ms)),
        "OUTCROP_SERVING__HEALTH_INTERVAL_SECONDS": "0.2",
        "OUTCROP_BATCH__CHECKPOINT_INTERVAL_SECONDS": "0.1",
        "OUTCROP_BATCH__POLL_SECONDS": "0.2",
        **extra,
    }


def _create(bedrock: Any, name: str, model: str, input_path: Path, output: Path) -> str:
    arn: str = bedrock.create_model_invocation_job(
        jobName=name,
        roleArn="arn:aws:iam::123456789012:role/Batch",
        modelId=model,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": str(input_path)}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(output)}},
    )["jobArn"]
    return arn


def _wait(bedrock: Any, arn: str, statuses: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {arn} is {job.get('status')} after {timeout} s")


def _kill_hard(server: ServerProcess) -> None:
    """SIGKILL the server, then the copies it started (they would outlive it as orphans)."""
    pids = [
        c["pid"] for c in httpx.get(f"{server.url}/outcrop/copies", headers=AUTH).json()["copies"] if c["pid"]
    ]
    server.kill()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_kill_9_at_random_points_loses_and_duplicates_no_record(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = _env(delay_ms=25)
    server = start_server(data_dir=data, **env)
    bedrock = boto3_client("bedrock", server.url)
    import_and_wait(bedrock, tiny_model("llama"), "crashy")
    total = 600
    write_jsonl(tmp_path / "in" / "a.jsonl", [prompt_record(i) for i in range(total // 2)])
    write_jsonl(tmp_path / "in" / "b.jsonl", [prompt_record(i) for i in range(total // 2, total)])
    arn = _create(bedrock, "survivor", "crashy", tmp_path / "in", tmp_path / "out")
    rng = random.Random(int(os.environ.get("OUTCROP_TEST_SEED", "4")))
    kills = 0
    for _ in range(3):
        # Kill at a random point of the run: after a random number of processed records.
        target = rng.randrange(10, total - 60)
        deadline = time.monotonic() + 60
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        while job["processedRecordCount"] < target and job["status"] not in TERMINAL:
            assert time.monotonic() < deadline, job
            time.sleep(rng.uniform(0.0, 0.05))
            job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in TERMINAL:
            break
        _kill_hard(server)
        kills += 1
        server = start_server(data_dir=data, **env)
        bedrock = boto3_client("bedrock", server.url)
    assert kills >= 2, "the job finished before it could be interrupted; slow the copies down"
    job = _wait(bedrock, arn, TERMINAL)
    assert job["status"] == "Completed", job.get("message")
    assert job["totalRecordCount"] == job["processedRecordCount"] == job["successRecordCount"] == total
    folder = tmp_path / "out" / arn.rsplit("/", 1)[-1]
    lines = read_jsonl(folder / "a.jsonl.out") + read_jsonl(folder / "b.jsonl.out")
    ids = [line["recordId"] for line in lines]
    assert len(ids) == total and set(ids) == {f"r{i:05d}" for i in range(total)}
    assert all("modelOutput" in line for line in lines)
    manifest = json.loads((folder / "manifest.json.out").read_text())
    assert manifest["processedRecordCount"] == manifest["successRecordCount"] == total


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_servers_on_one_store_run_each_job_once_and_share_the_slot_limit(
    backend: str,
    request: pytest.FixtureRequest,
    start_server: Callable[..., ServerProcess],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    env = _env(delay_ms=5, OUTCROP_BATCH__MAX_RUNNING_JOBS_PER_MODEL="2")
    if backend == "postgres":
        env["OUTCROP_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    data = tmp_path / "data"
    a = start_server(data_dir=data, **env)
    b = start_server(data_dir=data, **env)
    clients = [boto3_client("bedrock", a.url), boto3_client("bedrock", b.url)]
    import_and_wait(clients[0], tiny_model("llama"), "shared")
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(i) for i in range(120)])
    arns = [
        _create(clients[i % 2], f"twin-{i}", "shared", tmp_path / "in.jsonl", tmp_path / "out")
        for i in range(6)
    ]
    peak = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = clients[0].list_model_invocation_jobs()["invocationJobSummaries"]
        running = sum(1 for j in jobs if j["status"] in ("InProgress", "Stopping"))
        peak = max(peak, running)
        if all(j["status"] in TERMINAL for j in jobs):
            break
        time.sleep(0.02)
    assert peak <= 2
    for arn in arns:
        job = clients[1].get_model_invocation_job(jobIdentifier=arn)
        assert job["status"] == "Completed", job.get("message")
        lines = read_jsonl(tmp_path / "out" / arn.rsplit("/", 1)[-1] / "in.jsonl.out")
        assert len(lines) == len({line["recordId"] for line in lines}) == 120
    db = Database(env.get("OUTCROP_DATABASE_URL") or f"sqlite:///{data / 'outcrop.db'}")
    try:
        jobs = BatchStore(db).list_jobs(ListFilter())
        assert [j.attempts for j in jobs.items] == [1] * 6  # each job was started exactly once
    finally:
        db.dispose()
