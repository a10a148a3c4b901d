"""One model's share of the serving layer: its copies, wait queue, counters and demand history."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from outcrop.config import ModelServingSpec
from outcrop.serving.copies import CopyStatus, ModelCopy
from outcrop.serving.routing import WaitQueue
from outcrop.store.imports import ImportedModel


@dataclass(eq=False)
class ModelPool:
    """One model's copies, queue and counters."""

    model: ImportedModel
    spec: ModelServingSpec
    copies: dict[str, ModelCopy] = field(default_factory=dict)
    queue: WaitQueue = field(default_factory=WaitQueue)
    cold_starts: int = 0
    cold_start_seconds_sum: float = 0.0
    cold_start_seconds_last: float | None = None
    start_failures: int = 0  # copies that never became ready
    copy_failures: int = 0  # ready copies that died or stopped answering
    consecutive_failures: int = 0
    next_start_at: float = 0.0  # monotonic; restart backoff
    last_failure: str | None = None
    demand_samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    demand_bucket: int = 0  # peak demand since the last sample

    def live(self) -> list[ModelCopy]:
        return [c for c in self.copies.values() if c.status.is_live()]

    def ready(self) -> list[ModelCopy]:
        return [c for c in self.copies.values() if c.status is CopyStatus.READY]

    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.copies.values() if c.status.is_live())

    def note_demand(self) -> None:
        self.demand_bucket = max(self.demand_bucket, self.in_flight() + self.queue.depth)

    def peak_demand(self, now: float, window_seconds: float) -> int:
        while self.demand_samples and self.demand_samples[0][0] < now - window_seconds:
            self.demand_samples.popleft()
        return max([self.demand_bucket, *(d for _, d in self.demand_samples)])

    def sample(self, now: float) -> None:
        self.demand_samples.append((now, self.demand_bucket))
        self.demand_bucket = self.in_flight() + self.queue.depth
