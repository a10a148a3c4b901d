"""No side doors around a key's policy, as real clients meet them: batch jobs check the model,
NotAction/NotResource mean what IAM says, Condition is refused, and keys, others' batch jobs and
copy URLs are admin business."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, TEST_API_KEY, ServerProcess, api, boto3_client, import_and_wait, server_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("side-doors")
    server = ServerProcess(data_dir=root / "data", env=server_env(root), import_root=root).start()
    shutil.copytree(tiny_model_cache(family="llama"), root / "model")
    import_and_wait(boto3_client("bedrock", server.url), root / "model", "guarded")
    yield server
    server.stop()


def key(server: ServerProcess, name: str, policy: Any) -> dict[str, Any]:
    response = api.post(f"{server.url}/outcrop/keys", json={"name": name, "policy": policy})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def client_as(service: str, server: ServerProcess, creds: dict[str, Any]) -> Any:
    client = boto3_client(service, server.url)
    client._request_signer._credentials.access_key = creds["accessKeyId"]
    client._request_signer._credentials.secret_key = creds["secretAccessKey"]
    return client


def model_arn(server: ServerProcess) -> str:
    arn: str = boto3_client("bedrock", server.url).get_imported_model(modelIdentifier="guarded")["modelArn"]
    return arn


def batch_request(server: ServerProcess, name: str) -> dict[str, Any]:
    folder = server.import_root / name
    folder.mkdir()
    # No records: validation fails the job at once, so no copy starts; what matters here is who may create it.
    (folder / "in.jsonl").write_text("")
    return {
        "jobName": name,
        "roleArn": "arn:aws:iam::123456789012:role/Batch",
        "modelId": "guarded",
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": str(folder / "in.jsonl")}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": str(folder / "out")}},
    }


def test_a_key_denied_the_model_cannot_reach_it_through_a_batch_job(server: ServerProcess) -> None:
    denied = key(
        server,
        "batch-denied",
        {
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "bedrock:*", "Resource": model_arn(server)},
            ]
        },
    )
    bedrock = client_as("bedrock", server, denied)
    with pytest.raises(bedrock.exceptions.AccessDeniedException) as info:
        bedrock.create_model_invocation_job(**batch_request(server, "sneaky-batch"))
    message = info.value.response["Error"]["Message"]
    assert f"bedrock:InvokeModel on resource: {model_arn(server)}" in message and "'guarded'" in message
    admin = boto3_client("bedrock", server.url)
    assert "sneaky-batch" not in [
        j["jobName"] for j in admin.list_model_invocation_jobs()["invocationJobSummaries"]
    ]


def test_batch_jobs_are_visible_to_their_creator_and_admins_only(server: ServerProcess) -> None:
    creator_policy = {
        "Statement": [
            {"Effect": "Allow", "Action": "bedrock:*ModelInvocationJob*", "Resource": "*"},
            {"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": model_arn(server)},
        ]
    }
    creator = key(server, "batch-owner-2", creator_policy)
    owner = client_as("bedrock", server, creator)
    arn = owner.create_model_invocation_job(**batch_request(server, "owned-job"))["jobArn"]
    assert owner.get_model_invocation_job(jobIdentifier=arn)["jobName"] == "owned-job"
    assert [j["jobName"] for j in owner.list_model_invocation_jobs()["invocationJobSummaries"]] == [
        "owned-job"
    ]

    reader = client_as("bedrock", server, key(server, "batch-reader", "read-only"))
    names = [j["jobName"] for j in reader.list_model_invocation_jobs()["invocationJobSummaries"]]
    assert "owned-job" not in names
    with pytest.raises(reader.exceptions.AccessDeniedException, match="created by another principal"):
        reader.get_model_invocation_job(jobIdentifier=arn)

    admin = boto3_client("bedrock", server.url)
    assert admin.get_model_invocation_job(jobIdentifier=arn)["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
    # A rotated key is the same principal: its jobs stay its own.
    rotated = api.post(f"{server.url}/outcrop/keys/batch-owner-2/rotate").json()
    again = client_as("bedrock", server, rotated)
    assert again.get_model_invocation_job(jobIdentifier=arn)["jobName"] == "owned-job"


def test_not_action_and_not_resource_behave_as_iam_says(server: ServerProcess) -> None:
    arn = model_arn(server)
    not_resource = client_as(
        "bedrock",
        server,
        key(
            server,
            "not-resource",
            {"Statement": [{"Effect": "Allow", "Action": "bedrock:*", "NotResource": arn}]},
        ),
    )
    assert (
        not_resource.list_imported_models()["modelSummaries"] == []
    )  # the one model is outside its resources
    with pytest.raises(not_resource.exceptions.AccessDeniedException, match="bedrock:GetImportedModel"):
        not_resource.get_imported_model(modelIdentifier="guarded")
    not_action = client_as(
        "bedrock",
        server,
        key(
            server,
            "not-action",
            {
                "Statement": [
                    {"Effect": "Allow", "NotAction": ["bedrock:Delete*", "outcrop:*"], "Resource": "*"}
                ]
            },
        ),
    )
    assert not_action.get_imported_model(modelIdentifier="guarded")["modelArn"] == arn
    with pytest.raises(not_action.exceptions.AccessDeniedException, match="bedrock:DeleteImportedModel"):
        not_action.delete_imported_model(modelIdentifier="guarded")


def test_a_policy_with_a_condition_is_refused_naming_the_field(server: ServerProcess, tmp_path: Path) -> None:
    document = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "bedrock:*",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            }
        ]
    }
    response = api.post(f"{server.url}/outcrop/keys", json={"name": "conditional", "policy": document})
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException")
    assert "Statement[0].Condition is not supported" in response.json()["message"]
    (tmp_path / "policy.json").write_text(json.dumps(document))
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop",
            "keys",
            "create",
            "conditional",
            "--policy",
            f"file://{tmp_path / 'policy.json'}",
            "--endpoint",
            server.url,
        ],
        env={**os.environ, "OUTCROP_API_KEY": TEST_API_KEY},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1 and "Statement[0].Condition is not supported" in cli.stderr
    assert "conditional" not in [k["name"] for k in api.get(f"{server.url}/outcrop/keys").json()["keys"]]
    # An accepted document is stored exactly as written.
    exact = {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "R", "Effect": "Allow", "NotAction": "bedrock:Delete*"}],
    }
    assert key(server, "exact", exact)["policy"] == exact


def test_a_read_only_key_sees_only_its_own_key_and_no_copy_urls(server: ServerProcess) -> None:
    reader = key(server, "keys-reader", "read-only")
    as_reader = {"Authorization": f"Bearer {reader['apiKey']}"}
    listed = httpx.get(f"{server.url}/outcrop/keys", headers=as_reader).json()["keys"]
    assert [k["name"] for k in listed] == ["keys-reader"]
    assert len(api.get(f"{server.url}/outcrop/keys").json()["keys"]) > 1  # the admin sees every key
    invoker = key(server, "keys-invoker", "invoke-only")
    mine = httpx.get(f"{server.url}/outcrop/keys", headers={"Authorization": f"Bearer {invoker['apiKey']}"})
    assert [k["name"] for k in mine.json()["keys"]] == ["keys-invoker"]

    warmed = api.post(f"{server.url}/outcrop/models/guarded/warm", json={"copies": 1}, timeout=180)
    assert warmed.status_code == 200, warmed.text
    assert all(c["url"] for c in api.get(f"{server.url}/outcrop/copies").json()["copies"])
    copies = httpx.get(f"{server.url}/outcrop/copies", headers=as_reader).json()["copies"]
    assert copies and all(c["url"] is None for c in copies)
