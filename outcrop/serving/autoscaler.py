"""Where scaling is decided: pure functions from demand, copies and failures to decisions.

Every scaling rule of the serving layer lives here, with no clock, process or I/O, so each is
tested with a table of cases (``tests/serving/test_autoscaler.py``).
:class:`~outcrop.serving.controller.Controller` gathers the inputs and carries the decisions
out; nothing else decides when a copy starts or stops.

- :func:`decide`: the steady-state start/stop decisions for one model;
- :func:`cold_start_action`: what a request that finds no live copy does (start one, wait out
  a restart backoff, or fail now);
- :func:`restart_backoff_seconds`: how long after a failed copy the next may start;
- :func:`fail_waiters_now`: the fail-or-wait rule for the requests queued when a copy fails.

``decide(metrics, copies, spec, now)`` looks at one model:

- demand = requests in flight + requests queued; a copy takes ``target_concurrency_per_copy``;
- upscale at once when demand exceeds what the live (Ready + Starting) copies take, up to
  ``max_copies`` (copies still starting count: they will take load in seconds);
- downscale only when the *peak* demand over the last ``idle_seconds_before_scale_down``
  would fit in fewer copies, only after the newest copy has been up that long (hysteresis:
  a burst is not followed by a stop), one copy at a time (none while another drains), and
  never below ``min_copies`` (0 = scale to zero).

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


# ---------------------------------------------------------------------------- failures and cold starts


def restart_backoff_seconds(consecutive_failures: int, initial_seconds: float, max_seconds: float) -> float:
    """Seconds before the next copy of a model may start after ``consecutive_failures`` failures in a row.

    Doubles from ``initial_seconds`` with each failure, capped at ``max_seconds``; 0 with no failure.
    """
    if consecutive_failures <= 0:
        return 0.0
    return min(initial_seconds * 2 ** (consecutive_failures - 1), max_seconds)


def fail_waiters_now(
    *, was_ready: bool, backoff_seconds: float, max_wait_seconds: float, live_copies: int, queued: int
) -> bool:
    """Whether the requests queued for a model fail at once when one of its copies fails.

    Only when no live copy is left to serve them. When a copy that had been serving dies, the
    waiting requests outlast a short restart backoff (at most ``max_wait_seconds``, the longest
    a request holds through a cold start): the replacement starts when the backoff ends and
    serves them. A copy that never became ready (a likely persistent fault), or a long backoff,
    fails them now, with the reason.
    """
    if live_copies or not queued:
        return False
    keep_waiting = was_ready and backoff_seconds <= max_wait_seconds
    return not keep_waiting


class ColdStart(enum.Enum):
    """What a request does when its model has no ready copy it may use."""

    NONE = "none"  # a copy is live (starting or busy): just wait for a slot
    START = "start"  # no live copy: start one now (a cold start)
    WAIT_OUT_BACKOFF = "wait_out_backoff"  # a restart backoff runs, shorter than the request holds
    REFUSE = "refuse"  # a restart backoff runs and the request cannot wait it out: fail now


def cold_start_action(
    *, live_copies: int, backoff_left_seconds: float, hold: bool, max_wait_seconds: float
) -> ColdStart:
    """The cold-start rule for one request that finds no ready copy.

    ``hold`` is the request's cold-start policy (True: it waits up to ``max_wait_seconds`` for a
    copy). A request that holds outlasts a restart backoff shorter than its wait: the controller
    starts the copy when the backoff ends, and the request is served by it.
    """
    if live_copies:
        return ColdStart.NONE
    if backoff_left_seconds <= 0:
        return ColdStart.START
    if hold and backoff_left_seconds < max_wait_seconds:
        return ColdStart.WAIT_OUT_BACKOFF
    return ColdStart.REFUSE
