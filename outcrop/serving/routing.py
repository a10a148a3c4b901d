"""Routing: the least-outstanding-requests choice (pure) and each model's bounded wait queue.

Batch records yield to online requests at three places:

* **Copy slots** (:func:`slot_cap`): a batch record takes a copy slot only while at least
  ``batch.online_reserved_slots_per_copy`` of the copy's ``max_concurrency_per_copy`` stay
  free, so an online request never waits for a slot that batch records hold.
* **The wait queue** (:class:`WaitQueue`): online waiters are served first.
* **Inside the copy** (:func:`with_priority`): the request body carries the class as vLLM's
  integer ``priority`` field (lower is sooner); Outcrop's worker, and vLLM started with
  ``--scheduling-policy priority``, then run online sequences ahead of batch ones. The
  router sets the field from the route's class and drops a caller's own value, so an
  outside client cannot jump ahead of other online traffic.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from outcrop.errors import WrongModelKindError
from outcrop.serving.copies import CopyStatus, ModelCopy
from outcrop.store.imports import ImportedModel


class Priority(enum.IntEnum):
    """Request classes; a lower value is served first, by the router and inside the copy.

    The value is what copies get in the body's ``priority`` field (vLLM's convention: an
    integer, lower sooner, 0 by default).
    """

    ONLINE = 0  # interactive API traffic (Bedrock runtime, OpenAI); the field is left out (0)
    BATCH = 10  # batch-job records: spare capacity only; yield slots, queue places and steps


def slot_cap(priority: Priority, max_concurrency_per_copy: int, online_reserved: int) -> int:
    """Requests of this class that may be in flight on one copy before it counts as full for them.

    Online requests may use every slot; batch records leave ``online_reserved`` free (but may
    always use one, so a job cannot stall on a copy whose cap is below the reserve).
    """
    if priority is Priority.ONLINE:
        return max_concurrency_per_copy
    return max(1, max_concurrency_per_copy - online_reserved)


def with_priority(body: dict[str, Any], priority: Priority) -> dict[str, Any]:
    """The copy's request body with the route's class as ``priority`` (a caller's own is dropped)."""
    out = {k: v for k, v in body.items() if k != "priority"}
    if priority is not Priority.ONLINE:
        out["priority"] = int(priority)
    return out


def copy_request(body: dict[str, Any], *, model: str, priority: Priority, stream: bool) -> dict[str, Any]:
    """The one rewrite of a request for a copy: the served model's name, the route's priority,
    and, when streaming, ``stream`` with usage in the last chunk (the gateway meters every stream;
    a caller that did not ask for usage has it filtered out by its route)."""
    out = with_priority({**body, "model": model}, priority)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    else:
        out.pop("stream", None)
        out.pop("stream_options", None)
    return out


# The copy path embedding requests take; every other path is text generation.
EMBEDDINGS_PATH = "/v1/embeddings"


def check_model_kind(model: ImportedModel, path: str) -> None:
    """Refuse a text-generation path on an embedding model and the reverse, before any copy starts."""
    wants_embeddings = path == EMBEDDINGS_PATH
    if model.is_embedding and not wants_embeddings:
        what = "chat completions" if path.endswith("chat/completions") else "text generation"
        raise WrongModelKindError(model.name, "embedding", what)
    if wants_embeddings and not model.is_embedding:
        raise WrongModelKindError(model.name, model.kind, "embeddings requests")


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

    def has_waiter_at_or_before(self, priority: Priority) -> bool:
        """True when a request of this class or a more urgent one is already waiting (it goes first)."""
        for waiter in self.pending():
            return waiter.priority <= priority
        return False

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
