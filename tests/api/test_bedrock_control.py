"""The boto3 ``bedrock`` client, unchanged, against a real ``outcrop serve`` process on loopback."""

from __future__ import annotations

import datetime
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, api, boto3_client, wait_for_job

pytestmark = pytest.mark.e2e

JOB_ARN = r"arn:aws:bedrock:us-east-1:000000000000:model-import-job/[a-z0-9]{12}"
MODEL_ARN = r"arn:aws:bedrock:us-east-1:000000000000:imported-model/[a-z0-9]{12}"


@pytest.fixture(scope="module")
def bedrock(shared_server: ServerProcess) -> Any:
    return boto3_client("bedrock", shared_server.url)


@pytest.fixture
def model_folder(shared_server: ServerProcess, tiny_model_cache: Callable[..., Path]) -> Callable[..., Path]:
    """A copy of a tiny model inside the shared server's import root."""

    def make(family: str = "llama", **spec: Any) -> Path:
        dest = shared_server.import_root / "models" / uuid.uuid4().hex[:8]
        shutil.copytree(tiny_model_cache(family=family, **spec), dest)
        return dest

    return make


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def start_import(
    bedrock: Any, folder: Path | str, model_name: str | None = None, **extra: Any
) -> tuple[str, str]:
    model_name = model_name or unique("m")
    arn = bedrock.create_model_import_job(
        jobName=unique("job"),
        importedModelName=model_name,
        roleArn="arn:aws:iam::123456789012:role/Importer",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
        **extra,
    )["jobArn"]
    return arn, model_name


def test_import_job_completes_and_model_is_described_like_bedrock(
    bedrock: Any, model_folder: Callable[..., Path]
) -> None:
    folder = model_folder("qwen2")
    response = bedrock.create_model_import_job(
        jobName=unique("job"),
        importedModelName=unique("qwen"),
        roleArn="arn:aws:iam::123456789012:role/Importer",
        modelDataSource={"s3DataSource": {"s3Uri": f"file://{folder}"}},
        jobTags=[{"key": "team", "value": "ml"}],
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
    job = wait_for_job(bedrock, response["jobArn"])
    assert job["status"] == "Completed", job.get("failureMessage")
    assert set(job) >= {
        "jobArn",
        "jobName",
        "importedModelName",
        "importedModelArn",
        "roleArn",
        "modelDataSource",
        "status",
        "creationTime",
        "lastModifiedTime",
        "endTime",
    }
    assert re.fullmatch(JOB_ARN, job["jobArn"]) and re.fullmatch(MODEL_ARN, job["importedModelArn"])
    by_arn = bedrock.get_imported_model(modelIdentifier=job["importedModelArn"])
    by_name = bedrock.get_imported_model(modelIdentifier=job["importedModelName"])
    assert by_arn["modelArn"] == by_name["modelArn"] == job["importedModelArn"]
    assert by_arn["modelArchitecture"] == "qwen2"
    assert by_arn["instructSupported"] is True
    assert by_arn["jobArn"] == job["jobArn"]
    assert by_arn["customModelUnits"]["customModelUnitsPerModelCopy"] >= 1
    assert bedrock.get_model_import_job(jobIdentifier=job["jobName"])["jobArn"] == job["jobArn"]


def test_model_without_chat_template_is_not_instruct(bedrock: Any, model_folder: Callable[..., Path]) -> None:
    arn, name = start_import(bedrock, model_folder("mistral", chat_template=False))
    assert wait_for_job(bedrock, arn)["status"] == "Completed"
    assert bedrock.get_imported_model(modelIdentifier=name)["instructSupported"] is False


def test_broken_model_fails_at_import_with_every_reason(
    bedrock: Any, model_folder: Callable[..., Path]
) -> None:
    folder = model_folder()
    (folder / "tokenizer.json").unlink()
    cfg = (folder / "config.json").read_text().replace('"model_type": "llama"', '"model_type": "gpt_neox"')
    (folder / "config.json").write_text(cfg)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    arn, name = start_import(bedrock, folder)
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Failed"
    message = job["failureMessage"]
    assert "gpt_neox" in message and "llama" in message  # the value found and the supported set
    assert "pytorch_model.bin" in message and "pickle" in message
    assert "tokenizer" in message
    assert "importedModelArn" not in job
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_imported_model(modelIdentifier=name)


def test_list_jobs_filters_sorts_and_paginates(bedrock: Any, model_folder: Callable[..., Path]) -> None:
    marker = unique("listing")
    arns = []
    for i in range(3):
        arn = bedrock.create_model_import_job(
            jobName=f"{marker}-{i}",
            importedModelName=f"{marker}-model-{i}".replace("-", "_"),
            roleArn="arn:aws:iam::123456789012:role/Importer",
            modelDataSource={"s3DataSource": {"s3Uri": str(model_folder())}},
        )["jobArn"]
        arns.append(arn)
        wait_for_job(bedrock, arn)
    paginator = bedrock.get_paginator("list_model_import_jobs")
    pages = list(
        paginator.paginate(nameContains=marker, sortOrder="Ascending", PaginationConfig={"PageSize": 2})
    )
    assert len(pages) == 2
    names = [s["jobName"] for p in pages for s in p["modelImportJobSummaries"]]
    assert names == [f"{marker}-{i}" for i in range(3)]
    desc = bedrock.list_model_import_jobs(nameContains=marker, sortBy="CreationTime", sortOrder="Descending")
    assert [s["jobName"] for s in desc["modelImportJobSummaries"]] == names[::-1]
    completed = bedrock.list_model_import_jobs(nameContains=marker, statusEquals="Completed")
    assert len(completed["modelImportJobSummaries"]) == 3
    # botocore sends query timestamps with whole seconds, so filter with a margin.
    first = desc["modelImportJobSummaries"][-1]["creationTime"]
    hour = datetime.timedelta(hours=1)
    assert (
        len(
            bedrock.list_model_import_jobs(nameContains=marker, creationTimeAfter=first - hour)[
                "modelImportJobSummaries"
            ]
        )
        == 3
    )
    assert (
        bedrock.list_model_import_jobs(nameContains=marker, creationTimeAfter=first + hour)[
            "modelImportJobSummaries"
        ]
        == []
    )
    assert (
        bedrock.list_model_import_jobs(nameContains=marker, creationTimeBefore=first - hour)[
            "modelImportJobSummaries"
        ]
        == []
    )
    models = bedrock.list_imported_models(nameContains=marker.replace("-", "_"))
    assert len(models["modelSummaries"]) == 3
    assert all({"modelArn", "modelName", "creationTime"} <= set(m) for m in models["modelSummaries"])


def test_delete_model_then_it_is_gone(bedrock: Any, model_folder: Callable[..., Path]) -> None:
    arn, name = start_import(bedrock, model_folder())
    assert wait_for_job(bedrock, arn)["status"] == "Completed"
    assert bedrock.delete_imported_model(modelIdentifier=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException, match="not found"):
        bedrock.get_imported_model(modelIdentifier=name)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.delete_imported_model(modelIdentifier=name)


def test_two_models_sharing_files_store_them_once_and_delete_keeps_shared_blobs(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server()  # a fresh store: no other test's models share these blobs
    bedrock = boto3_client("bedrock", server.url)
    folder = tiny_model("qwen3")
    twin = folder.parent / (folder.name + "-twin")
    shutil.copytree(folder, twin)
    a_arn, a_name = start_import(bedrock, folder)
    assert wait_for_job(bedrock, a_arn)["status"] == "Completed"
    b_arn, b_name = start_import(bedrock, twin)
    assert wait_for_job(bedrock, b_arn)["status"] == "Completed"
    detail = api.get(f"{server.url}/outcrop/models/{b_name}").json()
    blobs = server.data_dir / "models" / "blobs" / "sha256"
    paths = [blobs / f["sha256"][:2] / f["sha256"] for f in detail["files"]]
    assert all(p.exists() for p in paths)
    assert all(p.stat().st_nlink == 1 for p in paths)  # one stored copy, not one per model
    bedrock.delete_imported_model(modelIdentifier=a_name)
    assert all(p.exists() for p in paths)  # still used by the twin
    bedrock.delete_imported_model(modelIdentifier=b_name)
    assert not any(p.exists() for p in paths)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"jobName": "bad name!"}, "jobName"),
        ({"importedModelName": "-leading-dash"}, "importedModelName"),
        ({"roleArn": "not-an-arn"}, "roleArn"),
        ({"modelDataSource": {"s3DataSource": {"s3Uri": "relative/path"}}}, "s3://bucket/prefix"),
        ({"modelDataSource": {"s3DataSource": {"s3Uri": "/etc"}}}, "outside the folders"),
        ({"modelDataSource": {"s3DataSource": {"s3Uri": "file://evil.example.com/x"}}}, "must be local"),
    ],
)
def test_malformed_requests_are_validation_exceptions(
    bedrock: Any, overrides: dict[str, Any], needle: str
) -> None:
    request = {
        "jobName": unique("job"),
        "importedModelName": unique("m"),
        "roleArn": "arn:aws:iam::123456789012:role/Importer",
        "modelDataSource": {"s3DataSource": {"s3Uri": "/tmp/x"}},
    }
    request.update(overrides)
    with pytest.raises(bedrock.exceptions.ValidationException, match=needle):
        bedrock.create_model_import_job(**request)


def test_duplicate_names_are_conflicts(bedrock: Any, model_folder: Callable[..., Path]) -> None:
    arn, name = start_import(bedrock, model_folder())
    wait_for_job(bedrock, arn)
    with pytest.raises(bedrock.exceptions.ConflictException, match="already exists"):
        start_import(bedrock, model_folder(), model_name=name)
    job_name = bedrock.get_model_import_job(jobIdentifier=arn)["jobName"]
    with pytest.raises(bedrock.exceptions.ConflictException, match=job_name):
        bedrock.create_model_import_job(
            jobName=job_name,
            importedModelName=unique("m"),
            roleArn="arn:aws:iam::123456789012:role/Importer",
            modelDataSource={"s3DataSource": {"s3Uri": str(model_folder())}},
        )


def test_unknown_and_malformed_identifiers(bedrock: Any) -> None:
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_model_import_job(jobIdentifier="no-such-job")
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_imported_model(
            modelIdentifier="arn:aws:bedrock:us-east-1:000000000000:imported-model/abcdefghijkl"
        )
    with pytest.raises(bedrock.exceptions.ValidationException, match="imported-model ARN"):
        bedrock.get_imported_model(
            modelIdentifier="arn:aws:bedrock:us-east-1:000000000000:custom-model/abcdefghijkl"
        )
    with pytest.raises(bedrock.exceptions.ValidationException, match="nextToken"):
        bedrock.list_imported_models(nextToken="forged")


@pytest.mark.parametrize(
    "query",
    [
        {"maxResults": "0"},
        {"maxResults": "x"},
        {"sortBy": "Name"},
        {"sortOrder": "Up"},
        {"creationTimeAfter": "soon"},
    ],
)
def test_bad_list_parameters_from_curl_are_validation_errors(
    shared_server: ServerProcess, query: dict[str, str]
) -> None:
    # botocore checks these client-side; curl users get the server's answer.
    response = api.get(f"{shared_server.url}/imported-models", params=query)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException")
    assert next(iter(query)) in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"jobName": 5}', b"\xff\xfe"],
)
def test_garbage_bodies_get_a_clear_400_and_the_server_stays_up(
    shared_server: ServerProcess, body: bytes
) -> None:
    response = api.post(f"{shared_server.url}/model-import-jobs", content=body)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException")
    assert response.json()["message"]
    assert api.get(f"{shared_server.url}/health").status_code == 200


def test_unknown_path_is_a_bedrock_style_404(shared_server: ServerProcess) -> None:
    response = api.get(f"{shared_server.url}/no/such/thing")
    assert response.status_code == 404
    assert response.headers["x-amzn-errortype"].startswith("ResourceNotFoundException")
