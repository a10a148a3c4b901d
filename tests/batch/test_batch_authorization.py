"""Batch jobs are no side door around a key's policy: the creator's right to invoke the model is
checked when the job is created and again when its records run; jobs are visible to their creator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from outcrop.auth import policies
from outcrop.auth.keys import KeyStore, Principal, load_or_create_server_key
from outcrop.batch.service import BatchService, CreateBatchJob, may_access, record_denial
from outcrop.config import OutcropConfig
from outcrop.errors import AccessDeniedError
from outcrop.registry.service import Registry
from outcrop.store.db import Database
from outcrop.store.imports import ListFilter
from outcrop.store.schema import principals
from tests.batch.conftest import prompt_record, read_jsonl, running, wait_until, write_jsonl

MODEL = "arn:aws:bedrock:us-east-1:000000000000:imported-model/aaaaaaaaaaaa"
JOB = "arn:aws:bedrock:us-east-1:000000000000:model-invocation-job/jjjjjjjjjjjj"


def principal(pid: str = "p1", policy: dict | None = None, name: str = "alice") -> Principal:
    return Principal(pid, name, "OCKA", None, policy if policy is not None else policies.invoke_only(), 0.0)


@pytest.mark.parametrize(
    ("owner_id", "viewer", "visible"),
    [
        ("p1", None, True),  # auth off: everyone is the admin
        ("p1", principal("p1"), True),  # the creator
        ("p1", principal("p2"), False),  # another invoke-only key
        ("p1", principal("p2", policies.read_only()), False),  # bedrock:Get*/List* is not enough
        ("p1", principal("p2", policies.admin()), True),
        (None, principal("p2", policies.read_only()), False),  # watched-folder jobs: admins only
        (
            "p1",
            principal(
                "p2",
                {"Statement": [{"Effect": "Allow", "Action": policies.ALL_JOBS_ACTION, "Resource": JOB}]},
            ),
            True,
        ),
    ],
)
def test_a_job_is_visible_to_its_creator_and_to_admins(
    owner_id: str | None, viewer: Principal | None, visible: bool
) -> None:
    assert may_access(owner_id, JOB, viewer) is visible


def test_records_are_denied_when_the_creator_is_deleted_or_loses_the_model() -> None:
    assert record_denial("p1", principal("p1"), MODEL) is None
    deleted = record_denial("p1", None, MODEL)
    assert deleted is not None and "AccessDeniedException" in deleted and "deleted" in deleted
    narrowed = principal(
        "p1",
        {
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "bedrock:*", "Resource": MODEL},
            ]
        },
    )
    message = record_denial("p1", narrowed, MODEL)
    assert message is not None
    assert "not authorized to perform: bedrock:InvokeModel on resource: " + MODEL in message


def _keys(config: OutcropConfig) -> tuple[Database, KeyStore]:
    db = Database(config.database_url)
    db.migrate()
    return db, KeyStore(db, load_or_create_server_key(config.server_key_path))


def _request(name: str, tmp_path: Path, model: str = "alpha") -> CreateBatchJob:
    path = write_jsonl(tmp_path / name / "in.jsonl", [prompt_record(i) for i in range(3)])
    return CreateBatchJob(
        job_name=name, model_id=model, input_uri=str(path), output_uri=str(tmp_path / name / "out")
    )


def test_a_key_denied_the_model_cannot_create_a_job_for_it(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    config = batch_config()
    db, keys = _keys(config)
    registry = Registry(config, db)
    service = BatchService(config, db, registry, keys)
    alpha = registry.model_arn(registry.get_model("alpha"))
    denied = keys.create(
        "denied",
        {
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "bedrock:*", "Resource": alpha},
            ]
        },
    ).principal
    with pytest.raises(AccessDeniedError, match=f"bedrock:InvokeModel on resource: {alpha}.*'alpha'"):
        service.create_job(_request("sneaky", tmp_path), owner=denied)
    only_alpha = keys.create("only-alpha", policies.invoke_only([alpha])).principal
    with pytest.raises(AccessDeniedError, match="imported-model/unknown"):  # whether it exists stays unsaid
        service.create_job(_request("probe", tmp_path, model="no-such-model"), owner=only_alpha)
    assert service.store.list_jobs(ListFilter()).items == []
    assert service.create_job(_request("allowed", tmp_path), owner=only_alpha).owner_id == only_alpha.id
    db.dispose()


@pytest.mark.anyio
async def test_records_of_a_creator_deleted_or_denied_after_create_fail_with_access_denied(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    config = batch_config()
    db, keys = _keys(config)
    service = BatchService(config, db, Registry(config, db), keys)
    kept = keys.create("kept", policies.invoke_only()).principal
    gone = keys.create("gone", policies.invoke_only()).principal
    narrowed = keys.create("narrowed", policies.invoke_only()).principal
    jobs = {
        p.name: service.create_job(_request(f"job-{p.name}", tmp_path), owner=p)
        for p in (kept, gone, narrowed)
    }
    assert {j.owner_id for j in jobs.values()} == {kept.id, gone.id, narrowed.id}
    keys.delete("gone")
    # An admin narrows the policy in the store: no model may be invoked any more.
    deny_all = {"Statement": [{"Effect": "Deny", "Action": "bedrock:*", "Resource": "*"}]}
    with db.begin() as conn:
        conn.execute(
            principals.update().where(principals.c.id == narrowed.id).values(policy=json.dumps(deny_all))
        )
    db.dispose()
    async with running(config) as runner_service:
        done = {name: await wait_until(runner_service, job.id) for name, job in jobs.items()}
    assert done["kept"].status.value == "Completed", done["kept"].message
    for name in ("gone", "narrowed"):
        job = done[name]
        assert job.status.value == "Failed"
        assert (job.success_records, job.error_records) == (0, 3)
        assert "AccessDeniedException" in (job.message or "")
        lines = read_jsonl(tmp_path / f"job-{name}" / "out" / job.id / "in.jsonl.out")
        assert [line["error"]["errorCode"] for line in lines] == [403, 403, 403]
        assert all("modelOutput" not in line for line in lines)
    assert "has been deleted" in (done["gone"].message or "")
    assert "not authorized to perform: bedrock:InvokeModel" in (done["narrowed"].message or "")
