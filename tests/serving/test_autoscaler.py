"""The autoscaler's decisions, as tables of cases (pure: no processes, no clocks)."""

from __future__ import annotations

from typing import Any

import pytest

from outcrop.config import ModelServingSpec
from outcrop.serving.autoscaler import (
    ColdStart,
    CopyView,
    ModelLoad,
    ScaleAction,
    ScaleDecision,
    cold_start_action,
    copies_wanted,
    decide,
    fail_waiters_now,
    restart_backoff_seconds,
)
from outcrop.serving.copies import CopyStatus

NOW = 10_000.0
WINDOW = 300.0
R, S, D = CopyStatus.READY, CopyStatus.STARTING, CopyStatus.DRAINING


def spec(**overrides: Any) -> ModelServingSpec:
    values: dict[str, Any] = {
        "min_copies": 0,
        "max_copies": 4,
        "target_concurrency_per_copy": 8,
        "idle_seconds_before_scale_down": WINDOW,
    }
    values.update(overrides)
    return ModelServingSpec(**values)


def copy(
    n: int, status: CopyStatus = R, *, in_flight: int = 0, age: float = 3600.0, idle: float = 0.0
) -> CopyView:
    """Copy ``c{n}``, up for ``age`` seconds, last used ``idle`` seconds ago."""
    ready = NOW - age if status is not S else None
    return CopyView(
        f"c{n}", status, in_flight, started_at=NOW - age - 5, ready_at=ready, last_used_at=NOW - idle
    )


def load(in_flight: int = 0, queued: int = 0, peak: int = 0) -> ModelLoad:
    return ModelLoad("m", in_flight, queued, peak)


def summary(decisions: list[ScaleDecision]) -> list[str]:
    return [d.action.value if d.copy_id is None else f"{d.action.value} {d.copy_id}" for d in decisions]


CASES = [
    # (name, load, copies, spec overrides, expected)
    ("zero traffic, no copies: nothing", load(), [], {}, []),
    ("zero traffic keeps min_copies warm", load(), [], {"min_copies": 2}, ["start", "start"]),
    ("first request of a scaled-to-zero model starts one", load(queued=1), [], {}, ["start"]),
    ("demand within one copy: nothing", load(in_flight=8), [copy(1)], {}, []),
    ("demand above one copy's target starts a second", load(in_flight=8, queued=1), [copy(1)], {}, ["start"]),
    (
        "a burst starts several at once, up to max_copies",
        load(in_flight=16, queued=84),
        [copy(1)],
        {},
        ["start"] * 3,
    ),
    (
        "at max_copies nothing more starts",
        load(in_flight=64, queued=200),
        [copy(i) for i in range(4)],
        {},
        [],
    ),
    (
        "copies still starting count as capacity",
        load(in_flight=8, queued=7),
        [copy(1), copy(2, S)],
        {},
        [],
    ),
    (
        "draining copies do not count as capacity",
        load(in_flight=8, queued=2),
        [copy(1), copy(2, D)],
        {},
        ["start"],
    ),
    (
        "idle for the whole window: the last copy stops (scale to zero)",
        load(peak=0),
        [copy(1, idle=400)],
        {},
        ["stop c1"],
    ),
    ("never below min_copies", load(peak=0), [copy(1, idle=400)], {"min_copies": 1}, []),
    (
        "hysteresis: a peak within the window keeps the copies",
        load(in_flight=1, peak=16),
        [copy(1), copy(2)],
        {},
        [],
    ),
    (
        "hysteresis: a copy that came up recently is not stopped",
        load(peak=0),
        [copy(1, age=100)],
        {},
        [],
    ),
    (
        "after the window, one copy at a time, the idlest first",
        load(in_flight=1, peak=1),
        [copy(1, in_flight=1, idle=1), copy(2, idle=200), copy(3, idle=50)],
        {},
        ["stop c2"],
    ),
    (
        "no second stop while another copy drains",
        load(peak=0),
        [copy(1, idle=400), copy(2, D)],
        {},
        [],
    ),
    (
        "more copies than max_copies (config lowered): stop one",
        load(in_flight=2),
        [copy(1, in_flight=1), copy(2, in_flight=1), copy(3)],
        {"max_copies": 2},
        ["stop c3"],
    ),
    (
        "zero idle window scales down at once",
        load(peak=0),
        [copy(1, age=0, idle=0)],
        {"idle_seconds_before_scale_down": 0},
        ["stop c1"],
    ),
]


@pytest.mark.parametrize(
    ("name", "metrics", "copies", "overrides", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    name: str, metrics: ModelLoad, copies: list[CopyView], overrides: dict[str, Any], expected: list[str]
) -> None:
    assert summary(decide(metrics, copies, spec(**overrides), NOW)) == expected


def test_burst_then_quiet_scales_up_at_once_and_down_only_after_the_window() -> None:
    s = spec(max_copies=3)
    # t=0: a burst of 20 on one ready copy -> two more start
    assert summary(decide(load(in_flight=8, queued=12), [copy(1)], s, NOW)) == ["start", "start"]
    # t=+60: the burst is over, the new copies are ready; the window still holds the peak
    grown = [copy(1, idle=30), copy(2, age=55, idle=30), copy(3, age=55, idle=30)]
    assert decide(load(peak=20), grown, s, NOW) == []
    # t=+400: quiet for the window; one copy at a time
    quiet = [copy(1, age=900, idle=370), copy(2, age=395, idle=380), copy(3, age=395, idle=390)]
    assert summary(decide(load(peak=0), quiet, s, NOW)) == ["stop c3"]


def test_decisions_say_why() -> None:
    (decision,) = decide(load(in_flight=9), [copy(1)], spec(), NOW)
    assert decision.action is ScaleAction.START
    assert "demand 9" in decision.reason and "1 live" in decision.reason


@pytest.mark.parametrize(
    ("demand", "overrides", "wanted"),
    [(0, {}, 0), (1, {}, 1), (8, {}, 1), (9, {}, 2), (1000, {}, 4), (0, {"min_copies": 2}, 2)],
)
def test_copies_wanted(demand: int, overrides: dict[str, Any], wanted: int) -> None:
    assert copies_wanted(demand, spec(**overrides)) == wanted


def test_copy_status_classifies_itself() -> None:
    assert [s for s in CopyStatus if s.is_terminal()] == [CopyStatus.STOPPED, CopyStatus.FAILED]
    assert CopyStatus.STARTING.can_become(CopyStatus.READY)
    assert CopyStatus.READY.can_become(CopyStatus.DRAINING)
    assert not CopyStatus.READY.can_become(CopyStatus.STOPPED)  # a ready copy drains first
    assert not CopyStatus.STOPPED.can_become(CopyStatus.READY)
    assert all(s.can_become(CopyStatus.FAILED) for s in CopyStatus if not s.is_terminal())


BACKOFF_CASES = [
    # (name, consecutive failures, expected seconds) with initial 1 s, max 30 s
    ("no failure: no backoff", 0, 0.0),
    ("the first failure waits the initial backoff", 1, 1.0),
    ("each failure in a row doubles it", 4, 8.0),
    ("it never exceeds the maximum", 10, 30.0),
]


@pytest.mark.parametrize(("name", "failures", "expected"), BACKOFF_CASES, ids=[c[0] for c in BACKOFF_CASES])
def test_restart_backoff_seconds(name: str, failures: int, expected: float) -> None:
    assert restart_backoff_seconds(failures, 1.0, 30.0) == expected


FAIL_OR_WAIT_CASES = [
    # (name, was_ready, backoff, live copies, queued, fail now?) with requests holding up to 60 s
    ("a serving copy died, short backoff: the waiters wait for its replacement", True, 2.0, 0, 3, False),
    ("a serving copy died, backoff longer than a request holds: fail them", True, 120.0, 0, 3, True),
    ("a copy that never started failed: fail them with the reason", False, 0.2, 0, 3, True),
    ("another copy is still live: they wait for it", False, 0.2, 1, 3, False),
    ("nobody waits: nothing to fail", False, 0.2, 0, 0, False),
]


@pytest.mark.parametrize(
    ("name", "was_ready", "backoff", "live", "queued", "expected"),
    FAIL_OR_WAIT_CASES,
    ids=[c[0] for c in FAIL_OR_WAIT_CASES],
)
def test_fail_waiters_now(
    name: str, was_ready: bool, backoff: float, live: int, queued: int, expected: bool
) -> None:
    assert (
        fail_waiters_now(
            was_ready=was_ready,
            backoff_seconds=backoff,
            max_wait_seconds=60.0,
            live_copies=live,
            queued=queued,
        )
        is expected
    )


COLD_START_CASES = [
    # (name, live copies, backoff left, request holds, expected) with requests holding up to 60 s
    ("a live copy: no cold start", 1, 0.0, True, ColdStart.NONE),
    ("a live copy during a backoff: no cold start either", 1, 5.0, False, ColdStart.NONE),
    ("no copy, no backoff: start one", 0, 0.0, False, ColdStart.START),
    ("no copy, a short backoff, a holding request: wait it out", 0, 5.0, True, ColdStart.WAIT_OUT_BACKOFF),
    ("no copy, a backoff longer than the hold: refuse", 0, 90.0, True, ColdStart.REFUSE),
    ("no copy, any backoff, a fail-fast request: refuse", 0, 0.5, False, ColdStart.REFUSE),
]


@pytest.mark.parametrize(
    ("name", "live", "backoff_left", "hold", "expected"),
    COLD_START_CASES,
    ids=[c[0] for c in COLD_START_CASES],
)
def test_cold_start_action(
    name: str, live: int, backoff_left: float, hold: bool, expected: ColdStart
) -> None:
    assert (
        cold_start_action(
            live_copies=live, backoff_left_seconds=backoff_left, hold=hold, max_wait_seconds=60.0
        )
        is expected
    )
