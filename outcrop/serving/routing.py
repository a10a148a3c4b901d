"""Routing: the least-outstanding-requests choice (pure) and each model's bounded wait queue."""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from outcrop.serving.copies import CopyStatus, ModelCopy


class Priority(enum.IntEnum):
    """Request classes; a lower value is served first when requests wait for a copy."""

    ONLINE = 0  # interactive API traffic (Bedrock runtime, OpenAI)
    BATCH = 1  # batch-job records: take a free slot only when no online request waits


def choose_copy(
    copies: Iterable[ModelCopy], cap: int, exclude: frozenset[str] = frozenset()
) -> ModelCopy | None:
    """The ready copy with the fewest requests in flight and a free slot (ties: least recently used)."""
    best: ModelCopy | None = None
    for c in copies:
        if c.status is not CopyStatus.READY or c.in_flight >= cap or c.copy_id in exclude:
            continue
        if best is None or (c.in_flight, c.last_used_mono or 0.0) < (
            best.in_flight,
            best.last_used_mono or 0.0,
        ):
            best = c
    return best


@dataclass(eq=False)
class Waiter:
    future: asyncio.Future[ModelCopy]
    priority: Priority
    exclude: frozenset[str] = frozenset()
    settled: bool = False  # served, failed or abandoned (counted out of the queue's depth)

    @property
    def waiting(self) -> bool:
        # A future can be done but unsettled: its task was cancelled and has not cleaned up yet.
        return not self.settled and not self.future.done()


@dataclass
class WaitQueue:
    """Requests waiting for a copy slot: FIFO within a priority, online before batch."""

    lanes: dict[Priority, collections.deque[Waiter]] = field(
        default_factory=lambda: {p: collections.deque() for p in Priority}
    )
    depth: int = 0  # waiters not yet served, failed or abandoned

    def push(self, waiter: Waiter) -> None:
        self.lanes[waiter.priority].append(waiter)
        self.depth += 1

    def _settle(self, waiter: Waiter) -> None:
        waiter.settled = True
        self.depth -= 1

    def abandon(self, waiter: Waiter) -> None:
        """The waiter gave up (timeout, cancel) before being served."""
        if not waiter.settled:
            waiter.future.cancel()
            self._settle(waiter)

    def pending(self) -> Iterator[Waiter]:
        """Waiters still waiting, in service order (lazily: dispatch stops at the first it cannot serve)."""
        for priority in sorted(self.lanes):
            lane = self.lanes[priority]
            while lane and lane[0].settled:
                lane.popleft()
            for waiter in lane:  # serve() and fail_all() settle waiters without changing the lane
                if waiter.waiting:
                    yield waiter

    def serve(self, waiter: Waiter, copy: ModelCopy) -> None:
        waiter.future.set_result(copy)
        self._settle(waiter)

    def fail_all(self, exc: BaseException) -> int:
        failed = 0
        for lane in self.lanes.values():
            for w in lane:
                if w.waiting:
                    w.future.set_exception(exc)
                    self._settle(w)
                    failed += 1
        return failed
