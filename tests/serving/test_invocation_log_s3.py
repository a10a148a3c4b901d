"""Invocation logs delivered to a real S3-compatible server (moto in server mode) on loopback."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.envs import load_config
from outcrop.serving.invocation_log import ORPHAN_SECONDS, InvocationLogger
from outcrop.store.db import Database
from outcrop.store.settings import SettingsStore
from tests.api.test_s3_import import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, bucket, s3

pytestmark = pytest.mark.s3
__all__ = ["bucket", "s3"]  # fixtures used by name


def _config(tmp_path: Path, endpoint: str | None) -> OutcropConfig:
    return load_config(
        **{
            "data_dir": str(tmp_path / "data"),
            "s3.endpoint_url": endpoint,
            "s3.access_key_id": S3_ACCESS_KEY_ID,
            "s3.secret_access_key": S3_SECRET_ACCESS_KEY,
            "s3.region": "us-east-1",
        }
    )


def _logger(config: OutcropConfig, bucket: str) -> InvocationLogger:
    db = Database(config.database_url)
    db.migrate()
    logger = InvocationLogger(config, SettingsStore(db))
    logger.put_config(
        {"s3Config": {"bucketName": bucket, "keyPrefix": "team-a"}, "textDataDeliveryEnabled": True}
    )
    return logger


def _log(logger: InvocationLogger, request_id: str) -> None:
    logger.log(
        request_id=request_id,
        operation="InvokeModel",
        model_id="m",
        principal="admin",
        input_body={"prompt": request_id},
        output_body={"generation": "x"},
        input_tokens=1,
        output_tokens=1,
    )


def _delivered(s3: Any, bucket: str) -> dict[str, list[str]]:
    """Object key -> request ids in it."""
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()).decode()
        out[obj["Key"]] = [json.loads(line)["requestId"] for line in body.splitlines()]
    return out


def test_records_reach_the_bucket_once_each_across_rounds_and_restarts(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    config = _config(tmp_path, s3_endpoint)
    logger = _logger(config, bucket)
    assert logger.deliver_once() == 0  # nothing logged yet
    _log(logger, "r1")
    _log(logger, "r2")
    assert logger.deliver_once() == 1
    assert logger.deliver_once() == 0  # nothing new
    _log(logger, "r3")
    assert logger.deliver_once() == 1
    delivered = _delivered(s3, bucket)
    assert sorted(r for ids in delivered.values() for r in ids) == ["r1", "r2", "r3"]
    for key in delivered:  # Bedrock's layout under the prefix
        assert key.startswith("team-a/AWSLogs/") and "/BedrockModelInvocationLogs/us-east-1/" in key
        assert key.endswith(".json.gz")
    # A restarted gateway (new logger, same data dir) does not send them again.
    assert _logger(config, bucket).deliver_once() == 0


def test_a_dead_gateways_file_is_shipped_once_it_is_stale_and_a_live_ones_is_not(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    config = _config(tmp_path, s3_endpoint)
    logger = _logger(config, bucket)
    _log(logger, "mine")
    folder = next(p.parent for p in logger.root.rglob("*.jsonl"))
    other = folder / "otherhost-1.jsonl"
    other.write_text(json.dumps({"requestId": "theirs"}) + "\n" + '{"requestId": "half')  # mid-line
    assert logger.deliver_once() == 1  # only this gateway's file: the other gateway may be alive
    old = time.time() - ORPHAN_SECONDS - 1
    os.utime(other, (old, old))
    assert logger.deliver_once() == 1
    assert sorted(r for ids in _delivered(s3, bucket).values() for r in ids) == ["mine", "theirs"]


def test_an_unreachable_endpoint_keeps_the_records_for_the_next_round(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    logger = _logger(_config(tmp_path, s3_endpoint), "no-such-bucket")
    _log(logger, "kept")
    assert logger.deliver_once() == 0
    assert "delivery to S3 failed" in caplog.text
    assert list(logger.root.rglob("*.jsonl"))  # still under the data dir
    logger.put_config({"s3Config": {"bucketName": bucket}})
    s3.create_bucket(Bucket="no-such-bucket")
    assert logger.deliver_once() == 1
    assert _delivered(s3, "no-such-bucket")


def test_without_an_s3_endpoint_records_stay_local(tmp_path: Path, bucket: str) -> None:
    logger = _logger(_config(tmp_path, None), bucket)
    _log(logger, "local")
    assert not logger.delivers_to_s3 and logger.deliver_once() == 0
    logger.start()  # no thread without an endpoint
    logger.stop()
    assert list(logger.root.rglob("*.jsonl"))
