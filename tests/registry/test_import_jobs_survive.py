"""Import jobs survive crashes and never run twice: real server processes, SIGKILL, two servers on one store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, api, boto3_client, wait_for_job

pytestmark = pytest.mark.e2e


def _create(bedrock: object, folder: Path, name: str) -> str:
    arn: str = bedrock.create_model_import_job(  # type: ignore[attr-defined]
        jobName=f"job-{name}".replace("_", "-"),
        importedModelName=name,
        roleArn="arn:aws:iam::123456789012:role/Importer",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    return arn


def test_server_killed_mid_import_resumes_on_restart_without_half_registered_model(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(data_dir=tmp_path / "data")
    bedrock = boto3_client("bedrock", server.url)
    arn = _create(bedrock, tiny_model("llama"), "survivor")
    job_id = arn.rsplit("/", 1)[-1]
    deadline = time.monotonic() + 30
    phase = "queued"
    while time.monotonic() < deadline:
        phase = api.get(f"{server.url}/outcrop/import-jobs/{job_id}").json()["phase"]
        if phase in ("fetching", "validating", "storing"):
            break
        time.sleep(0.01)
    assert phase in ("fetching", "validating", "storing"), (
        "the import finished before it could be interrupted"
    )
    server.kill()

    restarted = start_server(data_dir=tmp_path / "data")
    bedrock = boto3_client("bedrock", restarted.url)
    job = wait_for_job(bedrock, arn, timeout=60)
    assert job["status"] == "Completed", job.get("failureMessage")
    detail = api.get(f"{restarted.url}/outcrop/import-jobs/{job_id}").json()
    assert detail["attempts"] == 2
    models = bedrock.list_imported_models()["modelSummaries"]
    assert [m["modelName"] for m in models] == ["survivor"]
    staging = tmp_path / "data" / "models" / "staging"
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_servers_on_one_store_run_each_job_exactly_once(
    backend: str,
    request: pytest.FixtureRequest,
    start_server: Callable[..., ServerProcess],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    env = {"OUTCROP_REGISTRY__MAX_CONCURRENT_IMPORT_JOBS": "8"}
    if backend == "postgres":
        env["OUTCROP_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    data = tmp_path / "data"
    a = start_server(data_dir=data, **env)
    b = start_server(data_dir=data, **env)
    clients = [boto3_client("bedrock", a.url), boto3_client("bedrock", b.url)]
    names = [f"twin_{i}_{uuid.uuid4().hex[:4]}" for i in range(6)]
    arns = [_create(clients[i % 2], tiny_model("qwen2"), name) for i, name in enumerate(names)]
    for arn in arns:
        job = wait_for_job(clients[0], arn, timeout=90)
        assert job["status"] == "Completed", job.get("failureMessage")
    holders = set()
    for arn in arns:
        detail = api.get(f"{a.url}/outcrop/import-jobs/{arn.rsplit('/', 1)[-1]}").json()
        assert detail["attempts"] == 1, detail
        holders.add(detail["claimedBy"])
    listed = {m["modelName"] for m in clients[1].list_imported_models()["modelSummaries"]}
    assert listed == set(names)


def test_concurrent_import_quota_is_a_service_quota_exception(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server(
        OUTCROP_REGISTRY__MAX_CONCURRENT_IMPORT_JOBS="1", OUTCROP_REGISTRY__MAX_IMPORTED_MODELS="1"
    )
    bedrock = boto3_client("bedrock", server.url)
    first = _create(bedrock, tiny_model(), "first")
    with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException, match="concurrent import jobs is 1"):
        _create(bedrock, tiny_model(), "second")
    assert wait_for_job(bedrock, first)["status"] == "Completed"
    with pytest.raises(
        bedrock.exceptions.ServiceQuotaExceededException, match="quota of imported models is 1"
    ):
        _create(bedrock, tiny_model(), "third")


def test_progress_and_metrics_are_visible(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server()
    bedrock = boto3_client("bedrock", server.url)
    folder = tiny_model()
    total = sum(p.stat().st_size for p in folder.iterdir())
    arn = _create(bedrock, folder, "watched")
    wait_for_job(bedrock, arn)
    detail = api.get(f"{server.url}/outcrop/import-jobs/job-watched").json()
    assert detail["bytesDone"] == detail["bytesTotal"] == total
    assert detail["filesDone"] == detail["filesTotal"] == len(list(folder.iterdir()))
    metrics = api.get(f"{server.url}/metrics").text
    assert 'outcrop_import_jobs{status="Completed"} 1.0' in metrics
    assert "outcrop_imported_models 1.0" in metrics
    assert (
        'outcrop_http_requests_total{operation="CreateModelImportJob",status="201",surface="bedrock"} 1.0'
        in metrics
    )
