"""Slot accounting is a pure function over the job table: tables of cases."""

from __future__ import annotations

import pytest

from outcrop.batch.slots import SlotJob, jobs_to_expire, jobs_to_start
from outcrop.batch.status import BatchJobStatus

S = BatchJobStatus


def job(
    ident: str, model: str = "m1", status: BatchJobStatus = S.SCHEDULED, created: float = 0.0, **kw: float
) -> SlotJob:
    return SlotJob(ident, model, status, created, **kw)


@pytest.mark.parametrize(
    ("jobs", "limit", "expected"),
    [
        pytest.param([], 10, [], id="empty table"),
        pytest.param([job("a"), job("b", created=1)], 10, ["a", "b"], id="free slots start everything"),
        pytest.param(
            [job("b", created=2), job("a", created=1), job("c", created=3)],
            2,
            ["a", "b"],
            id="fifo by submit time",
        ),
        pytest.param([job("b", created=1), job("a", created=1)], 1, ["a"], id="ties broken by id"),
        pytest.param(
            [job("r", status=S.IN_PROGRESS), job("a", created=1)], 1, [], id="running job holds the only slot"
        ),
        pytest.param(
            [job("s", status=S.STOPPING), job("a", created=1)], 1, [], id="stopping job still holds its slot"
        ),
        pytest.param(
            [job("r1", status=S.IN_PROGRESS), job("a", created=1), job("b", created=2)],
            2,
            ["a"],
            id="one slot left",
        ),
        pytest.param(
            [job("r", "m1", S.IN_PROGRESS), job("a", "m1", created=1), job("b", "m2", created=2)],
            1,
            ["b"],
            id="a full model does not block another model",
        ),
        pytest.param(
            [job("d", status=S.COMPLETED), job("f", status=S.FAILED), job("a", created=1)],
            1,
            ["a"],
            id="finished jobs free slots",
        ),
        pytest.param(
            [job("v", status=S.VALIDATING, created=1), job("a", created=2)],
            1,
            [],
            id="an earlier job still validating keeps its place",
        ),
        pytest.param(
            [job("u", status=S.SUBMITTED, created=1), job("a", created=2), job("b", created=3)],
            2,
            ["a"],
            id="an earlier job being validated takes one of the free slots",
        ),
        pytest.param(
            [job("a", created=1), job("v", status=S.VALIDATING, created=2)],
            1,
            ["a"],
            id="a later job being validated does not block an earlier one",
        ),
    ],
)
def test_jobs_to_start(jobs: list[SlotJob], limit: int, expected: list[str]) -> None:
    assert jobs_to_start(jobs, limit) == expected


@pytest.mark.parametrize(
    ("jobs", "now", "expected"),
    [
        pytest.param([job("a", expires_at=10.0)], 5.0, [], id="not yet"),
        pytest.param([job("a", expires_at=10.0)], 10.0, ["a"], id="at the deadline"),
        pytest.param(
            [job("a", status=S.IN_PROGRESS, expires_at=1.0)], 5.0, [], id="running jobs never expire"
        ),
        pytest.param(
            [job("a", expires_at=1.0), job("b", expires_at=9.0)], 5.0, ["a"], id="only the late one"
        ),
    ],
)
def test_jobs_to_expire(jobs: list[SlotJob], now: float, expected: list[str]) -> None:
    assert jobs_to_expire(jobs, now) == expected


def test_terminal_statuses_allow_no_transition_and_every_live_status_can_end() -> None:
    for status in S:
        if status.is_terminal():
            assert not any(status.can_become(other) for other in S)
        else:
            assert any(status.can_become(other) and other.is_terminal() for other in S), status


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        (S.SUBMITTED, S.VALIDATING, True),
        (S.VALIDATING, S.SCHEDULED, True),
        (S.SCHEDULED, S.IN_PROGRESS, True),
        (S.SCHEDULED, S.EXPIRED, True),
        (S.IN_PROGRESS, S.COMPLETED, True),
        (S.IN_PROGRESS, S.PARTIALLY_COMPLETED, True),
        (S.IN_PROGRESS, S.STOPPING, True),
        (S.IN_PROGRESS, S.STOPPED, False),
        (S.STOPPING, S.STOPPED, True),
        (S.STOPPING, S.COMPLETED, False),
        (S.SUBMITTED, S.IN_PROGRESS, False),
        (S.IN_PROGRESS, S.EXPIRED, False),
        (S.COMPLETED, S.IN_PROGRESS, False),
    ],
)
def test_allowed_transitions(source: BatchJobStatus, target: BatchJobStatus, allowed: bool) -> None:
    assert source.can_become(target) is allowed
