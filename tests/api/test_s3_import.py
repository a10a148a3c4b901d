"""Import from ``s3://`` against a real S3-compatible server (moto in server mode) on loopback.

The S3 server is a separate HTTP endpoint, reached by ``outcrop serve`` through its
``OUTCROP_S3__*`` settings exactly as it would reach AWS S3 or MinIO; nothing is patched.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, api, boto3_client, server_env, wait_for_job

pytestmark = [pytest.mark.e2e, pytest.mark.s3]

ROLE_ARN = "arn:aws:iam::123456789012:role/Importer"
S3_ACCESS_KEY_ID = "outcrop-test"
S3_SECRET_ACCESS_KEY = "outcrop-test-secret"


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY_ID,
        aws_secret_access_key=S3_SECRET_ACCESS_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"models-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[ServerProcess]:
    """One ``outcrop serve`` for this module whose s3:// sources are the moto server."""
    root = tmp_path_factory.mktemp("s3-server")
    env = server_env(
        root,
        OUTCROP_S3__ENDPOINT_URL=s3_endpoint,
        OUTCROP_S3__ACCESS_KEY_ID=S3_ACCESS_KEY_ID,
        OUTCROP_S3__SECRET_ACCESS_KEY=S3_SECRET_ACCESS_KEY,
        OUTCROP_S3__REGION="us-east-1",
    )
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    yield server
    server.stop()


def upload_folder(s3: Any, folder: Path, bucket: str, prefix: str) -> dict[str, str]:
    """Put every file of ``folder`` under ``s3://bucket/prefix``; returns {relative path: sha256}."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        s3.put_object(Bucket=bucket, Key=f"{prefix}{rel}", Body=data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def import_from(bedrock: Any, s3_uri: str) -> tuple[str, str]:
    name = f"s3_{uuid.uuid4().hex[:8]}"
    arn = bedrock.create_model_import_job(
        jobName=f"job-{uuid.uuid4().hex[:8]}",
        importedModelName=name,
        roleArn=ROLE_ARN,
        modelDataSource={"s3DataSource": {"s3Uri": s3_uri}},
    )["jobArn"]
    return arn, name


def test_model_uploaded_to_s3_imports_with_its_facts_and_file_hashes(
    s3: Any, bucket: str, s3_server: ServerProcess, tiny_model_cache: Callable[..., Path]
) -> None:
    folder = tiny_model_cache(family="qwen2")
    digests = upload_folder(s3, folder, bucket, "finetunes/qwen-demo/")
    bedrock = boto3_client("bedrock", s3_server.url)

    arn, name = import_from(bedrock, f"s3://{bucket}/finetunes/qwen-demo/")
    job = wait_for_job(bedrock, arn)

    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["modelDataSource"]["s3DataSource"]["s3Uri"] == f"s3://{bucket}/finetunes/qwen-demo/"
    model = bedrock.get_imported_model(modelIdentifier=name)
    assert model["modelArchitecture"] == "qwen2"
    assert model["instructSupported"] is True
    detail = api.get(f"{s3_server.url}/outcrop/models/{name}").json()
    assert detail["modelType"] == "qwen2"
    assert detail["source"] == f"s3://{bucket}/finetunes/qwen-demo/"
    assert detail["parameterCount"] > 0 and detail["contextLength"] == 2048
    assert detail["sizeBytes"] == sum((folder / rel).stat().st_size for rel in digests)
    assert {f["path"]: f["sha256"] for f in detail["files"]} == digests
    progress = api.get(f"{s3_server.url}/outcrop/import-jobs/{job['jobName']}").json()
    assert progress["bytesDone"] == progress["bytesTotal"] == detail["sizeBytes"]


def test_prefix_without_trailing_slash_names_the_same_folder(
    s3: Any, bucket: str, s3_server: ServerProcess, tiny_model_cache: Callable[..., Path]
) -> None:
    upload_folder(s3, tiny_model_cache(family="llama"), bucket, "llama/")
    bedrock = boto3_client("bedrock", s3_server.url)
    arn, name = import_from(bedrock, f"s3://{bucket}/llama")
    assert wait_for_job(bedrock, arn)["status"] == "Completed"
    assert bedrock.get_imported_model(modelIdentifier=name)["modelArchitecture"] == "llama"


def test_empty_prefix_fails_naming_the_uri(s3: Any, bucket: str, s3_server: ServerProcess) -> None:
    s3.put_object(Bucket=bucket, Key="elsewhere/config.json", Body=b"{}")
    bedrock = boto3_client("bedrock", s3_server.url)
    uri = f"s3://{bucket}/nothing-here/"
    arn, name = import_from(bedrock, uri)
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Failed"
    assert uri in job["failureMessage"] and "no objects" in job["failureMessage"]
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_imported_model(modelIdentifier=name)


def test_missing_bucket_fails_naming_the_uri(s3_server: ServerProcess) -> None:
    bedrock = boto3_client("bedrock", s3_server.url)
    uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/model/"
    arn, _ = import_from(bedrock, uri)
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Failed"
    assert uri in job["failureMessage"]
    assert "NoSuchBucket" in job["failureMessage"] or "does not exist" in job["failureMessage"]


def test_key_with_dot_dot_segment_is_rejected_before_anything_is_stored(
    s3: Any, bucket: str, s3_server: ServerProcess, tiny_model_cache: Callable[..., Path]
) -> None:
    upload_folder(s3, tiny_model_cache(family="llama"), bucket, "model/")
    s3.put_object(Bucket=bucket, Key="model/sub/../../escape.json", Body=b"{}")
    assert any(
        o["Key"] == "model/sub/../../escape.json"
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="model/")["Contents"]
    ), "the S3 server normalised the key; the test would prove nothing"
    bedrock = boto3_client("bedrock", s3_server.url)
    arn, name = import_from(bedrock, f"s3://{bucket}/model/")
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Failed"
    assert "model/sub/../../escape.json" in job["failureMessage"] and ".." in job["failureMessage"]
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_imported_model(modelIdentifier=name)
    progress = api.get(f"{s3_server.url}/outcrop/import-jobs/{job['jobName']}").json()
    assert progress["bytesDone"] == 0  # rejected while listing, before a byte was fetched


def test_uri_without_bucket_is_a_validation_exception(s3_server: ServerProcess) -> None:
    bedrock = boto3_client("bedrock", s3_server.url)
    with pytest.raises(bedrock.exceptions.ValidationException, match="bucket"):
        import_from(bedrock, "s3:///model/")
