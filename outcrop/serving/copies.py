"""Model copies: the lifecycle status enum and the router's record of each copy."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outcrop.cluster.launchers import LaunchedCopy
    from outcrop.serving.copyclient import CopyClient


class CopyStatus(enum.StrEnum):
    """Where a copy is in its life. Starting -> Ready -> Draining -> Stopped; Failed from anywhere.

    ``str(status)`` is the display name (``"Ready"``), as the admin API and ``outcrop copies`` show it.
    """

    STARTING = "Starting"  # launched (or waiting for room); /health has not answered 200 yet
    READY = "Ready"  # healthy; the router sends it requests
    DRAINING = "Draining"  # no new requests; finishing in-flight ones before it is stopped
    STOPPED = "Stopped"  # exited after Outcrop asked it to stop (terminal)
    FAILED = "Failed"  # crashed, failed to load, or stopped answering health checks (terminal)

    def is_terminal(self) -> bool:
        return self in (CopyStatus.STOPPED, CopyStatus.FAILED)

    def is_live(self) -> bool:
        """Counts as capacity: ready now or about to be."""
        return self in (CopyStatus.STARTING, CopyStatus.READY)

    def can_become(self, target: CopyStatus) -> bool:
        return target in _TRANSITIONS[self]


_TRANSITIONS: dict[CopyStatus, frozenset[CopyStatus]] = {
    CopyStatus.STARTING: frozenset({CopyStatus.READY, CopyStatus.DRAINING, CopyStatus.FAILED}),
    CopyStatus.READY: frozenset({CopyStatus.DRAINING, CopyStatus.FAILED}),
    CopyStatus.DRAINING: frozenset({CopyStatus.STOPPED, CopyStatus.FAILED}),
    CopyStatus.STOPPED: frozenset(),
    CopyStatus.FAILED: frozenset(),
}


@dataclass(frozen=True)
class CopyInfo:
    """A snapshot of one copy, for ``outcrop copies``, the admin API and metrics."""

    copy_id: str
    model_id: str
    model_name: str
    state: CopyStatus
    url: str | None
    in_flight: int
    started_at: float  # wall-clock seconds (time.time())
    ready_at: float | None
    last_used_at: float | None
    pid: int | None
    failure: str | None = None


@dataclass(eq=False)
class ModelCopy:
    """The serving layer's live record of one copy (mutated only on the event loop).

    The fleet (:mod:`outcrop.serving.fleet`) creates it and alone changes its lifecycle fields
    (``status``, ``launched``, ``client``, ``failure``, ``suspect``); the router alone changes
    its load fields (``in_flight``, ``last_used_at`` / ``last_used_mono``).
    """

    copy_id: str
    model_id: str
    model_name: str
    memory_estimate_bytes: int
    status: CopyStatus = CopyStatus.STARTING
    launched: LaunchedCopy | None = None
    client: CopyClient | None = None
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    last_used_at: float | None = None
    # monotonic twins of the wall-clock times above, for the autoscaler
    started_mono: float = field(default_factory=time.monotonic)
    ready_mono: float | None = None
    last_used_mono: float | None = None
    failure: str | None = None
    cold_start: bool = False
    suspect: bool = False  # a request lost its connection: check the process at once
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # stop requested, or look at health now

    @property
    def url(self) -> str | None:
        return self.launched.url if self.launched else None

    def transition(self, target: CopyStatus) -> bool:
        """Move to ``target`` if the lifecycle allows it; False (and no change) otherwise."""
        if self.status is target or not self.status.can_become(target):
            return False
        self.status = target
        if target is CopyStatus.READY:
            self.ready_at, self.ready_mono = time.time(), time.monotonic()
            self.last_used_at, self.last_used_mono = self.ready_at, self.ready_mono
        return True

    def info(self) -> CopyInfo:
        return CopyInfo(
            copy_id=self.copy_id,
            model_id=self.model_id,
            model_name=self.model_name,
            state=self.status,
            url=self.url,
            in_flight=self.in_flight,
            started_at=self.started_at,
            ready_at=self.ready_at,
            last_used_at=self.last_used_at,
            pid=self.launched.pid if self.launched else None,
            failure=self.failure,
        )
