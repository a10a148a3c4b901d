"""The lifecycle of a batch inference job (Bedrock's ModelInvocationJobStatus).

    Submitted -> Validating -> Scheduled -> InProgress -> Completed | PartiallyCompleted | Failed
         \\            \\            \\            \\
          +------------+------------+-> Stopped    +-> Stopping -> Stopped
    Scheduled past its timeout -> Expired
"""

from __future__ import annotations

import enum


class BatchJobStatus(enum.StrEnum):
    SUBMITTED = "Submitted"  # created; waiting for a server to validate its input
    VALIDATING = "Validating"  # a server is checking the files and every line
    SCHEDULED = "Scheduled"  # valid; waiting for a job slot of its model (FIFO)
    IN_PROGRESS = "InProgress"  # holds a slot; records flow through the model's copies
    COMPLETED = "Completed"  # every record was processed (some may have error lines)
    PARTIALLY_COMPLETED = "PartiallyCompleted"  # the timeout ended it before every record was processed
    FAILED = "Failed"  # the input was unusable or the job could not run; ``message`` says why
    STOPPING = "Stopping"  # a user asked to stop; in-flight records finish, then Stopped
    STOPPED = "Stopped"  # stopped by a user; outputs and manifest hold what was processed
    EXPIRED = "Expired"  # stayed Scheduled past timeoutDurationInHours without starting

    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def holds_slot(self) -> bool:
        """Whether a job in this state counts against its model's running-jobs limit."""
        return self in (BatchJobStatus.IN_PROGRESS, BatchJobStatus.STOPPING)

    def can_become(self, other: BatchJobStatus) -> bool:
        return other in ALLOWED_TRANSITIONS[self]


_TERMINAL = frozenset(
    {
        BatchJobStatus.COMPLETED,
        BatchJobStatus.PARTIALLY_COMPLETED,
        BatchJobStatus.FAILED,
        BatchJobStatus.STOPPED,
        BatchJobStatus.EXPIRED,
    }
)

S = BatchJobStatus
ALLOWED_TRANSITIONS: dict[BatchJobStatus, frozenset[BatchJobStatus]] = {
    S.SUBMITTED: frozenset({S.VALIDATING, S.STOPPED, S.FAILED}),
    S.VALIDATING: frozenset({S.SCHEDULED, S.FAILED, S.STOPPED}),
    S.SCHEDULED: frozenset({S.IN_PROGRESS, S.EXPIRED, S.STOPPED, S.FAILED}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.PARTIALLY_COMPLETED, S.FAILED, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.COMPLETED: frozenset(),
    S.PARTIALLY_COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.STOPPED: frozenset(),
    S.EXPIRED: frozenset(),
}


def sources_of(target: BatchJobStatus) -> list[str]:
    """The statuses a job may move to ``target`` from, as values for a conditional UPDATE."""
    return [s.value for s, allowed in ALLOWED_TRANSITIONS.items() if target in allowed]
