"""The autoscaler's decisions: a pure function from demand and copies to start/stop decisions.

``decide(metrics, copies, spec, now)`` looks at one model:

- demand = requests in flight + requests queued; a copy takes ``target_concurrency_per_copy``;
- upscale at once when demand exceeds what the live (Ready + Starting) copies take, up to
  ``max_copies`` (copies still starting count: they will take load in seconds);
- downscale only when the *peak* demand over the last ``idle_seconds_before_scale_down``
  would fit in fewer copies, only after the newest copy has been up that long (hysteresis:
  a burst is not followed by a stop), one copy at a time (none while another drains), and
  never below ``min_copies`` (0 = scale to zero).

:class:`~outcrop.serving.service.Serving` runs the executor loop that gathers the metrics
and carries the decisions out.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from outcrop.config import ModelServingSpec
from outcrop.serving.copies import CopyStatus


@dataclass(frozen=True)
class ModelLoad:
    """What the executor measured for one model."""

    model_id: str
    in_flight: int = 0  # requests a copy is answering now
    queued: int = 0  # requests waiting for a copy
    peak_demand_in_window: int = 0  # max of in_flight + queued over the last idle window


@dataclass(frozen=True)
class CopyView:
    """What the autoscaler needs to know about one copy (times are monotonic seconds)."""

    copy_id: str
    status: CopyStatus
    in_flight: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    last_used_at: float | None = None


class ScaleAction(enum.Enum):
    START = "start"  # start one more copy of the model
    STOP = "stop"  # drain and stop the named copy


@dataclass(frozen=True)
class ScaleDecision:
    action: ScaleAction
    model_id: str
    copy_id: str | None = None  # the copy to stop (None for START)
    reason: str = ""


def copies_wanted(demand: int, spec: ModelServingSpec) -> int:
    """Copies that take ``demand`` at the target concurrency, within [min_copies, max_copies]."""
    wanted = math.ceil(demand / spec.target_concurrency_per_copy) if demand > 0 else 0
    return max(spec.min_copies, min(spec.max_copies, wanted))


def decide(
    metrics: ModelLoad, copies: Sequence[CopyView], spec: ModelServingSpec, now: float
) -> list[ScaleDecision]:
    """Start or stop decisions for one model; ``now`` is monotonic seconds."""
    live = [c for c in copies if c.status.is_live()]
    demand = metrics.in_flight + metrics.queued
    wanted_now = copies_wanted(demand, spec)
    if len(live) < wanted_now:
        reason = (
            f"demand {demand} (in flight {metrics.in_flight} + queued {metrics.queued}) needs {wanted_now} "
            f"copies at {spec.target_concurrency_per_copy} per copy; {len(live)} live"
        )
        if wanted_now == spec.min_copies and demand <= len(live) * spec.target_concurrency_per_copy:
            reason = f"min_copies is {spec.min_copies}; {len(live)} live"
        return [ScaleDecision(ScaleAction.START, metrics.model_id, reason=reason)] * (wanted_now - len(live))

    if len(live) > spec.max_copies:
        victim = _least_useful(live)
        return [
            ScaleDecision(
                ScaleAction.STOP,
                metrics.model_id,
                victim.copy_id,
                f"{len(live)} live copies exceed max_copies {spec.max_copies}",
            )
        ]

    wanted_peak = copies_wanted(max(demand, metrics.peak_demand_in_window), spec)
    if len(live) <= wanted_peak:
        return []
    if any(c.status is CopyStatus.DRAINING for c in copies):
        return []  # one at a time: wait for the draining copy to go first
    newest = max((c.ready_at if c.ready_at is not None else c.started_at) for c in live)
    if now - newest < spec.idle_seconds_before_scale_down:
        return []  # a copy came up recently: let the idle window pass before stopping one
    victim = _least_useful(live)
    return [
        ScaleDecision(
            ScaleAction.STOP,
            metrics.model_id,
            victim.copy_id,
            f"peak demand {metrics.peak_demand_in_window} over the last "
            f"{spec.idle_seconds_before_scale_down:g} s needs {wanted_peak} copies; {len(live)} live",
        )
    ]


def _least_useful(live: Sequence[CopyView]) -> CopyView:
    """The copy to stop: a starting one first (it serves nobody), else the idlest ready one."""

    def key(c: CopyView) -> tuple[int, int, float]:
        starting_first = 0 if c.status is CopyStatus.STARTING else 1
        return (starting_first, c.in_flight, c.last_used_at if c.last_used_at is not None else c.started_at)

    return min(live, key=key)
