"""Job-slot accounting: which Scheduled jobs may start now. Pure, and unit-tested with tables.

Each model has a limit of running jobs (``batch.max_running_jobs_per_model``). A job holds a
slot while InProgress or Stopping; Scheduled jobs take free slots first in first out (by
submit time, then id), per model, so one model's queue never delays another's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from outcrop.batch.status import BatchJobStatus


@dataclass(frozen=True)
class SlotJob:
    """What slot accounting needs to know about a job."""

    id: str
    model_key: str  # the imported model's id (jobs naming it by name or ARN share slots)
    status: BatchJobStatus
    created_at: float
    expires_at: float = float("inf")  # a Scheduled job not started by then becomes Expired


def jobs_to_start(jobs: Iterable[SlotJob], limit_per_model: int) -> list[str]:
    """The ids of the Scheduled jobs to start now, in start order.

    Strict FIFO per model: a job still being validated keeps its place in the queue (it takes
    the free slot it will use), so a later job whose validation happened to finish first
    does not overtake it.
    """
    jobs = list(jobs)
    busy = Counter(j.model_key for j in jobs if j.status.holds_slot())
    queued = sorted((j for j in jobs if j.status in _QUEUED), key=lambda j: (j.created_at, j.id))
    start: list[str] = []
    for job in queued:
        if busy[job.model_key] < limit_per_model:
            busy[job.model_key] += 1
            if job.status is BatchJobStatus.SCHEDULED:
                start.append(job.id)
    return start


_QUEUED = (BatchJobStatus.SUBMITTED, BatchJobStatus.VALIDATING, BatchJobStatus.SCHEDULED)


def jobs_to_expire(jobs: Iterable[SlotJob], now: float) -> list[str]:
    """Scheduled jobs whose timeout passed before they could start."""
    return [j.id for j in jobs if j.status is BatchJobStatus.SCHEDULED and j.expires_at <= now]
