"""The batch runner in-process, with null copies: validation, outputs, errors per record, slots, stop."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from outcrop.batch.service import CreateBatchJob
from outcrop.batch.store import BatchJob, BatchStore
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, NotFoundError
from outcrop.registry.service import Registry
from outcrop.store.db import Database
from outcrop.store.imports import new_id
from outcrop.store.schema import batch_jobs
from tests.batch.conftest import prompt_record, read_jsonl, running, wait_until, write_jsonl

pytestmark = pytest.mark.anyio


def _request(name: str, input_path: Path, output: Path, **kw: object) -> CreateBatchJob:
    return CreateBatchJob(
        job_name=name,
        model_id=str(kw.pop("model", "alpha")),
        input_uri=str(input_path),
        output_uri=str(output),
        **kw,
    )  # type: ignore[arg-type]


async def test_job_runs_every_record_and_writes_outputs_and_manifest(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    records = [prompt_record(i) for i in range(40)]
    records.append({"modelInput": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}})
    records.append({"recordId": "bad-shape", "modelInput": "not an object"})
    records.append({"recordId": "no-prompt", "modelInput": {"text": "neither prompt nor messages"}})
    write_jsonl(tmp_path / "in" / "part-a.jsonl", records[:20])
    write_jsonl(tmp_path / "in" / "part-b.jsonl", records[20:])
    async with running(batch_config()) as service:
        job = service.create_job(_request("job-1", tmp_path / "in", tmp_path / "out"))
        done = await wait_until(service, job.id)
    assert done.status.value == "Completed", done.message
    assert (done.total_records, done.processed_records) == (43, 43)
    assert (done.success_records, done.error_records) == (41, 2)
    folder = tmp_path / "out" / job.id
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json.out",
        "part-a.jsonl.out",
        "part-b.jsonl.out",
    ]
    lines = read_jsonl(folder / "part-a.jsonl.out") + read_jsonl(folder / "part-b.jsonl.out")
    assert len(lines) == 43
    by_id = {line["recordId"]: line for line in lines}
    assert len(by_id) == 43
    first = by_id["r00000"]
    assert first["modelInput"] == records[0]["modelInput"]
    assert first["modelOutput"]["generation"] == first["modelOutput"]["outputs"][0]["text"]
    assert "choices" in first["modelOutput"]
    chat = next(line for line in lines if "messages" in (line["modelInput"] or {}))
    assert len(chat["recordId"]) == 11 and chat["modelOutput"]["object"] == "chat.completion"
    assert by_id["bad-shape"]["error"]["errorCode"] == 400
    assert "must be an object" in by_id["bad-shape"]["error"]["errorMessage"]
    assert by_id["no-prompt"]["error"]["errorCode"] == 400
    manifest = json.loads((folder / "manifest.json.out").read_text())
    assert manifest["totalRecordCount"] == 43
    assert manifest["processedRecordCount"] == 43
    assert manifest["successRecordCount"] == 41
    assert manifest["errorRecordCount"] == 2
    assert manifest["inputTokenCount"] > 0 and manifest["outputTokenCount"] > 0


async def test_unusable_input_fails_before_any_model_time_naming_file_and_lines(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    write_jsonl(
        tmp_path / "in" / "data.jsonl",
        [
            prompt_record(1),
            "{not json",
            "[1, 2]",
            {"recordId": "x"},
            prompt_record(1),
            {"recordId": 7, "modelInput": {}},
        ],
    )
    async with running(batch_config()) as service:
        job = service.create_job(_request("bad-input", tmp_path / "in" / "data.jsonl", tmp_path / "out"))
        done = await wait_until(service, job.id)
        assert service.runner.serving.copies() == []  # no copy was started: no model time used
    assert done.status.value == "Failed"
    message = done.message or ""
    assert "failed 5 check(s)" in message
    for expected in (
        "data.jsonl line 2: not valid JSON",
        "data.jsonl line 3: a JSON list",
        "data.jsonl line 4: no 'modelInput'",
        "data.jsonl line 5: recordId 'r00001' was already used at data.jsonl line 1",
        "data.jsonl line 6: recordId is 7",
    ):
        assert expected in message
    assert not (tmp_path / "out" / job.id).exists()


async def test_create_rejects_unknown_model_and_paths_outside_allowed_roots(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(1)])
    async with running(batch_config()) as service:
        with pytest.raises(NotFoundError, match="nosuch"):
            service.create_job(_request("j", tmp_path / "in.jsonl", tmp_path / "out", model="nosuch"))
        with pytest.raises(InvalidRequestError, match="outside the folders"):
            service.create_job(_request("j", Path("/etc/passwd"), tmp_path / "out"))
        with pytest.raises(InvalidRequestError, match="timeoutDurationInHours"):
            service.create_job(_request("j", tmp_path / "in.jsonl", tmp_path / "out", timeout_hours=2))
        with pytest.raises(InvalidRequestError, match="modelInvocationType"):
            service.create_job(
                _request("j", tmp_path / "in.jsonl", tmp_path / "out", invocation_type="Embed")
            )


async def test_jobs_beyond_the_slot_limit_wait_in_scheduled_and_start_fifo(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(i) for i in range(300)])
    config = batch_config("--delay-ms", "20", **{"batch.max_running_jobs_per_model": 1})
    async with running(config) as service:
        jobs = [
            service.create_job(_request(f"q{i}", tmp_path / "in.jsonl", tmp_path / "out")) for i in range(3)
        ]
        await wait_until(service, jobs[0].id, "InProgress")
        await wait_until(service, jobs[1].id, "Scheduled")
        assert service.store.get_job(jobs[2].id).status.value == "Scheduled"
        ends = []
        for job in jobs:
            done = await wait_until(service, job.id)
            assert done.status.value == "Completed"
            ends.append((done.started_at, done.ended_at))
    # One at a time, in submission order, each starting as soon as the previous one ended.
    for (_, prev_end), (next_start, _) in itertools.pairwise(ends):
        assert prev_end is not None and next_start is not None
        assert prev_end <= next_start < prev_end + 0.5


async def test_stop_finishes_in_flight_records_and_writes_a_manifest_of_what_ran(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(i) for i in range(400)])
    async with running(batch_config("--delay-ms", "50")) as service:
        job = service.create_job(_request("stopme", tmp_path / "in.jsonl", tmp_path / "out"))
        await wait_until(service, job.id, "InProgress")
        while service.store.get_job(job.id).processed_records < 20:
            await asyncio.sleep(0.05)
        assert service.stop_job(job.id).status.value == "Stopping"
        done = await wait_until(service, job.id)
    assert done.status.value == "Stopped"
    assert 20 <= done.processed_records < 400
    lines = read_jsonl(tmp_path / "out" / job.id / "in.jsonl.out")
    assert len(lines) == done.processed_records == len({line["recordId"] for line in lines})
    manifest = json.loads((tmp_path / "out" / job.id / "manifest.json.out").read_text())
    assert manifest["processedRecordCount"] == done.processed_records


async def test_stopping_a_scheduled_job_stops_it_at_once(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(i) for i in range(1000)])
    config = batch_config("--delay-ms", "50", **{"batch.max_running_jobs_per_model": 1})
    async with running(config) as service:
        first = service.create_job(_request("first", tmp_path / "in.jsonl", tmp_path / "out"))
        second = service.create_job(_request("second", tmp_path / "in.jsonl", tmp_path / "out"))
        await wait_until(service, second.id, "Scheduled")
        assert service.stop_job(second.id).status.value == "Stopped"
        service.stop_job(first.id)
        assert (await wait_until(service, first.id)).status.value == "Stopped"


async def test_converse_records_answer_as_converse(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    converse = {
        "messages": [{"role": "user", "content": [{"text": "hello"}]}],
        "inferenceConfig": {"maxTokens": 5},
    }
    write_jsonl(tmp_path / "in.jsonl", [{"recordId": "c1", "modelInput": converse}])
    async with running(batch_config()) as service:
        job = service.create_job(
            _request("conv", tmp_path / "in.jsonl", tmp_path / "out", invocation_type="Converse")
        )
        done = await wait_until(service, job.id)
        plain = service.create_job(
            _request(
                "conv-plain",
                tmp_path / "in.jsonl",
                tmp_path / "out",
                invocation_type="Converse",
                model="plain",
            )
        )
        plain_done = await wait_until(service, plain.id)
    assert done.status.value == "Completed"
    (line,) = read_jsonl(tmp_path / "out" / job.id / "in.jsonl.out")
    assert line["modelOutput"]["output"]["message"]["role"] == "assistant"
    assert line["modelOutput"]["stopReason"] in ("end_turn", "max_tokens")
    assert plain_done.status.value == "Failed"  # every record failed: no chat template
    (error,) = read_jsonl(tmp_path / "out" / plain.id / "in.jsonl.out")
    assert error["error"]["errorCode"] == 400 and "chat template" in error["error"]["errorMessage"]


async def test_hostile_lines_fail_the_job_with_their_line_numbers_instead_of_crashing_validation(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    path = tmp_path / "in" / "hostile.jsonl"
    write_jsonl(
        path, [prompt_record(1), "[" * 100_000 + "]" * 100_000, '{"modelInput": {"n": ' + "9" * 5000 + "}}"]
    )
    with open(path, "ab") as fh:
        fh.write(b'{"modelInput": {"prompt": "\xff\xfe"}}\n')
        fh.write(b'{"modelInput": {"prompt": "\\ud800"}}\n')
    async with running(batch_config()) as service:
        job = service.create_job(_request("hostile", path, tmp_path / "out"))
        done = await wait_until(service, job.id)
    assert done.status.value == "Failed", done.message
    message = done.message or ""
    assert "failed 4 check(s)" in message
    for expected in (
        "hostile.jsonl line 2: the JSON nests 100,000 levels deep; the limit is 64",
        "hostile.jsonl line 3: not usable JSON (a number with more than 4,300 digits",
        "hostile.jsonl line 4: not UTF-8 (byte 0xff",
        "hostile.jsonl line 5: a \\u escape names a lone UTF-16 surrogate",
    ):
        assert expected in message


async def test_a_job_that_keeps_crashing_its_server_ends_failed_saying_how_often_and_where_to_look(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    config = batch_config(**{"batch.max_crashes": 2})
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(1)])
    db = Database(config.database_url)
    db.migrate()
    store = BatchStore(db)
    model = Registry(config, db).get_model("alpha")
    job, _ = store.create_job(
        BatchJob(
            id=new_id(),
            name="crashy",
            model_id="alpha",
            model_key=model.id,
            input_uri=str(tmp_path / "in.jsonl"),
            output_uri=str(tmp_path / "out"),
            crashes=1,
        )
    )
    # Its validator died holding it (for the second time: crashes=1 before this).
    assert store.claim_for_validation("dead-server", 30) == [job.id]
    with db.begin() as conn:
        conn.execute(batch_jobs.update().where(batch_jobs.c.id == job.id).values(heartbeat_at=0.5))
    db.dispose()
    async with running(config) as service:
        done = await wait_until(service, job.id)
    assert done.status.value == "Failed"
    assert done.crashes == 2
    assert "crashed its server 2 times in a row while Validating" in (done.message or "")
    assert f"job_id {job.id}" in (done.message or "")


async def test_a_record_with_a_wrong_parameter_fails_alone_naming_the_field(
    batch_config: Callable[..., OutcropConfig], tmp_path: Path
) -> None:
    hi = [{"role": "user", "content": [{"text": "hi"}]}]
    records = [
        {"recordId": "good", "modelInput": {"messages": hi, "inferenceConfig": {"maxTokens": 3}}},
        {"recordId": "abc", "modelInput": {"messages": hi, "inferenceConfig": {"maxTokens": "abc"}}},
        {"recordId": "hot", "modelInput": {"messages": hi, "inferenceConfig": {"temperature": "hot"}}},
        {"recordId": "list", "modelInput": {"messages": hi, "inferenceConfig": [1]}},
        {"recordId": "nan", "modelInput": {"messages": hi, "inferenceConfig": {"topP": float("nan")}}},
    ]
    write_jsonl(tmp_path / "in.jsonl", records)
    async with running(batch_config()) as service:
        job = service.create_job(
            _request("bad-params", tmp_path / "in.jsonl", tmp_path / "out", invocation_type="Converse")
        )
        done = await wait_until(service, job.id)
    assert done.status.value == "Completed", done.message  # PartiallyCompleted is for timeouts
    assert (done.success_records, done.error_records) == (1, 4)
    by_id = {line["recordId"]: line for line in read_jsonl(tmp_path / "out" / job.id / "in.jsonl.out")}
    assert "modelOutput" in by_id["good"]
    for record_id, field in [
        ("abc", "inferenceConfig.maxTokens"),
        ("hot", "inferenceConfig.temperature"),
        ("list", "inferenceConfig"),
        ("nan", "inferenceConfig.topP"),
    ]:
        error = by_id[record_id]["error"]
        assert error["errorCode"] == 400 and f"'{field}'" in error["errorMessage"]
