"""The in-memory ring buffer behind GET /outcrop/stats (outcrop/serving/stats.py), on a fake clock."""

from __future__ import annotations

from outcrop.serving.stats import SERIES, RecentStats, percentile


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(**overrides: object) -> tuple[RecentStats, Clock]:
    clock = Clock()
    stats = RecentStats(clock=clock, **overrides)  # type: ignore[arg-type]
    return stats, clock


def test_every_series_has_one_value_per_timestamp() -> None:
    stats, _ = make()
    out = stats.series(60)
    assert out["stepSeconds"] == 10
    assert len(out["timestamps"]) == 360
    assert set(out["series"]) == set(SERIES)
    assert all(len(values) == 360 for values in out["series"].values())
    assert out["timestamps"] == sorted(out["timestamps"])
    assert out["timestamps"][-1] == 1_000_000


def test_steps_before_the_gateway_started_are_null_and_counts_after_are_zero() -> None:
    stats, clock = make()
    clock.now += 30
    out = stats.series(1)
    assert len(out["timestamps"]) == 6
    assert out["series"]["requests"] == [None, None, 0, 0, 0, 0]
    assert out["series"]["latencyP50Ms"] == [None] * 6
    assert out["series"]["tokensPerSecond"][-1] == 0.0


def test_invocations_land_in_the_step_they_end_in() -> None:
    stats, clock = make()
    for ms in range(1, 101):
        stats.invocation(ms / 1000, output_tokens=5)
    stats.error()
    stats.throttle()
    clock.now += 10
    stats.invocation(0.5, output_tokens=20)
    stats.first_token(0.25)
    out = stats.series(1)["series"]
    assert out["requests"][-2:] == [102, 1]
    assert out["errors"][-2:] == [1, 0]
    assert out["throttles"][-2:] == [1, 0]
    assert out["latencyP50Ms"][-2:] == [50.0, 500.0]
    assert out["latencyP95Ms"][-2] == 95.0
    assert out["ttftP50Ms"][-2:] == [None, 250.0]
    assert out["tokensPerSecond"][-2:] == [50.0, 2.0]


def test_gauges_keep_the_most_seen_in_a_step_and_models_get_a_series_each() -> None:
    stats, clock = make()
    stats.sample(3, {"a": 1})
    stats.sample(1, {"a": 2, "b": 1})
    clock.now += 10
    out = stats.series(1)
    assert out["series"]["queueDepth"][-2:] == [3, None]
    assert out["copies"] == {"a": [None, None, None, None, 2, None], "b": [None, None, None, None, 1, None]}


def test_the_ring_forgets_what_is_older_than_its_capacity() -> None:
    stats, clock = make(capacity_steps=6)
    stats.invocation(0.1, output_tokens=1)
    clock.now += 60  # six steps later the slot is reused
    stats.invocation(0.2, output_tokens=1)
    out = stats.series(60)
    assert len(out["timestamps"]) == 6
    assert out["series"]["requests"] == [0, 0, 0, 0, 0, 1]


def test_samples_beyond_the_cap_are_a_reservoir() -> None:
    stats, _ = make()
    for _ in range(10_000):
        stats.invocation(0.010, output_tokens=0)
    out = stats.series(1)["series"]
    assert out["requests"][-1] == 10_000
    assert out["latencyP95Ms"][-1] == 10.0


def test_sampling_serving_counts_live_copies_and_sums_queues() -> None:
    stats, _ = make()
    stats.sample_serving(
        lambda: {
            "models": {
                "m": {"queue_depth": 2, "copies": {"Starting": 1, "Ready": 1, "Draining": 1}},
                "n": {"queue_depth": 3, "copies": {"Ready": 0}},
            }
        }
    )
    out = stats.series(1)
    assert out["series"]["queueDepth"][-1] == 5
    assert out["copies"]["m"][-1] == 2
    assert out["copies"]["n"][-1] == 0


def test_nearest_rank_percentile() -> None:
    assert percentile([1.0], 95) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 21))), 95) == 19.0
