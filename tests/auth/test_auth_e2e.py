"""Credentials and policies as clients meet them: real server, real boto3 and openai clients."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    TEST_API_KEY,
    TEST_SECRET_ACCESS_KEY,
    ServerProcess,
    api,
    boto3_client,
    import_and_wait,
)

pytestmark = pytest.mark.e2e


def client_as(service: str, url: str, key: str, secret: str) -> Any:
    client = boto3_client(service, url)
    client._request_signer._credentials.access_key = key
    client._request_signer._credentials.secret_key = secret
    return client


@pytest.fixture
def server(start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]) -> ServerProcess:
    server = start_server()
    bedrock = boto3_client("bedrock", server.url)
    import_and_wait(bedrock, tiny_model(), "model_a")
    import_and_wait(bedrock, tiny_model("qwen2"), "model_b")
    return server


def test_first_start_writes_admin_credentials_with_mode_0600(server: ServerProcess) -> None:
    path = server.data_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["api_key"] == TEST_API_KEY
    assert stat.S_IMODE((server.data_dir / "server.key").stat().st_mode) == 0o600


def test_wrong_or_missing_credentials_are_refused(server: ServerProcess) -> None:
    # AWS's own names, which clients branch on: a wrong secret and an unknown key differ.
    wrong = client_as("bedrock", server.url, "test", "not-the-secret")
    with pytest.raises(ClientError, match="signature") as info:
        wrong.list_imported_models()
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = client_as("bedrock", server.url, "OCKANOBODY", TEST_SECRET_ACCESS_KEY)
    with pytest.raises(ClientError, match="security token") as info:
        unknown.list_imported_models()
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    response = httpx.get(f"{server.url}/imported-models")
    assert response.status_code == 403 and response.headers["x-amzn-errortype"].startswith("AccessDenied")
    bad_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ocp-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    assert httpx.get(f"{server.url}/health").status_code == 200  # load balancers need no key


def test_invoke_only_key_cannot_import_delete_or_see_other_models(
    server: ServerProcess, tiny_model: Callable[..., Path]
) -> None:
    key = api.post(
        f"{server.url}/outcrop/keys", json={"name": "app", "policy": "invoke-only", "models": ["model_a"]}
    ).json()
    bedrock = client_as("bedrock", server.url, key["accessKeyId"], key["secretAccessKey"])
    assert [m["modelName"] for m in bedrock.list_imported_models()["modelSummaries"]] == ["model_a"]
    assert bedrock.get_imported_model(modelIdentifier="model_a")["modelName"] == "model_a"
    with pytest.raises(
        bedrock.exceptions.AccessDeniedException,
        match=r"not authorized to perform: bedrock:GetImportedModel on resource: arn:.*"
        r"imported-model/[a-z0-9]{12} \(the imported model 'model_b'\)",
    ):
        bedrock.get_imported_model(modelIdentifier="model_b")
    with pytest.raises(bedrock.exceptions.AccessDeniedException, match="bedrock:DeleteImportedModel"):
        bedrock.delete_imported_model(modelIdentifier="model_a")
    with pytest.raises(bedrock.exceptions.AccessDeniedException, match="bedrock:CreateModelImportJob"):
        bedrock.create_model_import_job(
            jobName="sneaky",
            importedModelName="sneaky",
            roleArn="arn:aws:iam::123456789012:role/r",
            modelDataSource={"s3DataSource": {"s3Uri": str(tiny_model())}},
        )
    with pytest.raises(bedrock.exceptions.AccessDeniedException):
        bedrock.list_model_import_jobs()
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key["apiKey"], max_retries=0)
    assert [m.id for m in oai.models.list()] == ["model_a"]
    with pytest.raises(openai.PermissionDeniedError):
        oai.completions.create(model="model_b", prompt="x", max_tokens=1)


def test_rotated_and_deleted_keys_stop_working(server: ServerProcess) -> None:
    key = api.post(f"{server.url}/outcrop/keys", json={"name": "temp", "policy": "read-only"}).json()
    reader = client_as("bedrock", server.url, key["accessKeyId"], key["secretAccessKey"])
    assert reader.list_imported_models()["modelSummaries"]
    rotated = api.post(f"{server.url}/outcrop/keys/temp/rotate").json()
    with pytest.raises(ClientError) as info:  # the old key id is unknown now, as AWS says it
        reader.list_imported_models()
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    fresh = client_as("bedrock", server.url, rotated["accessKeyId"], rotated["secretAccessKey"])
    assert fresh.list_imported_models()["modelSummaries"]
    api.delete(f"{server.url}/outcrop/keys/temp")
    with pytest.raises(ClientError) as info:
        fresh.list_imported_models()
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_audit_log_records_actions_and_denials_without_secrets(server: ServerProcess) -> None:
    key = api.post(f"{server.url}/outcrop/keys", json={"name": "auditee", "policy": "read-only"}).json()
    reader = client_as("bedrock", server.url, key["accessKeyId"], key["secretAccessKey"])
    with pytest.raises(reader.exceptions.AccessDeniedException):
        reader.delete_imported_model(modelIdentifier="model_a")
    httpx.get(f"{server.url}/imported-models", headers={"Authorization": "Bearer ocp-guess"})
    text = (server.data_dir / "audit" / "audit.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert any(
        r["outcome"] == "denied"
        and r["principal"] == "auditee"
        and r["action"] == "bedrock:DeleteImportedModel"
        for r in records
    )
    assert any(r["outcome"] == "unauthenticated" for r in records)
    assert any(r["outcome"] == "allowed" and r["action"] == "bedrock:CreateModelImportJob" for r in records)
    everything = text + server.log()
    for secret in (
        key["secretAccessKey"],
        key["apiKey"],
        TEST_SECRET_ACCESS_KEY + '"',
        TEST_API_KEY,
        "ocp-guess",
    ):
        assert secret not in everything
