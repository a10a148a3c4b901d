"""Batch inference through the unchanged boto3 ``bedrock`` client against a real server and real copies:
the job's modelOutput is what the online bedrock-runtime API answers for the same body."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.batch.conftest import read_jsonl, write_jsonl
from tests.conftest import ServingServer, boto3_client

pytestmark = pytest.mark.e2e
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}


def _wait(bedrock: Any, arn: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {arn} is {job.get('status')} after {timeout} s")


def _job(bedrock: Any, name: str, model: str, inp: Path, out: Path, **kw: Any) -> str:
    arn: str = bedrock.create_model_invocation_job(
        jobName=name,
        roleArn="arn:aws:iam::123456789012:role/Batch",
        modelId=model,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": str(inp)}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(out)}},
        **kw,
    )["jobArn"]
    return arn


def test_boto3_batch_job_gives_the_online_answers(serving_server: ServingServer) -> None:
    root = serving_server.server.import_root / f"batch-{uuid.uuid4().hex[:6]}"
    bodies = [
        {"prompt": "The capital of France is", "max_gen_len": 8, "temperature": 0},
        {"prompt": "One, two, three,", "max_tokens": 6, "temperature": 0},
        {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6, "temperature": 0},
    ]
    records: list[Any] = [{"recordId": f"r{i}", "modelInput": b} for i, b in enumerate(bodies)]
    records.append({"recordId": "empty-prompt", "modelInput": {"prompt": "", "max_gen_len": 3}})
    write_jsonl(root / "in" / "records.jsonl", records)
    bedrock = boto3_client("bedrock", serving_server.url)
    runtime = boto3_client("bedrock-runtime", serving_server.url, retries={"max_attempts": 5})
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    arn = _job(bedrock, name, serving_server.chat_arn, root / "in", root / "out", timeoutDurationInHours=48)
    job_id = arn.rsplit("/", 1)[-1]
    assert arn.startswith("arn:aws:bedrock:") and arn.endswith(f":model-invocation-job/{job_id}")
    job = _wait(bedrock, arn)
    assert job["status"] == "Completed", job.get("message")
    assert job["jobName"] == name and job["modelId"] == serving_server.chat_arn
    assert job["timeoutDurationInHours"] == 48 and job["modelInvocationType"] == "InvokeModel"
    assert (job["totalRecordCount"], job["successRecordCount"], job["errorRecordCount"]) == (4, 3, 1)
    assert job["endTime"] >= job["submitTime"]
    assert bedrock.get_model_invocation_job(jobIdentifier=job_id)["jobArn"] == arn

    lines = {line["recordId"]: line for line in read_jsonl(root / "out" / job_id / "records.jsonl.out")}
    for i, body in enumerate(bodies):
        online = json.loads(
            runtime.invoke_model(modelId=serving_server.chat, body=json.dumps(body))["body"].read()
        )
        batch = lines[f"r{i}"]["modelOutput"]
        if "messages" in body:
            assert batch["choices"][0]["message"] == online["choices"][0]["message"]
        else:
            assert batch["generation"] == online["generation"]
            assert batch["generation_token_count"] == online["generation_token_count"]
    assert lines["empty-prompt"]["error"]["errorCode"] == 400
    manifest = json.loads((root / "out" / job_id / "manifest.json.out").read_text())
    assert manifest["successRecordCount"] == 3 and manifest["outputTokenCount"] > 0

    listed = bedrock.list_model_invocation_jobs(nameContains=name, statusEquals="Completed")
    assert [j["jobArn"] for j in listed["invocationJobSummaries"]] == [arn]
    with pytest.raises(bedrock.exceptions.ConflictException, match="Completed"):
        bedrock.stop_model_invocation_job(jobIdentifier=arn)


def test_boto3_converse_job_and_list_pagination(serving_server: ServingServer) -> None:
    root = serving_server.server.import_root / f"batch-{uuid.uuid4().hex[:6]}"
    body = {
        "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
        "inferenceConfig": {"maxTokens": 5, "temperature": 0},
    }
    write_jsonl(root / "in.jsonl", [{"recordId": "c", "modelInput": body}])
    bedrock = boto3_client("bedrock", serving_server.url)
    runtime = boto3_client("bedrock-runtime", serving_server.url, retries={"max_attempts": 5})
    prefix = f"conv-{uuid.uuid4().hex[:6]}"
    arns = [
        _job(
            bedrock,
            f"{prefix}-{i}",
            serving_server.chat,
            root / "in.jsonl",
            root / "out",
            modelInvocationType="Converse",
        )
        for i in range(3)
    ]
    for arn in arns:
        assert _wait(bedrock, arn)["status"] == "Completed"
    (line,) = read_jsonl(root / "out" / arns[0].rsplit("/", 1)[-1] / "in.jsonl.out")
    online = runtime.converse(modelId=serving_server.chat, **body)
    assert line["modelOutput"]["output"]["message"] == online["output"]["message"]
    pages = bedrock.get_paginator("list_model_invocation_jobs").paginate(
        nameContains=prefix, sortOrder="Ascending", PaginationConfig={"PageSize": 2}
    )
    seen = [j["jobArn"] for page in pages for j in page["invocationJobSummaries"]]
    assert seen == arns


def test_boto3_errors_name_the_problem(serving_server: ServingServer) -> None:
    bedrock = boto3_client("bedrock", serving_server.url)
    root = serving_server.server.import_root
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException, match="nosuch"):
        _job(bedrock, f"x-{uuid.uuid4().hex[:6]}", "nosuch", root, root)
    with pytest.raises(bedrock.exceptions.ValidationException, match="outside the folders"):
        _job(bedrock, f"x-{uuid.uuid4().hex[:6]}", serving_server.chat, Path("/etc"), root)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException, match="batch ls"):
        bedrock.get_model_invocation_job(jobIdentifier="abcdefabcdef")
    with pytest.raises(bedrock.exceptions.ValidationException, match="statusEquals"):
        bedrock.list_model_invocation_jobs(statusEquals="Sleeping")


def test_a_line_nested_100k_deep_fails_the_job_naming_the_line(serving_server: ServingServer) -> None:
    root = serving_server.server.import_root / f"batch-{uuid.uuid4().hex[:6]}"
    path = write_jsonl(
        root / "in" / "deep.jsonl",
        [{"recordId": "ok", "modelInput": {"prompt": "hi", "max_gen_len": 2}}, "[" * 100_000 + "]" * 100_000],
    )
    bedrock = boto3_client("bedrock", serving_server.url)
    arn = _job(bedrock, f"deep-{uuid.uuid4().hex[:6]}", serving_server.chat, path, root / "out")
    job = _wait(bedrock, arn, timeout=60)
    assert job["status"] == "Failed"
    assert "deep.jsonl line 2: the JSON nests 100,000 levels deep" in job["message"]
