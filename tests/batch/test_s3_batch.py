"""s3:// input and output against a real S3-compatible server (moto in server mode) on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outcrop.batch.service import CreateBatchJob
from outcrop.config import OutcropConfig
from tests.api.test_s3_import import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, bucket, s3
from tests.batch.conftest import prompt_record, running, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.s3]
__all__ = ["bucket", "s3"]  # fixtures used by name


def _put_jsonl(s3: Any, bucket: str, key: str, records: list[dict[str, Any]]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(r) + "\n" for r in records).encode())


async def test_s3_folder_in_s3_folder_out(
    batch_config: Callable[..., OutcropConfig], s3_endpoint: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    _put_jsonl(s3, bucket, "in/a.jsonl", [prompt_record(i) for i in range(4)])
    _put_jsonl(s3, bucket, "in/b.jsonl", [prompt_record(i) for i in range(4, 6)])
    s3.put_object(Bucket=bucket, Key="in/notes.txt", Body=b"not a jsonl")
    config = batch_config(
        **{
            "s3.endpoint_url": s3_endpoint,
            "s3.access_key_id": S3_ACCESS_KEY_ID,
            "s3.secret_access_key": S3_SECRET_ACCESS_KEY,
            "s3.region": "us-east-1",
        }
    )
    async with running(config) as service:
        job = service.create_job(
            CreateBatchJob(
                job_name="s3-job",
                model_id="alpha",
                input_uri=f"s3://{bucket}/in/",
                output_uri=f"s3://{bucket}/out",
            )
        )
        done = await wait_until(service, job.id)
    assert done.status.value == "Completed", done.message
    assert done.total_records == done.success_records == 6
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"])
    assert keys == [
        f"out/{job.id}/a.jsonl.out",
        f"out/{job.id}/b.jsonl.out",
        f"out/{job.id}/manifest.json.out",
    ]
    body = s3.get_object(Bucket=bucket, Key=f"out/{job.id}/a.jsonl.out")["Body"].read().decode()
    assert sorted(json.loads(line)["recordId"] for line in body.splitlines()) == [
        f"r{i:05d}" for i in range(4)
    ]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"out/{job.id}/manifest.json.out")["Body"].read())
    assert manifest["successRecordCount"] == 6
