"""The data dir is private: after imports, invocations (logged) and a batch job through a real
server, no file in it is readable by group or others and every folder is 0700."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from outcrop.auth.audit import AuditLog
from outcrop.store.datadir import make_private
from outcrop.store.db import Database
from tests.batch.conftest import write_jsonl
from tests.conftest import ServingServer, api, boto3_client


def _open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that group/others can read, or a folder not 0700."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if (path.is_dir() and mode != 0o700) or mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return found


@pytest.mark.e2e
def test_nothing_in_the_data_dir_is_readable_by_other_users(serving_server: ServingServer) -> None:
    bedrock = boto3_client("bedrock", serving_server.url)
    runtime = boto3_client("bedrock-runtime", serving_server.url, retries={"max_attempts": 5})
    # A copy first, so the invocation below does not race a cold start on a busy machine.
    api.post(f"{serving_server.url}/outcrop/models/{serving_server.chat}/warm", json={}, timeout=300)
    bedrock.put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "private-logs"}, "textDataDeliveryEnabled": True}
    )
    try:
        runtime.invoke_model(
            modelId=serving_server.chat, body=json.dumps({"prompt": "a secret prompt", "max_gen_len": 2})
        )
    finally:
        bedrock.delete_model_invocation_logging_configuration()
    root = serving_server.server.import_root / f"perm-{uuid.uuid4().hex[:6]}"
    write_jsonl(root / "in.jsonl", [{"modelInput": {"prompt": "batch secret", "max_gen_len": 2}}])
    arn = bedrock.create_model_invocation_job(
        jobName=root.name,
        roleArn="arn:aws:iam::123456789012:role/Batch",
        modelId=serving_server.chat,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": str(root / "in.jsonl")}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(root / "out")}},
    )["jobArn"]
    deadline = time.monotonic() + 120
    while bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] != "Completed":
        assert time.monotonic() < deadline, bedrock.get_model_invocation_job(jobIdentifier=arn)
        time.sleep(0.1)
    data_dir = serving_server.server.data_dir
    written = {p.relative_to(data_dir).parts[0] for p in data_dir.rglob("*") if p.is_file()}
    # The test would prove little if these were not there (the batch input snapshot is removed
    # once the job completes; the runner writes it through the same 0600 path as outputs).
    assert {"outcrop.db", "audit", "invocation-logs", "models", "logs", "server.key"} <= written, written
    assert _open_to_others(data_dir) == []


def test_an_open_data_dir_is_tightened_and_a_new_one_is_created_private(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    assert make_private(old)
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    assert not make_private(old)
    new = tmp_path / "new" / "data"
    make_private(new)
    assert stat.S_IMODE(new.stat().st_mode) == 0o700


def test_the_database_and_audit_log_are_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        db = Database(f"sqlite:///{tmp_path / 'data' / 'outcrop.db'}")
        db.migrate()  # WAL mode: creates outcrop.db-wal and -shm
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            AuditLog(tmp_path / "data" / "audit" / "audit.jsonl").write(action="test")
            assert _open_to_others(tmp_path / "data") == []
            assert {p.name for p in (tmp_path / "data").iterdir()} >= {
                "outcrop.db",
                "outcrop.db-wal",
                "audit",
            }
        db.dispose()
    finally:
        os.umask(previous)
