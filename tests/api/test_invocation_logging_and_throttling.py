"""Invocation logging through the control plane, and throttling as the clients see it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, ServingServer, api, boto3_client

pytestmark = pytest.mark.e2e


def test_invocation_logging_writes_bedrock_records_once_enabled(serving_server: ServingServer) -> None:
    bedrock = boto3_client("bedrock", serving_server.url)
    runtime = boto3_client("bedrock-runtime", serving_server.url)
    assert "loggingConfig" not in bedrock.get_model_invocation_logging_configuration()
    config = {
        "s3Config": {"bucketName": "audit-logs", "keyPrefix": "outcrop"},
        "textDataDeliveryEnabled": True,
    }
    bedrock.put_model_invocation_logging_configuration(loggingConfig=config)
    assert bedrock.get_model_invocation_logging_configuration()["loggingConfig"] == config
    try:
        response = runtime.invoke_model(
            modelId=serving_server.chat, body=json.dumps({"prompt": "log me", "max_gen_len": 3})
        )
        request_id = response["ResponseMetadata"]["RequestId"]
        root = serving_server.server.data_dir / "invocation-logs" / "audit-logs" / "outcrop" / "AWSLogs"
        records = [json.loads(line) for f in root.rglob("*.jsonl") for line in f.read_text().splitlines()]
        mine = [r for r in records if r["requestId"] == request_id]
        assert len(mine) == 1
        record = mine[0]
        assert record["schemaType"] == "ModelInvocationLog" and record["operation"] == "InvokeModel"
        assert record["modelId"] == serving_server.chat
        assert record["input"]["inputBodyJson"] == {"prompt": "log me", "max_gen_len": 3}
        assert (
            record["output"]["outputTokenCount"]
            == record["output"]["outputBodyJson"]["generation_token_count"]
        )
        assert (
            record["identity"]["arn"] == "arn:aws:iam::000000000000:user/admin"
        )  # the authenticated principal
    finally:
        bedrock.delete_model_invocation_logging_configuration()
    assert "loggingConfig" not in bedrock.get_model_invocation_logging_configuration()


def test_a_principal_over_its_request_rate_gets_throttling_exceptions(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(
        OUTCROP_THROTTLING__REQUESTS_PER_SECOND="0.5", OUTCROP_THROTTLING__BURST_SECONDS="2"
    )
    runtime = boto3_client("bedrock-runtime", server.url)
    body: dict[str, Any] = {"prompt": "x", "max_gen_len": 1}
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.invoke_model(modelId="absent", body=json.dumps(body))
    with pytest.raises(runtime.exceptions.ThrottlingException, match="requests/s") as info:
        runtime.invoke_model(modelId="absent", body=json.dumps(body))
    assert int(info.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1
    second = api.post(f"{server.url}/outcrop/keys", json={"name": "second", "policy": "invoke-only"}).json()
    other = boto3_client("bedrock-runtime", server.url)
    # A second caller has its own bucket.
    other._request_signer._credentials.access_key = second["accessKeyId"]
    other._request_signer._credentials.secret_key = second["secretAccessKey"]
    with pytest.raises(other.exceptions.ResourceNotFoundException):
        other.invoke_model(modelId="absent", body=json.dumps(body))
